"""Chapter 5's faults: a cut connection, a slow reader, a dead peer, and bad frames.

Each run is built like the chapter's others (``websocket.py``): a server from
``patterns/websocket.py`` started with ``served`` or measured with ``measure_cut``, stopped
whatever happens.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import time
from dataclasses import dataclass

import aiohttp
import pandas as pd

from ..lab import cancel_all, on_lab_loop
from ..patterns import websocket as ws
from ..record import Recorder
from .core import CutOutcome, Workload, measure_cut, served
from .websocket import websocket_server


# -- resuming after a cut ----------------------------------------------------------------------

@on_lab_loop(expected=lambda kw: kw.get("duration", 2.0) + 0.6)
async def run_websocket_cut(*, rate: float = 50.0, clients: int = 1, duration: float = 2.0,
                            cut_at: float = 0.8, retry: float = 0.2) -> CutOutcome:
    """Cut every connection ``cut_at`` s in; clients reconnect with ``?after=`` their last event."""
    def client(url: str, recorder: Recorder):
        return ws.follow(url, recorder, after=0, retry=retry)

    return await measure_cut("websocket", lambda feed: ws.handlers(ws.Hub(feed)), client,
                             Workload(rate, clients, duration), cut_at=cut_at, drain=retry + 0.3)


# -- W5: a slow reader, and the bound on its outbox --------------------------------------------

SMALL_BUFFER = 8192  # bytes: the kernel's socket buffers shrunk (SO_SNDBUF, SO_RCVBUF), so the backlog shows in a second
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
    peak: int                     # the most messages that waited at once (the outbox's own count, not a sample)
    dropped: int                  # messages the policy dropped, in all

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
    samples, talker_heard, read, pace = [], [], [0], [1.0 / read_rate]
    async with (served(websocket_server("ws-slow", hub, send_buffer=SMALL_BUFFER)) as server,
                aiohttp.ClientSession() as session):
        slow = await session.ws_connect(ws.ws_url(server.url, "/chat?name=slow"))
        slow.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
        while not hub.sockets:
            await asyncio.sleep(0.002)
        slow_socket = hub.sockets[0]  # closed sockets leave the hub: keep our own reference
        outbox = slow_socket.outbox

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
        await cancel_all([watcher, reader])
    return SlowReader(limit, policy, pd.DataFrame(samples, columns=["t", "outbox", "dropped"]), talked, read[0],
                      sum(m["from"] == "fast" for m in talker_heard), code, outbox.peak,
                      outbox.dropped)


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


@on_lab_loop(expected=lambda kw: 2 * (kw.get("ping_interval", 0.2) + kw.get("ping_timeout", 0.2)) + 0.3,
             tolerates=lambda kw: 0.03)
async def run_dead_peer(*, ping_interval: float = 0.2, ping_timeout: float = 0.2) -> DeadPeer:
    """Connect a frozen client and a healthy one to a server that pings every ``ping_interval`` s.

    The server finds the frozen one ``ping_interval + ping_timeout`` after it connected, a few ms late at
    most: its two timers run on the lab loop, so a wait for a core of 30 ms already spoils the measurement.
    """
    if not 0 < ping_timeout <= ping_interval <= 5:
        raise ValueError("need 0 < ping_timeout <= ping_interval <= 5 s (Tornado caps the timeout at the interval)")
    hub = ws.Hub()
    server = websocket_server("ws-ping", hub, websocket_ping_interval=ping_interval,
                              websocket_ping_timeout=ping_timeout)
    deadline = time.monotonic() + 3 * (ping_interval + ping_timeout) + 1.0
    async with served(server):
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
            await cancel_all([listening])
            await healthy.close()
            await frozen.close()
    return DeadPeer(ping_interval, ping_timeout, found, healthy_open)


# -- bad input: a clear close code, and the others carry on --------------------------------------

@on_lab_loop
async def misbehave(*, max_message_size: int = 65536) -> pd.DataFrame:
    """Send the server bad frames from one client while another keeps talking to it."""
    cases = {
        "a text frame that is not UTF-8": lambda c: c.send_frame(b"caf\xe9", aiohttp.WSMsgType.TEXT),
        f"a message over {max_message_size} bytes": lambda c: c.send_str("x" * (max_message_size + 1)),
        "a good message": lambda c: c.send_str("hello"),
    }
    rows = []
    async with served(websocket_server("ws-bad-input", websocket_max_message_size=max_message_size)) as server:
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
    return pd.DataFrame(rows)


# -- W3, bad input: the mask is not optional --------------------------------------------------

UNMASKED_WAIT = 3.0  # seconds to wait for the server to end the connection


@on_lab_loop
async def unmasked_frame(text: bytes = b"hello, unmasked") -> dict:
    """Send one text frame *without* a mask, as no browser would, over a raw socket; what comes back?

    RFC 6455 5.1: the server MUST close the connection, and MAY first send 1002. Returns the close code
    received (None if none came) and its reason, whether the text was echoed, and whether the server
    ended the connection cleanly (a FIN within ``UNMASKED_WAIT`` seconds: not a reset, not left open).
    """
    received, ended = b"", False
    async with served(websocket_server("ws-unmasked")) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(f"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Key: {base64.b64encode(b'sixteen byte key').decode()}\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        await reader.readuntil(b"\r\n\r\n")
        writer.write(bytes([0x81, len(text)]) + text)  # FIN + text; mask bit 0, no masking key
        deadline = time.monotonic() + UNMASKED_WAIT
        try:
            while chunk := await asyncio.wait_for(reader.read(4096), max(0.0, deadline - time.monotonic())):
                received += chunk
            ended = True  # the server's FIN
        except (ConnectionResetError, asyncio.TimeoutError):
            pass  # a reset, or a server that kept the connection open
        writer.close()
    code, reason = None, ""
    if len(received) >= 4 and received[0] == 0x88:  # a close frame: code, then reason
        code, reason = int.from_bytes(received[2:4], "big"), received[4:2 + received[1]].decode()
    return {"close code": code, "reason": reason, "echoed": text in received, "ended cleanly": ended}
