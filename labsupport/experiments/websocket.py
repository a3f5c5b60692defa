"""Chapter 5's experiments: the handshake, full duplex, frame costs, round trips, slow and dead peers."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import socket
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import tornado.web

from ..lab import lab, on_lab_loop
from ..patterns import websocket as ws
from ..record import Recorder
from ..results import Result
from ..wire import Link, WireMeter
from .core import LOG_BYTES, Workload, expected_seconds, measure
from .sse import CutOutcome

ACCEPT_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # fixed by RFC 6455


async def _serve(name: str, hub: ws.Hub, **settings):
    return await lab.serve(name, ws.handlers(hub), **settings)


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
    server = await _serve("ws-handshake", ws.Hub())
    meter = await WireMeter(server.port, capture=1024).start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(ws.ws_url(meter.url, "/echo")) as conn:
                await conn.send_str("hello")
                await conn.receive_str()
    finally:
        await meter.stop()
        await lab.stop_server(server.name)
    up, down = bytes(meter.connections[0].head_up), bytes(meter.connections[0].head_down)
    return Handshake(up[:up.index(b"\r\n\r\n") + 4].decode("latin-1"),
                     down[:down.index(b"\r\n\r\n") + 4].decode("latin-1"))


# -- the feed over a WebSocket, and resuming after a cut ---------------------------------------

def _feed_handlers(**hub_options):
    return lambda feed: ws.handlers(ws.Hub(feed, **hub_options))


@on_lab_loop(expected=expected_seconds)
async def run_websocket(*, rate: float = 5.0, clients: int = 1, duration: float = 2.0, latency: float = 0.0,
                        arrivals: str = "fixed", value: str = "ticker", seed: int | None = None) -> Result:
    """Clients follow the feed over one WebSocket each (``/feed`` in ``patterns/websocket.py``)."""
    workload = Workload(rate, clients, duration, latency, arrivals, value, seed)
    return await measure("websocket", _feed_handlers(), ws.follow, workload,
                         drain=2 * latency + 0.1 + clients / 2000, ready_first=True)


@on_lab_loop(expected=lambda kw: kw.get("duration", 2.0) + 0.6)
async def run_websocket_cut(*, rate: float = 50.0, clients: int = 1, duration: float = 2.0,
                            cut_at: float = 0.8, retry: float = 0.2) -> CutOutcome:
    """Cut every connection ``cut_at`` s in; clients reconnect with ``?after=`` their last event."""
    if not 0 < cut_at < duration:
        raise ValueError(f"cut_at must fall inside the run (0 to {duration} s), not {cut_at!r}.")
    recorders: list[Recorder] = []
    cut = {}

    def client(url: str, recorder: Recorder):
        recorders.append(recorder)
        return ws.follow(url, recorder, after=0, retry=retry)

    async def scenario(run) -> None:
        await asyncio.sleep(cut_at)
        cut["at"] = time.monotonic() - run.feed.started
        cut["n"] = await run.meter.cut_all()

    result = await measure("websocket", _feed_handlers(), client, Workload(rate, clients, duration),
                           drain=retry + 0.3, ready_first=True, scenario=scenario)
    seen = Counter((r.client, seq) for r in recorders for seq, _ in r.seen)
    return CutOutcome(result=result, cut_at=cut["at"], connections_cut=cut["n"],
                      reconnects=sum(len(r.requests) - 1 for r in recorders),
                      lost=result.summary()["missed"], duplicated=sum(n - 1 for n in seen.values()))


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

    def plot(self, seconds: float | None = None) -> go.Figure:
        """Two lanes, client and server; each message is a line from its sender to its receiver."""
        start = min(m.sent for m in self.messages)
        end = start + (seconds or self.duration)
        fig = go.Figure()
        for direction, colour, name in (("down", "#1f77b4", "server → client (game state)"),
                                        ("up", "#d62728", "client → server (player input)")):
            xs, ys = [], []
            for m in self.messages:
                if m.direction == direction and m.sent <= end:
                    lanes = ("server", "client") if direction == "down" else ("client", "server")
                    xs += [m.sent - start, m.received - start, None]
                    ys += [*lanes, None]
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name,
                                     line=dict(color=colour, width=1.5), marker=dict(size=4)))
        fig.update_layout(title=f"One connection, both directions at once ({self.crossings} crossings in flight)",
                          xaxis_title="seconds", yaxis=dict(categoryorder="array", categoryarray=["client", "server"]),
                          height=300, margin=dict(l=10, r=10, t=50, b=40))
        return fig


@on_lab_loop(expected=lambda kw: kw.get("duration", 1.0) + 0.3)
async def run_game(*, tick_rate: float = 30.0, inputs_per_s: float = 20.0, duration: float = 1.0,
                   latency: float = 0.02) -> Duplex:
    """A game loop over one WebSocket: the server ticks, the player sends inputs, neither waits."""
    if not (1 <= tick_rate <= 200 and 1 <= inputs_per_s <= 200):
        raise ValueError("tick_rate and inputs_per_s must be between 1 and 200 per second")
    hub = ws.Hub(tick_rate=tick_rate)
    server = await _serve("ws-game", hub)
    meter = await WireMeter(server.port, up=Link(latency=latency), down=Link(latency=latency),
                            log_bytes=LOG_BYTES).start()
    log: list[ws.Message] = []
    try:
        await ws.play(meter.url, inputs_per_s=inputs_per_s, duration=duration, log=log)
    finally:
        await meter.stop()
        await lab.stop_server(server.name)
    log += [ws.Message("up", n, sent, received) for n, sent, received in hub.inputs]
    return Duplex(log, len(meter.connections), duration, meter.connections)


# -- W2: a chat room --------------------------------------------------------------------------

@dataclass
class ChatRoom:
    """What each member of a chat room heard."""

    heard: dict[str, list[dict]]
    said: int

    @property
    def same_order(self) -> bool:
        orders = {tuple(m["seq"] for m in heard) for heard in self.heard.values()}
        return len(orders) == 1

    def table(self) -> pd.DataFrame:
        rows = [{"member": name, "heard": len(h), "from others": sum(m["from"] != name for m in h)}
                for name, h in self.heard.items()]
        return pd.DataFrame(rows)


@on_lab_loop(expected=lambda kw: kw.get("lines", 4) * kw.get("every", 0.05) + 0.5)
async def run_chat(*, members: int = 3, lines: int = 4, every: float = 0.05) -> ChatRoom:
    """``members`` people talk at once in one room; everyone should hear everything, in one order."""
    if not 2 <= members <= 50:
        raise ValueError("members must be between 2 and 50")
    hub = ws.Hub()
    server = await _serve("ws-chat", hub)
    names = [f"member{i}" for i in range(members)]
    heard = {name: [] for name in names}
    try:
        joined = []
        for name in names:  # everyone in the room before anyone speaks
            joined.append(asyncio.create_task(ws.chat(server.url, name, [f"hello from {name} #{k}" for k in range(lines)],
                                                      every=every, heard=heard[name], linger=0.3)))
            while len(hub.room) < len(joined):
                await asyncio.sleep(0.005)
        await asyncio.gather(*joined)
    finally:
        await lab.stop_server(server.name)
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
    hub = ws.Hub()
    server = await lab.serve("ws-frames", ws.handlers(hub) + [(r"/http-echo", _EchoRequest)])
    meter = await WireMeter(server.port).start()
    rows = []
    try:
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
    finally:
        await meter.stop()
        await lab.stop_server(server.name)
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

    def plot(self) -> go.Figure:
        fig = go.Figure([go.Histogram(x=np.array(v) * 1000, name=name, opacity=0.6, nbinsx=40)
                         for name, v in (("WebSocket", self.websocket), ("bare TCP floor", self.floor))])
        fig.update_layout(barmode="overlay", title="Round-trip time", xaxis_title="ms", yaxis_title="messages",
                          height=320, margin=dict(l=10, r=10, t=50, b=40))
        return fig


async def _tcp_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
    server = await _serve("ws-rtt", ws.Hub())
    echo = await asyncio.start_server(_tcp_echo, "127.0.0.1", 0)
    meters = [await WireMeter(port, up=Link(latency=latency), down=Link(latency=latency)).start()
              for port in (server.port, echo.sockets[0].getsockname()[1])]
    try:
        times = await ws.round_trips(meters[0].url, count, size)
        floor = await _floor(meters[1].port, count, size)
    finally:
        for meter in meters:
            await meter.stop()
        echo.close()
        await echo.wait_closed()
        await lab.stop_server(server.name)
    return RoundTrips(times, floor, latency)


# -- W5: a slow reader, and the bound on its outbox --------------------------------------------

SMALL_BUFFER = 8192  # bytes: the kernel's socket buffers shrunk, so the backlog shows in a second
# (aiohttp itself still holds up to 512 KiB of unread messages before it stops reading the socket)


@dataclass
class SlowReader:
    """A chat member that reads slowly while another talks fast: its outbox over time."""

    limit: int | None
    policy: str
    samples: pd.DataFrame         # t, outbox (messages waiting), dropped
    talked: int                   # messages the fast talker sent
    read: int                     # messages the slow member managed to read
    talker_heard: int             # of its own messages, how many the talker heard back
    close_code: int | None        # the close code the slow member got (None: still open)

    @property
    def peak(self) -> int:
        return int(self.samples["outbox"].max()) if len(self.samples) else 0

    @property
    def dropped(self) -> int:
        return int(self.samples["dropped"].max()) if len(self.samples) else 0

    def summary(self) -> dict:
        return {"limit": self.limit, "policy": self.policy, "talked": self.talked, "read": self.read,
                "peak outbox": self.peak, "dropped": self.dropped, "talker heard": self.talker_heard,
                "close code": self.close_code}


@on_lab_loop(expected=lambda kw: kw.get("duration", 1.0) + 0.5)
async def run_slow_reader(*, limit: int | None = 100, policy: str = "drop-oldest", talk_rate: float = 400.0,
                          read_rate: float = 50.0, size: int = 4000, duration: float = 1.0) -> SlowReader:
    """A fast talker and a slow reader share a chat room; watch the slow reader's outbox.

    ``limit=None`` shows what happens with no bound: the outbox (server memory) keeps growing.
    """
    if read_rate >= talk_rate:
        raise ValueError("the reader must be slower than the talker: read_rate < talk_rate")
    hub = ws.Hub(outbox_limit=limit, policy=policy, outbox_bytes=None if limit is None else ws.OUTBOX_BYTES)
    server = await _serve("ws-slow", hub)
    samples, talker_heard, read, pace = [], [], [0], [1.0 / read_rate]
    async with aiohttp.ClientSession() as session:
        try:
            slow = await session.ws_connect(ws.ws_url(server.url, "/chat?name=slow"))
            slow.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
            while not hub.sockets:
                await asyncio.sleep(0.002)
            slow_socket = hub.sockets[0]  # closed sockets leave the hub: keep our own reference
            outbox = slow_socket.outbox
            slow_socket.ws_connection.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)

            async def read_slowly() -> None:
                async for _ in slow:
                    read[0] += 1
                    await asyncio.sleep(pace[0])

            async def watch(start: float) -> None:
                while True:
                    samples.append((time.monotonic() - start, len(outbox.queue), outbox.dropped))
                    await asyncio.sleep(0.02)

            reader = asyncio.create_task(read_slowly())
            watcher = asyncio.create_task(watch(time.monotonic()))
            talked = int(talk_rate * duration)
            await ws.chat(server.url, "fast", ["y" * size] * talked, every=1.0 / talk_rate,
                          heard=talker_heard, linger=0.2)
            watcher.cancel()
            conn = slow_socket.ws_connection
            if conn is None or conn.is_closing():  # the server gave up on the reader: let it read the close
                pace[0] = 0.0
                await asyncio.wait([reader], timeout=2.0)
            code = slow.close_code if reader.done() else None  # None: the server kept it open
            reader.cancel()
            await asyncio.gather(watcher, reader, return_exceptions=True)
        finally:
            await lab.stop_server(server.name)
    return SlowReader(limit, policy, pd.DataFrame(samples, columns=["t", "outbox", "dropped"]), talked, read[0],
                      sum(m["from"] == "fast" for m in talker_heard), code)


# -- W5: a dead peer, found by ping/pong ---------------------------------------------------------

@dataclass(frozen=True)
class DeadPeer:
    """A client that froze (stopped reading, so it answers no ping) next to a healthy one."""

    ping_interval: float
    ping_timeout: float
    found_after: float | None   # seconds from connecting until the server gave up on the frozen peer
    healthy_still_open: bool

    @property
    def bound(self) -> float:
        """The latest the server can notice: a ping at most one interval away, then the timeout."""
        return self.ping_interval + self.ping_timeout


@on_lab_loop(expected=lambda kw: 2 * (kw.get("ping_interval", 0.2) + kw.get("ping_timeout", 0.2)) + 0.3)
async def run_dead_peer(*, ping_interval: float = 0.2, ping_timeout: float = 0.2) -> DeadPeer:
    """Connect a frozen client and a healthy one to a server that pings every ``ping_interval`` s."""
    if not 0 < ping_timeout <= ping_interval <= 5:
        raise ValueError("need 0 < ping_timeout <= ping_interval <= 5 s (Tornado caps the timeout at the interval)")
    hub = ws.Hub()
    server = await _serve("ws-ping", hub, websocket_ping_interval=ping_interval, websocket_ping_timeout=ping_timeout)
    deadline = time.monotonic() + 3 * (ping_interval + ping_timeout) + 1.0
    try:
        async with aiohttp.ClientSession() as session:
            frozen = await session.ws_connect(ws.ws_url(server.url, "/echo"))  # never reads: never answers a ping
            healthy = await session.ws_connect(ws.ws_url(server.url, "/echo"))
            listening = asyncio.create_task(healthy.receive())  # a reading client answers pings by itself
            while len(hub.sockets) < 2:
                await asyncio.sleep(0.002)
            frozen_socket, healthy_socket = hub.sockets
            found = None
            while found is None and time.monotonic() < deadline:
                conn = frozen_socket.ws_connection
                if conn is None or conn.is_closing():
                    found = time.monotonic() - frozen_socket.opened
                await asyncio.sleep(0.005)
            healthy_open = healthy_socket.closed is None and not healthy_socket.ws_connection.is_closing()
            listening.cancel()
            await asyncio.gather(listening, return_exceptions=True)
            await healthy.close()
            await frozen.close()
    finally:
        await lab.stop_server(server.name)
    return DeadPeer(ping_interval, ping_timeout, found, healthy_open)


# -- bad input: a clear close code, and the others carry on --------------------------------------

@on_lab_loop
async def misbehave(*, max_message_size: int = 65536) -> pd.DataFrame:
    """Send the server bad frames from one client while another keeps talking to it."""
    server = await _serve("ws-bad-input", ws.Hub(), websocket_max_message_size=max_message_size)
    cases = {
        "a text frame that is not UTF-8": lambda c: c.send_frame(b"caf\xe9", aiohttp.WSMsgType.TEXT),
        f"a message over {max_message_size} bytes": lambda c: c.send_str("x" * (max_message_size + 1)),
        "a good message": lambda c: c.send_str("hello"),
    }
    rows = []
    try:
        async with aiohttp.ClientSession() as session:
            good = await session.ws_connect(ws.ws_url(server.url, "/echo"))
            for case, send in cases.items():
                bad = await session.ws_connect(ws.ws_url(server.url, "/echo"))
                await send(bad)
                answer = await bad.receive(timeout=5)
                await bad.close()
                await good.send_str("still there?")
                rows.append({"sent": case, "answer": answer.type.name, "close code": bad.close_code,
                             "reason": answer.extra if answer.type is aiohttp.WSMsgType.CLOSE else "",
                             "other client still served": await good.receive_str(timeout=5) == "still there?"})
            await good.close()
    finally:
        await lab.stop_server(server.name)
    return pd.DataFrame(rows)


# -- W3: the mask is not optional ------------------------------------------------------------------

@on_lab_loop
async def unmasked_frame(text: bytes = b"hello, unmasked") -> dict:
    """Send one text frame *without* a mask, as no browser would, over a raw socket; what comes back?

    RFC 6455 5.1: the server must fail the connection. Returns the close code and reason received
    (None if none came), whether the text was echoed, and whether the connection ended without a reset.
    """
    server = await _serve("ws-unmasked", ws.Hub())
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(f"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Key: {base64.b64encode(b'sixteen byte key').decode()}\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        await reader.readuntil(b"\r\n\r\n")
        writer.write(bytes([0x81, len(text)]) + text)  # FIN + text; mask bit 0, no masking key
        try:
            received, clean = await asyncio.wait_for(reader.read(), timeout=5), True  # until the server ends it
        except ConnectionResetError:
            received, clean = b"", False
        writer.close()
    finally:
        await lab.stop_server(server.name)
    code, reason = None, ""
    if len(received) >= 4 and received[0] == 0x88:  # a close frame: code, then reason
        code, reason = int.from_bytes(received[2:4], "big"), received[4:2 + received[1]].decode()
    return {"close code": code, "reason": reason, "echoed": text in received, "ended without a reset": clean}
