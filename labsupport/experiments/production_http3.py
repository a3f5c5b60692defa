"""Chapter 8's HTTP/3 measurements: the handshake's round trips and bytes, polls and one event
stream over QUIC, through a UDP relay that adds a one-way delay (``patterns/http3.py``).

What loopback cannot show: it loses no packets (so QUIC's per-stream independence has nothing to
rescue) and the client's address never changes (so there is no migration to see).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass

from aioquic.asyncio import connect

from ..feed import Feed
from ..lab import on_lab_loop
from ..patterns import http3

SETTLE = 0.02


def round_trips(datagrams: list[tuple[float, str, int]], since: float, until: float, latency: float) -> int:
    """How many flights from the server reached the client between ``since`` and ``until``: runs of
    datagrams down, in the relay's log, with nothing up between them. Each is a round trip the client
    waited for, whatever the two ends spent computing; the relay passes a datagram on ``latency`` s
    after it logged it."""
    flights, down = 0, False
    for when, direction, _ in datagrams:
        if since <= when and when + latency <= until:
            flights += direction == "down" and not down
            down = direction == "down"
    return flights


@dataclass
class Http3Run:
    rtt: float                   # the relay's round trip: twice its one-way delay (s)
    handshake_s: float           # connect() until the handshake completed
    first_answer_s: float        # connect() until the first poll's answer
    handshake_round_trips: int   # flights the client waited for from the server until connected, on the wire
    first_answer_round_trips: int   # the same, until the first poll's answer
    first_datagram: int          # bytes of the client's first datagram (its Initial packet)
    handshake_up: int            # bytes up and down before the handshake completed
    handshake_down: int
    poll_up: float               # median bytes up and down per following poll (QUIC packets, encrypted)
    poll_down: float
    events: int                  # events the feed published while the stream was open
    delivered: int               # events that came down the HTTP/3 stream
    event_bytes_down: float      # bytes down per delivered event

    def summary(self) -> dict:
        return {"round trip (ms)": self.rtt * 1000, "handshake (ms)": round(self.handshake_s * 1000, 1),
                "first answer (ms)": round(self.first_answer_s * 1000, 1),
                "round trips waited: handshake / first answer":
                    f"{self.handshake_round_trips} / {self.first_answer_round_trips}",
                "client's first datagram (B)": self.first_datagram,
                "handshake bytes up / down": f"{self.handshake_up} / {self.handshake_down}",
                "bytes per following poll (up + down)": self.poll_up + self.poll_down,
                "events delivered": f"{self.delivered} of {self.events}",
                "bytes per event down": round(self.event_bytes_down, 1)}


# The handshake and the first answer are timed to 50 ms of their round trips: a longer wait for a core spoils them.
@on_lab_loop(expected=lambda kw: 1.5 + 6 * 2 * kw.get("latency", 0.05), tolerates=lambda kw: 0.05)
async def run_http3(*, latency: float = 0.05, polls: int = 4, rate: float = 20.0, duration: float = 0.5) -> Http3Run:
    """Connect over HTTP/3 through a relay adding ``latency`` s each way, poll ``polls`` times, then
    follow ``/events`` while the feed sends ``rate × duration`` events."""
    if not 0.005 <= latency <= 0.5 or not 2 <= polls <= 50:
        raise ValueError("latency must be 0.005 to 0.5 s (one way) and polls 2 to 50.")
    feed = Feed(rate)
    feed.publish()
    server = await http3.Http3Server(feed).start()
    meter = await http3.UdpMeter(server.port, latency=latency).start()
    try:
        started = time.monotonic()
        async with connect(http3.LOOPBACK, meter.port, configuration=http3.client_configuration(server.ca_pem),
                           create_protocol=http3.Http3Client) as client:
            connected = time.monotonic()
            marks = []
            for _ in range(polls):
                sent = time.monotonic()
                stream = client.get("/poll")
                await asyncio.wait_for(client.ended[stream].wait(), 10)
                marks.append((sent, time.monotonic()))
                await asyncio.sleep(2 * latency + SETTLE)   # the ACKs of this exchange belong to it
            first_answer = marks[0][1] - started
            exchanges = [(meter.bytes("up", a, b + 2 * latency + SETTLE), meter.bytes("down", a, b + 2 * latency + SETTLE))
                         for a, b in marks[1:]]
            stream = client.get("/events")
            for _ in range(1000):   # until the stream's headers are back: the server follows the feed from then on
                if stream in client.headers:
                    break
                await asyncio.sleep(0.01)
            before = meter.bytes("down")
            feed.start(duration)
            await feed.finished()
            await asyncio.sleep(2 * latency + 0.1)
            delivered = sum(1 for _, chunk in client.data[stream] for line in chunk.split(b"\n") if line.startswith(b"data:"))
            event_bytes = (meter.bytes("down") - before) / max(delivered, 1)
    finally:
        await meter.stop()
        await server.stop()
        await feed.stop()
    first = next(n for t, d, n in meter.datagrams if d == "up")
    return Http3Run(2 * latency, connected - started, first_answer,
                    round_trips(meter.datagrams, started, connected, latency),
                    round_trips(meter.datagrams, started, marks[0][1], latency), first,
                    meter.bytes("up", started, connected), meter.bytes("down", started, connected + latency),
                    statistics.median(u for u, _ in exchanges), statistics.median(d for _, d in exchanges),
                    len(feed.events) - 1, delivered, event_bytes)
