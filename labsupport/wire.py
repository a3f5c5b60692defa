"""The wire meter: a TCP relay in front of a server that counts and can impair the link.

Clients connect to the meter, the meter connects to the server, and every byte passes
through it. Because it works at the TCP level it knows nothing of HTTP, SSE or WebSockets,
so its numbers mean the same thing for every pattern in the course:

* connections opened, open now, and the most open at once;
* bytes up (client to server) and down (server to client), exact;
* the first bytes of each connection in each direction, to show a real request and response;
* optionally every chunk it relayed, with the time it read it and the time it passed it on
  (``log_bytes``), so a ladder diagram can show each message where and when it crossed;
* link impairments: added latency each way, jitter, a bandwidth cap, and cutting every open
  connection at once (a network blip).

Delays keep byte order: each chunk is delivered no earlier than the one before it.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import deque
from dataclasses import dataclass, field

LOOPBACK = "127.0.0.1"
READ_SIZE = 65536
MAX_IN_FLIGHT = 256 * 1024
BACKLOG = 1024  # room for hundreds of clients connecting in the same instant


@dataclass
class Link:
    """How the link behaves: one-way latency and jitter (seconds), bandwidth (bytes/s or None)."""

    latency: float = 0.0
    jitter: float = 0.0
    bandwidth: float | None = None

    def __post_init__(self) -> None:
        if self.latency < 0 or self.jitter < 0:
            raise ValueError("latency and jitter must be zero or positive (seconds, one way)")
        if self.bandwidth is not None and self.bandwidth <= 0:
            raise ValueError("bandwidth must be a positive number of bytes per second, or None")

    def delay(self, nbytes: int) -> float:
        extra = random.uniform(0, self.jitter) if self.jitter else 0.0
        serialise = nbytes / self.bandwidth if self.bandwidth else 0.0
        return self.latency + extra + serialise


@dataclass
class Connection:
    """One relayed connection: when it opened and closed, bytes each way, the first bytes seen."""

    id: int
    opened: float
    closed: float | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    head_up: bytearray = field(default_factory=bytearray)
    head_down: bytearray = field(default_factory=bytearray)
    cut: bool = False
    last_active: float = 0.0   # when a byte last passed, either way
    blackholed: bool = False   # bytes are read and dropped, and nobody is told
    chunks: list[tuple[str, float, float, bytes]] | None = None  # (direction, read, delivered, bytes)


@dataclass(frozen=True)
class WireCounts:
    """A snapshot of the meter's counters."""

    connections_opened: int
    open_now: int
    peak_open: int
    bytes_up: int
    bytes_down: int

    @property
    def bytes_total(self) -> int:
        return self.bytes_up + self.bytes_down


class WireMeter:
    """Relay from a local port to ``target_port`` on loopback, measuring everything that passes."""

    def __init__(self, target_port: int, *, capture: int = 0, up: Link | None = None,
                 down: Link | None = None, log_bytes: int = 0) -> None:
        self.target_port = target_port
        self.capture = capture
        self.log_bytes = log_bytes  # chunks kept, in bytes over all connections; 0 keeps none
        self.log_full_at: float | None = None  # when the log reached log_bytes and stopped
        self._logged = 0
        self.up = up or Link()
        self.down = down or Link()
        self.connections: list[Connection] = []
        self._live: dict[int, tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._server: asyncio.base_events.Server | None = None
        self.port: int | None = None
        self._peak = 0
        self._ids = itertools.count()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}"

    async def start(self) -> "WireMeter":
        self._server = await asyncio.start_server(self._relay, LOOPBACK, 0, backlog=BACKLOG)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    # -- counting -------------------------------------------------------------------------

    def counts(self) -> WireCounts:
        return WireCounts(
            connections_opened=len(self.connections),
            open_now=len(self._live),
            peak_open=self._peak,
            bytes_up=sum(c.bytes_up for c in self.connections),
            bytes_down=sum(c.bytes_down for c in self.connections),
        )

    # -- faults ---------------------------------------------------------------------------

    async def cut_all(self) -> int:
        """Drop every open connection at once, as a network blip would. Returns how many."""
        live = [c for c in self.connections if c.id in self._live]
        for conn in live:
            conn.cut = True
            self._abort(conn)
        await asyncio.sleep(0)
        return len(live)

    def cut(self, conn: Connection) -> None:
        """Drop one connection: both ends see it reset, as a proxy closing it would do."""
        if conn.id in self._live:
            conn.cut = True
            self._abort(conn)

    def blackhole(self, conn: Connection) -> None:
        """Forget one connection silently: its bytes are dropped and neither end is told (half-open)."""
        conn.blackholed = True

    # -- relaying -------------------------------------------------------------------------

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self._tasks.add(asyncio.current_task())
        conn = Connection(id=next(self._ids), opened=time.monotonic(), chunks=[] if self.log_bytes else None)
        conn.last_active = conn.opened
        self.connections.append(conn)
        try:
            server_r, server_w = await asyncio.open_connection(LOOPBACK, self.target_port)
        except OSError:
            client_w.transport.abort()
            conn.closed = time.monotonic()
            self._tasks.discard(asyncio.current_task())
            return
        self._live[conn.id] = (client_w, server_w)
        self._peak = max(self._peak, len(self._live))
        try:
            await asyncio.gather(
                self._pump(client_r, server_w, conn, "up", self.up),
                self._pump(server_r, client_w, conn, "down", self.down),
            )
        except asyncio.CancelledError:
            pass  # only stop() cancels a relay, and it has already dropped the connection
        finally:
            self._live.pop(conn.id, None)
            conn.closed = time.monotonic()
            for w in (client_w, server_w):
                w.close()  # flushes what is buffered; a cut connection was aborted already
            self._tasks.discard(asyncio.current_task())

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    conn: Connection, direction: str, link: Link) -> None:
        """Copy one direction, counting bytes and holding each chunk for the link's delay.

        Without a delay the copy is direct, so a slow reader pushes back on the sender just as
        it would without the meter. With one, chunks wait in order in ``in_flight`` and each
        is written at its due time, never before the chunk ahead of it; at most MAX_IN_FLIGHT
        bytes wait at once.
        """
        loop = asyncio.get_running_loop()
        head = conn.head_up if direction == "up" else conn.head_down
        log = conn.chunks  # None unless the meter keeps a log
        last_due = 0.0
        in_flight: deque[tuple[float, bytes]] = deque()  # (due time, chunk), oldest first
        pending = 0  # bytes in flight

        def deliver_due() -> None:
            nonlocal pending
            while in_flight and in_flight[0][0] <= loop.time():
                _, chunk = in_flight.popleft()
                pending -= len(chunk)
                if not writer.transport.is_closing():
                    writer.write(chunk)
            if in_flight:
                loop.call_at(in_flight[0][0], deliver_due)

        try:
            while chunk := await reader.read(READ_SIZE):
                if conn.blackholed:
                    continue
                conn.last_active = time.monotonic()
                if direction == "up":
                    conn.bytes_up += len(chunk)
                else:
                    conn.bytes_down += len(chunk)
                if len(head) < self.capture:
                    head.extend(chunk[: self.capture - len(head)])
                delay = link.delay(len(chunk))
                if delay or pending:
                    last_due = max(last_due, loop.time() + delay)
                    pending += len(chunk)
                    in_flight.append((last_due, chunk))
                    if log is not None:
                        self._keep(log, direction, loop.time(), last_due, chunk)
                    if len(in_flight) == 1:
                        loop.call_at(last_due, deliver_due)
                    while pending > MAX_IN_FLIGHT:
                        await asyncio.sleep(0.001)
                else:
                    writer.write(chunk)
                    if log is not None:
                        now = loop.time()
                        self._keep(log, direction, now, now, chunk)
                await writer.drain()
            while pending:  # pass the end of stream on after the last delayed chunk
                await asyncio.sleep(0.001)
            if writer.can_write_eof() and not writer.transport.is_closing():
                writer.write_eof()
        except (ConnectionError, OSError):
            self._abort(conn)

    def _keep(self, log: list, direction: str, read: float, delivered: float, chunk: bytes) -> None:
        """Log one chunk (times on the loop's clock, which is ``time.monotonic()``) while room is left."""
        if self.log_full_at is not None:
            return  # full: stop for every connection, so no stream has a hole in the middle
        if self._logged + len(chunk) > self.log_bytes:
            self.log_full_at = read
            return
        self._logged += len(chunk)
        log.append((direction, read, delivered, chunk))

    def _abort(self, conn: Connection) -> None:
        for w in self._live.get(conn.id, ()):
            w.transport.abort()

    async def stop(self) -> None:
        """Stop listening, drop what is still open, and wait for every relay to end."""
        if self._server is None:
            return
        self._server.close()
        for conn in self.connections:
            self._abort(conn)
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=1.0)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
