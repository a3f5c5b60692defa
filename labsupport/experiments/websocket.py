"""Chapter 5's experiments: the handshake, the feed, full duplex, a chat room, frame costs, round trips.

The faults (a cut, a slow reader, a dead peer, bad frames) are in ``websocket_faults.py``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from dataclasses import dataclass, field

import aiohttp
import numpy as np
import pandas as pd
import tornado.web

from ..lab import LabError, on_lab_loop
from ..patterns import websocket as ws
from ..pcap import save_capture
from ..results import Result
from .core import Routes, Workload, expected_seconds, measure, metered, served

ACCEPT_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # fixed by RFC 6455


def websocket_server(name: str, hub: ws.Hub | None = None, **settings) -> Routes:
    """A WebSocket server with its four rooms (``/feed``, ``/echo``, ``/chat``, ``/game``), not started yet;
    ``settings`` go to ``lab.serve``: Tornado's (pings, size limit) and ``send_buffer``."""
    return Routes(name, ws.handlers(hub or ws.Hub()), **settings)


def _percentiles(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


# -- W1: the Upgrade handshake ----------------------------------------------------------------

@dataclass(frozen=True)
class Handshake:
    """The first bytes each way, and the accept value the client checks."""

    request: str
    response: str

    def header(self, text: str, name: str) -> str:
        found = re.search(rf"^{name}: *(.*?)\r$", text, re.I | re.M)
        return found.group(1) if found else ""

    @property
    def expected_accept(self) -> str:
        """base64(SHA-1(key + the RFC's GUID)): proof the server understood the upgrade."""
        key = self.header(self.request, "Sec-WebSocket-Key")
        return base64.b64encode(hashlib.sha1((key + ACCEPT_GUID).encode()).digest()).decode()


@on_lab_loop
async def handshake() -> Handshake:
    """Open one WebSocket to ``/echo`` through a wire meter, say hello, and return the handshake."""
    async with metered(websocket_server("ws-handshake"), capture=1024, log_bytes=0) as meter:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(ws.ws_url(meter.url, "/echo")) as conn:
                await conn.send_str("hello")
                await conn.receive_str()
    up, down = bytes(meter.connections[0].head_up), bytes(meter.connections[0].head_down)
    return Handshake(up[:up.index(b"\r\n\r\n") + 4].decode("latin-1"),
                     down[:down.index(b"\r\n\r\n") + 4].decode("latin-1"))


# -- the feed over a WebSocket --------------------------------------------------------------------

@on_lab_loop(expected=expected_seconds)
async def run_websocket(*, rate: float = 5.0, clients: int = 1, duration: float = 2.0, latency: float = 0.0,
                        arrivals: str = "fixed", value: str = "ticker", seed: int | None = None) -> Result:
    """Clients follow the feed over one WebSocket each (``/feed`` in ``patterns/websocket.py``)."""
    workload = Workload(rate, clients, duration, latency, arrivals, value, seed)
    return await measure("websocket", lambda feed: ws.handlers(ws.Hub(feed)), ws.follow, workload,
                         drain=2 * latency + 0.1 + clients / 2000, ready_first=True)


# -- W2: full duplex, a game loop -------------------------------------------------------------

@dataclass
class Duplex:
    """Messages both ways on one connection: ticks down, inputs up."""

    messages: list[ws.Message]
    connections: int
    duration: float
    wire: list = field(default_factory=list)  # the meter's connections, with their logs (for a ladder)

    def count(self, direction: str) -> int:
        return sum(m.direction == direction for m in self.messages)

    @property
    def crossings(self) -> int:
        """Pairs of messages in flight in opposite directions at the same moment."""
        up = [m for m in self.messages if m.direction == "up"]
        down = [m for m in self.messages if m.direction == "down"]
        return sum(u.sent < d.received and d.sent < u.received for u in up for d in down)

    def save_capture(self, path):
        """Write the game's connection to ``path`` as a pcapng file for Wireshark (see ``pcap.py``)."""
        return save_capture(path, self.wire, pattern="websocket game loop",
                            run=f"{self.duration:g} s, {self.count('down')} ticks down, {self.count('up')} inputs up")

    def table(self) -> pd.DataFrame:
        """One row per message: ``direction, n, sent, received`` (seconds); ``plots.duplex_lanes`` draws it."""
        return pd.DataFrame(self.messages, columns=["direction", "n", "sent", "received"])


@on_lab_loop(expected=lambda kw: kw.get("duration", 1.0) + 0.3)
async def run_game(*, tick_rate: float = 30.0, inputs_per_s: float = 20.0, duration: float = 1.0,
                   latency: float = 0.02) -> Duplex:
    """A game loop over one WebSocket: the server ticks, the player sends inputs, neither waits."""
    if not (1 <= tick_rate <= 200 and 1 <= inputs_per_s <= 200):
        raise ValueError("tick_rate and inputs_per_s must be between 1 and 200 per second")
    hub = ws.Hub(tick_rate=tick_rate)
    log: list[ws.Message] = []
    async with metered(websocket_server("ws-game", hub), latency, capture=0) as meter:
        await ws.play(meter.url, inputs_per_s=inputs_per_s, duration=duration, log=log)
    log += [ws.Message("up", n, sent, received) for n, sent, received in hub.inputs]
    return Duplex(log, len(meter.connections), duration, meter.connections)


# -- W2: a chat room --------------------------------------------------------------------------

@dataclass
class ChatRoom:
    """What each member of a chat room heard."""

    heard: dict[str, list[dict]]
    said: int

    @property
    def orders(self) -> int:
        """How many different orders the members heard the lines in (1: one conversation for all)."""
        return len({tuple(m["seq"] for m in heard) for heard in self.heard.values()})

    def table(self) -> pd.DataFrame:
        rows = [{"member": name, "heard": len(h), "from others": sum(m["from"] != name for m in h)}
                for name, h in self.heard.items()]
        return pd.DataFrame(rows)


JOIN_TIMEOUT = 10.0


async def _room_filled(hub: ws.Hub, members: int) -> None:
    while len(hub.room) < members:
        await asyncio.sleep(0.005)


@on_lab_loop(expected=lambda kw: kw.get("lines", 4) * kw.get("every", 0.05) + 0.5)
async def run_chat(*, members: int = 3, lines: int = 4, every: float = 0.05) -> ChatRoom:
    """``members`` people talk at once in one room; everyone should hear everything, in one order."""
    if not 2 <= members <= 50:
        raise ValueError("members must be between 2 and 50")
    hub = ws.Hub()
    names = [f"member{i}" for i in range(members)]
    heard = {name: [] for name in names}
    async with served(websocket_server("ws-chat", hub)) as server:
        everyone_in = asyncio.Event()  # no one speaks before the last member is in the room
        joined = [asyncio.create_task(ws.chat(server.url, name, [f"hello from {name} #{k}" for k in range(lines)],
                                              every=every, heard=heard[name], begin=everyone_in,
                                              linger=5.0, until=members * lines))
                  for name in names]
        try:
            await asyncio.wait_for(_room_filled(hub, members), JOIN_TIMEOUT)
        except asyncio.TimeoutError:
            for member in joined:
                member.cancel()
            raise LabError(f"Only {len(hub.room)} of {members} members joined the chat within {JOIN_TIMEOUT:.0f} s: "
                           "the lab is very busy; run it again with fewer members.") from None
        everyone_in.set()
        await asyncio.gather(*joined)
    return ChatRoom(heard, members * lines)


# -- W3: frame overhead against an HTTP request per message ------------------------------------

class _EchoRequest(tornado.web.RequestHandler):
    """An HTTP request per message: POST the message, the answer carries it back."""

    def post(self) -> None:
        self.set_header("Content-Type", "application/octet-stream")
        self.write(self.request.body)


def frame_header(size: int, masked: bool) -> int:
    """RFC 6455: 2 bytes, +2 or +8 for the length beyond 125 or 65535 bytes, +4 mask from clients."""
    extra = 0 if size < 126 else 2 if size < 65536 else 8
    return 2 + extra + (4 if masked else 0)


@on_lab_loop(expected=lambda kw: 1.5)
async def frame_overhead(*, sizes: tuple[int, ...] = (16, 1000, 70000), count: int = 20) -> pd.DataFrame:
    """Bytes on the wire per message beyond the payload: WebSocket frames vs an HTTP request each.

    Each message goes up and comes back (echo), so both directions carry the same payload.
    """
    rows = []
    routes = Routes("ws-frames", ws.handlers(ws.Hub()) + [(r"/http-echo", _EchoRequest)])
    async with metered(routes, capture=0, log_bytes=0) as meter:
        async with aiohttp.ClientSession() as session:
            for size in sizes:
                payload = "x" * size
                async with session.ws_connect(ws.ws_url(meter.url, "/echo"), max_msg_size=0) as conn:
                    c = meter.connections[-1]
                    up0, down0 = c.bytes_up, c.bytes_down  # after the handshake
                    for _ in range(count):
                        await conn.send_str(payload)
                        await conn.receive_str()
                    ws_up, ws_down = (c.bytes_up - up0) / count - size, (c.bytes_down - down0) / count - size
                before = meter.counts()
                for _ in range(count):
                    async with session.post(f"{meter.url}/http-echo", data=payload.encode()) as response:
                        await response.read()
                after = meter.counts()
                rows.append({
                    "payload bytes": size,
                    "WebSocket up (client→server)": ws_up, "theory up": frame_header(size, masked=True),
                    "WebSocket down": ws_down, "theory down": frame_header(size, masked=False),
                    "HTTP request (up)": (after.bytes_up - before.bytes_up) / count - size,
                    "HTTP response (down)": (after.bytes_down - before.bytes_down) / count - size,
                })
    return pd.DataFrame(rows)


# -- W4: round-trip time against the loopback floor -------------------------------------------

@dataclass
class RoundTrips:
    """Round-trip times (s) over a WebSocket and over a bare TCP echo, through the same meter."""

    websocket: list[float]
    floor: list[float]
    latency: float

    def summary(self) -> pd.DataFrame:
        return pd.DataFrame([{"path": "WebSocket echo", **_percentiles(self.websocket)},
                             {"path": "bare TCP echo (floor)", **_percentiles(self.floor)}]).round(3)

    def table(self) -> pd.DataFrame:
        """One row per round trip: ``path, ms``; ``plots.round_trip_histogram`` draws it."""
        return pd.DataFrame([{"path": path, "ms": 1000 * t}
                             for path, times in (("WebSocket", self.websocket), ("bare TCP floor", self.floor))
                             for t in times])


class _TcpEcho:
    """A bare TCP echo server on the lab loop, as a backend for ``metered``: the floor of a round trip."""

    async def start(self) -> "_TcpEcho":
        self.server = await asyncio.start_server(self._echo, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()


async def _floor(port: int, count: int, size: int) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    times = []
    try:
        for _ in range(count):
            sent = time.monotonic()
            writer.write(b"x" * size)
            await reader.readexactly(size)
            times.append(time.monotonic() - sent)
    finally:
        writer.close()
    return times


@on_lab_loop(expected=lambda kw: kw.get("count", 200) * (2 * kw.get("latency", 0.0) + 0.001) * 2 + 0.3)
async def run_round_trips(*, count: int = 200, size: int = 32, latency: float = 0.0) -> RoundTrips:
    """``count`` echo round trips over a WebSocket, and over bare TCP: the floor nothing can beat."""
    if not 1 <= count <= 5000:
        raise ValueError("count must be between 1 and 5000")
    async with metered(websocket_server("ws-rtt"), latency, capture=0, log_bytes=0) as meter:
        times = await ws.round_trips(meter.url, count, size)
    async with metered(_TcpEcho(), latency, capture=0, log_bytes=0) as meter:
        floor = await _floor(meter.port, count, size)
    return RoundTrips(times, floor, latency)
