"""Chapter 8's HTTP/2 experiments: bytes per poll with HPACK, many streams on one connection,
the announced stream limit, and the pull/push crossover recomputed with HTTP/2's bytes.

Every run puts a wire meter between httpx and Hypercorn (``patterns/http2.py``), so HTTP/1.1
and HTTP/2 are counted by the same relay, byte for byte, against the same server.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pandas as pd
from hyperframe.frame import HeadersFrame, SettingsFrame

from ..feed import Feed
from ..lab import LabError, cancel_all, on_lab_loop
from ..patterns import http2
from ..record import Recorder
from ..results import Result, Rows
from ..wire import WireMeter
from .core import READY_TIMEOUT, all_caught_up, all_ready, raise_client_failure

CAPTURE = 1 << 16
SETTLE = 0.02   # control frames (SETTINGS ACK, WINDOW_UPDATE) may trail a response by a moment
CATCH_UP = 2.0  # the longest wait (s) for every stream to see the last event once the feed ends


@dataclass
class PollBytes(Rows):
    """Bytes on the wire for each of ``polls`` polls on one connection, HTTP/1.1 and HTTP/2."""

    rows: pd.DataFrame                # poll, protocol, bytes_up, bytes_down
    frames_up: list                   # HTTP/2, client to server: (frame, headers or None)
    frames_down: list                 # HTTP/2, server to client
    h1_request: str                   # one HTTP/1.1 request as sent

    def per_poll(self, protocol: str, which: str) -> float:
        """Bytes up + down of the first poll (``which="first"``) or the median following one."""
        rows = self.rows[self.rows["protocol"] == protocol]
        total = rows["bytes_up"] + rows["bytes_down"]
        return float(total.iloc[0] if which == "first" else total.iloc[1:].median())

    def header_blocks(self) -> pd.DataFrame:
        """Each HTTP/2 request's HPACK block: how many header fields, how many bytes."""
        rows = [{"stream": f.stream_id, "fields": len(h), "block_bytes": len(f.data)}
                for f, h in self.frames_up if isinstance(f, HeadersFrame)]
        return pd.DataFrame(rows)

    def summary(self) -> pd.DataFrame:
        return pd.DataFrame({p: {"first poll (bytes)": self.per_poll(p, "first"),
                                 "following polls (bytes, median)": self.per_poll(p, "following")}
                             for p in ("HTTP/1.1", "HTTP/2")}).T


async def _polls(base_url: str, meter: WireMeter, polls: int, use_http2: bool) -> list[tuple[int, int]]:
    marks = []
    async with http2.client(http2=use_http2) as http:
        for _ in range(polls):
            response = await http.get(f"{base_url}/poll")
            response.raise_for_status()
            await asyncio.sleep(SETTLE)
            marks.append((meter.counts().bytes_up, meter.counts().bytes_down))
    return marks


@on_lab_loop(expected=lambda kw: 1.0)
async def poll_bytes(*, polls: int = 6) -> PollBytes:
    """Poll ``/poll`` ``polls`` times on one kept-alive connection, over HTTP/1.1 then HTTP/2."""
    if not 2 <= polls <= 100:
        raise ValueError(f"polls must be between 2 and 100 (one first, at least one following), not {polls!r}.")
    feed = Feed(1.0)
    feed.publish()
    server = await http2.Http2Server(feed).start()
    rows, captured = [], {}
    try:
        for protocol, use_http2 in (("HTTP/1.1", False), ("HTTP/2", True)):
            meter = await WireMeter(server.port, capture=CAPTURE).start()
            try:
                marks = await _polls(meter.url, meter, polls, use_http2)
            finally:
                await meter.stop()
            if len(meter.connections) != 1:
                raise RuntimeError(f"{protocol}: expected one kept-alive connection, saw {len(meter.connections)}")
            captured[protocol] = meter.connections[0]
            previous = (0, 0)
            for i, (up, down) in enumerate(marks, 1):
                rows.append({"poll": i, "protocol": protocol, "bytes_up": up - previous[0],
                             "bytes_down": down - previous[1]})
                previous = (up, down)
    finally:
        await server.stop()
    h1 = bytes(captured["HTTP/1.1"].head_up)
    return PollBytes(pd.DataFrame(rows), http2.frames(bytes(captured["HTTP/2"].head_up)),
                     http2.frames(bytes(captured["HTTP/2"].head_down)),
                     h1[: h1.index(b"\r\n\r\n") + 4].decode("latin-1"))


# -- many event streams -----------------------------------------------------------------------

@dataclass
class Streams:
    """Event streams opened at once over one protocol: what the wire and the clients saw."""

    result: Result
    protocol: str
    streams: int
    max_streams: int                 # what the server was configured to allow per connection
    announced: int | None            # SETTINGS_MAX_CONCURRENT_STREAMS as decoded from the wire
    opened_in_time: int              # streams the server answered before the feed started
    setup_bytes: int                 # bytes on the wire before the first event: preface, settings, requests, heads
    event_bytes_down: float          # bytes down per delivered event, set-up left out

    def summary(self) -> dict:
        s = self.result.summary()
        return {"protocol": self.protocol, "streams": self.streams, "announced_limit": self.announced,
                "opened_at_once": self.opened_in_time, "connections": s["connections_opened"],
                "delivered": s["delivered"], "missed": s["missed"], "setup_bytes": self.setup_bytes,
                "bytes_per_event": round(self.event_bytes_down, 1), "latency_p50_ms": round(s["latency_p50_ms"], 2)}


def _answered(meter: WireMeter) -> int:
    """Streams the server has answered so far: response HEADERS frames down all HTTP/2 connections."""
    return sum(isinstance(frame, HeadersFrame) for conn in meter.connections
               for frame, _ in http2.frames(bytes(conn.head_down)))


async def _until_answered(meter: WireMeter, count: int, tasks: list[asyncio.Task]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while _answered(meter) < count:
        raise_client_failure(tasks)
        if time.monotonic() > deadline:
            raise LabError(f"The server answered only {_answered(meter)} of {count} streams within "
                           f"{READY_TIMEOUT:.0f} s. Try fewer streams.")
        await asyncio.sleep(0.02)


def _stall_timed(kw: dict) -> float:
    """A stall's delay on every stream is timed to 50 ms: a longer wait for a core at a stretch spoils it."""
    return 0.05 if kw.get("stall") else float("inf")


@on_lab_loop(expected=lambda kw: kw.get("duration", 1.0) + 1.5, tolerates=_stall_timed)
async def run_streams(*, streams: int = 100, use_http2: bool = True, rate: float = 10.0, duration: float = 1.0,
                      max_streams: int = http2.MAX_STREAMS, stall: float = 0.0) -> Streams:
    """Open ``streams`` SSE streams from one client, then stream ``rate * duration`` events.

    Over HTTP/2 they share connections of up to ``max_streams`` streams; over HTTP/1.1 each
    needs its own connection. Streams beyond the server's limit wait in the client until
    one ends. ``stall`` (s) holds back all bytes coming down the meter halfway through the
    run, as TCP does while it waits to retransmit one lost packet.
    """
    if not 1 <= streams <= 500:
        raise ValueError(f"streams must be between 1 and 500, not {streams!r}.")
    feed = Feed(rate)
    server = await http2.Http2Server(feed, max_streams=max_streams).start()
    meter = await WireMeter(server.port, capture=CAPTURE).start()
    recorders = [Recorder(i) for i in range(streams)]
    http = http2.client(http2=use_http2, streams=streams)
    tasks = [asyncio.create_task(http2.listen(http, meter.url, r)) for r in recorders]
    try:
        if use_http2:
            # Counted on the wire: the response HEADERS the server sent. (httpx hands a stream its
            # headers only when the connection next reads, which for idle streams is the first event.)
            await _until_answered(meter, min(streams, max_streams), tasks)
            await asyncio.sleep(0.2)  # streams over the limit would open now, if the client did not wait
            opened = _answered(meter)
        else:
            await all_ready(recorders, tasks)
            opened = sum(r.ready.is_set() for r in recorders)
        setup = meter.counts()
        feed.start(duration)
        if stall:
            await asyncio.sleep(duration / 2)
            meter.down.latency = stall   # every chunk from now on waits, whichever stream it belongs to
            await asyncio.sleep(stall)
            meter.down.latency = 0.0
        await feed.finished()
        await asyncio.sleep(0.1 + stall)
        # The last event may still be on its way to some of the open streams (a hundred of them,
        # parsed by httpx on a busy machine): wait for it too, up to a limit.
        await all_caught_up([r for r in recorders if r.seen], feed.last_seq, CATCH_UP)
        raise_client_failure(tasks)
    finally:
        await cancel_all(tasks)
        await http.aclose()
        counts = meter.counts()
        await meter.stop()
        await server.stop()
        await feed.stop()
    protocol = "HTTP/2" if use_http2 else "HTTP/1.1"
    result = Result.build(f"SSE over {protocol}", {"streams": streams, "clients": streams, "rate": rate},
                          feed.events, recorders, meter.connections, counts, feed.started, duration)
    announced = None
    if use_http2:
        for frame, _ in http2.frames(bytes(meter.connections[0].head_down)):
            if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
                announced = frame.settings.get(SettingsFrame.MAX_CONCURRENT_STREAMS)
                break
    delivered = max(result.summary()["delivered"], 1)
    return Streams(result, protocol, streams, max_streams, announced, opened, setup.bytes_total,
                   (counts.bytes_down - setup.bytes_down) / delivered)


# -- the crossover of chapter 7, with each protocol's measured bytes --------------------------

def crossover(polls: PollBytes, h1_stream: Streams, h2_stream: Streams, *, interval: float) -> pd.DataFrame:
    """Event rate below which push costs fewer bytes than polling every ``interval`` s, per protocol.

    Chapter 7's rule: push costs ``rate × event bytes`` per client and second, polling
    ``poll bytes / interval``; they cross at ``poll bytes / (event bytes × interval)``. Poll
    bytes are a following poll on a kept-alive connection (the first one's set-up is paid once).
    """
    rows = {}
    for protocol, stream in (("HTTP/1.1", h1_stream), ("HTTP/2", h2_stream)):
        poll = polls.per_poll(protocol, "following")
        rows[protocol] = {"bytes per poll": poll, "bytes per pushed event": stream.event_bytes_down,
                          "crossover (events/s)": poll / (stream.event_bytes_down * interval)}
    return pd.DataFrame(rows).T

