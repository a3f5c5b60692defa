"""The wire meter: a TCP relay in front of a server that counts and can impair the link.

Clients connect to the meter, the meter connects to the server, and every byte passes
through it. Because it works at the TCP level it knows nothing of HTTP, SSE or WebSockets,
so its numbers mean the same thing for every pattern in the course:

* connections opened, open now, and the most open at once;
* bytes up (client to server) and down (server to client), exact;
* the first bytes of each connection in each direction, to show a real request and response;
* optionally every chunk it relayed, with the time it read it and the time it passed it on
  (``log_bytes``), so a ladder diagram can show each message where and when it crossed, and
  ``pcap.py`` can write the connections as a capture file;
* each connection's ports on the client's side, and when each direction's end of stream passed;
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

    @property
    def impairs(self) -> bool:
        return bool(self.latency or self.jitter or self.bandwidth)

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
    ports: tuple[int, int] = (0, 0)  # the client's port and the meter's: the client's leg of the relay
    ends: dict[str, tuple[float, float]] = field(default_factory=dict)  # direction -> end of stream (read, passed on)


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
        self._live: dict[int, _Relay] = {}
        self._relays: set[_Relay] = set()
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
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Relay(self).client, LOOPBACK, 0, backlog=BACKLOG)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def backend_for(self, peer: tuple) -> int:
        """The server port for a client at ``peer`` (host, port). A balancer overrides this."""
        return self.target_port

    # -- counting -------------------------------------------------------------------------

    def counts(self) -> WireCounts:
        return WireCounts(
            connections_opened=len(self.connections),
            open_now=len(self._live),
            peak_open=self._peak,
            bytes_up=sum(c.bytes_up for c in self.connections),
            bytes_down=sum(c.bytes_down for c in self.connections),
        )

    def cut(self, conn: Connection) -> None:
        """Drop one connection: both ends see it reset, as a proxy closing it would do."""
        relay = self._live.get(conn.id)
        if relay is not None:
            conn.cut = True
            relay.abort()

    def blackhole(self, conn: Connection) -> None:
        """Forget one connection silently: its bytes are dropped and neither end is told (half-open)."""
        conn.blackholed = True

    def _keep(self, log: list, direction: str, read: float, delivered: float, chunk: bytes) -> None:
        """Log one chunk (times on the loop's clock, which is ``time.monotonic()``) while room is left."""
        if self.log_full_at is not None:
            return  # full: stop for every connection, so no stream has a hole in the middle
        if self._logged + len(chunk) > self.log_bytes:
            self.log_full_at = read
            return
        self._logged += len(chunk)
        log.append((direction, read, delivered, chunk))

    # -- faults ---------------------------------------------------------------------------

    async def cut_all(self) -> int:
        """Drop every open connection at once, as a network blip would. Returns how many."""
        live = list(self._live.values())
        for relay in live:
            relay.conn.cut = True
            relay.abort()
        await asyncio.sleep(0)
        return len(live)

    async def stop(self) -> None:
        """Stop listening, drop what is still open, and wait for every relay to end."""
        if self._server is None:
            return
        self._server.close()
        for relay in list(self._relays):
            relay.abort()
        if self._relays:
            await asyncio.wait([r.ended for r in self._relays], timeout=1.0)
        await self._server.wait_closed()
        self._server = None


# -- relaying ---------------------------------------------------------------------------------
#
# The relay is written with asyncio's protocols and transports, not streams: a chunk that
# arrives is counted and handed to the other socket within the same callback, with no task to
# wake and nothing to await. Flow control is the transports' own: when the socket we write to
# has a full buffer, its protocol is told to ``pause_writing`` and we stop reading the other
# side until ``resume_writing``, so a slow reader pushes back on the sender as it would without
# the meter.

class _End(asyncio.Protocol):
    """One socket of a relayed connection, the client's or the server's."""

    def __init__(self, relay: "_Relay", lane: "_Lane") -> None:
        self.relay, self.lane = relay, lane   # ``lane`` carries what arrives on this socket
        self.transport: asyncio.Transport | None = None
        self.held: set[str] = set()           # why reading is paused, if it is
        self.early: list[bytes] = []          # written before this socket was connected
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.relay.made(self)
        for data in self.early:
            self.write(data)
        self.early.clear()

    def data_received(self, data: bytes) -> None:
        self.lane.carry(data)

    def eof_received(self) -> bool:
        self.lane.finish()
        return True  # keep the socket half open: the other direction may still have bytes to send

    def pause_writing(self) -> None:
        self.relay.other(self).hold("full")    # our peer reads slowly: stop reading what we would send it

    def resume_writing(self) -> None:
        self.relay.other(self).release("full")

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.relay.lost(self, exc)

    def hold(self, why: str) -> None:
        self.held.add(why)
        if self.transport is not None:
            self.transport.pause_reading()

    def release(self, why: str) -> None:
        self.held.discard(why)
        if not self.held and self.transport is not None:
            self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        if self.transport is None:
            self.early.append(data)
        elif not self.transport.is_closing():
            self.transport.write(data)


class _Lane:
    """One direction of a relayed connection: counts its bytes, keeps its head, applies its link.

    Without a delay each chunk is written on at once. With one, chunks wait in order in
    ``in_flight`` and each is written at its due time, never before the chunk ahead of it; at
    most MAX_IN_FLIGHT bytes wait at once (reading the source pauses until there is room).
    """

    def __init__(self, relay: "_Relay", direction: str, link: Link) -> None:
        self.relay, self.direction, self.link = relay, direction, link
        self.head = relay.conn.head_up if direction == "up" else relay.conn.head_down
        self.source: _End | None = None
        self.sink: _End | None = None
        self.in_flight: deque[tuple[float, bytes]] = deque()  # (due time, chunk), oldest first
        self.pending = 0      # bytes in flight
        self.last_due = 0.0
        self.ending = False   # the source sent its end of stream
        self.ending_at = 0.0  # ... when the meter read it
        self.done = False     # ... and it has been passed on

    def carry(self, chunk: bytes) -> None:
        conn, size = self.relay.conn, len(chunk)
        if conn.blackholed:
            return
        conn.last_active = time.monotonic()
        if self.direction == "up":
            conn.bytes_up += size
        else:
            conn.bytes_down += size
        capture = self.relay.meter.capture
        if len(self.head) < capture:
            self.head.extend(chunk[: capture - len(self.head)])
        delay = self.link.delay(size) if self.link.impairs else 0.0
        log = conn.chunks  # None unless the meter keeps a log
        if not delay and not self.pending:
            self.sink.write(chunk)
            if log is not None:
                now = time.monotonic()
                self.relay.meter._keep(log, self.direction, now, now, chunk)
            return
        loop = asyncio.get_running_loop()
        self.last_due = max(self.last_due, loop.time() + delay)
        self.pending += size
        self.in_flight.append((self.last_due, chunk))
        if log is not None:
            self.relay.meter._keep(log, self.direction, loop.time(), self.last_due, chunk)
        if len(self.in_flight) == 1:
            loop.call_at(self.last_due, self.deliver_due)
        if self.pending > MAX_IN_FLIGHT:
            self.source.hold("in flight")

    def deliver_due(self) -> None:
        loop = asyncio.get_running_loop()
        while self.in_flight and self.in_flight[0][0] <= loop.time():
            _, chunk = self.in_flight.popleft()
            self.pending -= len(chunk)
            self.sink.write(chunk)
        if self.in_flight:
            loop.call_at(self.in_flight[0][0], self.deliver_due)
        if self.pending <= MAX_IN_FLIGHT:
            self.source.release("in flight")
        if self.ending and not self.in_flight:
            self._pass_end()

    def finish(self) -> None:
        """The source sent its end of stream: pass it on after the last delayed chunk."""
        if not self.ending:
            self.ending, self.ending_at = True, time.monotonic()
        if not self.in_flight:
            self._pass_end()

    def _pass_end(self) -> None:
        if self.done:
            return
        self.done = True
        self.relay.conn.ends[self.direction] = (self.ending_at, time.monotonic())
        transport = self.sink.transport
        if transport is not None and not transport.is_closing():
            if self.source.lost or not transport.can_write_eof():
                transport.close()  # the source is gone for good: close, after flushing
            else:
                transport.write_eof()
        self.relay.lane_done()


class _Relay:
    """One client connection and the meter's own connection to the server, joined by two lanes."""

    def __init__(self, meter: WireMeter) -> None:
        self.meter = meter
        opened = time.monotonic()
        self.conn = Connection(id=next(meter._ids), opened=opened, last_active=opened,
                               chunks=[] if meter.log_bytes else None)
        self.up = _Lane(self, "up", meter.up)
        self.down = _Lane(self, "down", meter.down)
        self.client = _End(self, self.up)
        self.server = _End(self, self.down)
        self.up.source, self.up.sink = self.client, self.server
        self.down.source, self.down.sink = self.server, self.client
        self.ended = asyncio.get_running_loop().create_future()
        self._connecting: asyncio.Task | None = None

    def other(self, end: _End) -> _End:
        return self.server if end is self.client else self.client

    def made(self, end: _End) -> None:
        meter = self.meter
        if end is self.client:  # a client arrived: reach the server before reading a byte
            self.conn.ports = (end.transport.get_extra_info("peername")[1], end.transport.get_extra_info("sockname")[1])
            meter.connections.append(self.conn)
            meter._relays.add(self)
            end.hold("connecting")
            self._connecting = asyncio.ensure_future(self._connect())
        elif self.client.lost:  # the client left while we were reaching the server
            end.transport.abort()
        else:
            meter._live[self.conn.id] = self
            meter._peak = max(meter._peak, len(meter._live))
            self.client.release("connecting")

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            port = self.meter.backend_for(self.client.transport.get_extra_info("peername"))
            await loop.create_connection(lambda: self.server, LOOPBACK, port)
        except OSError:
            self.client.transport.abort()  # the server is down: the client sees its connection end

    def lane_done(self) -> None:
        if self.up.done and self.down.done:  # both ends said all they had: close, after flushing
            for end in (self.client, self.server):
                if end.transport is not None:
                    end.transport.close()

    def lost(self, end: _End, exc: Exception | None) -> None:
        other = self.other(end)
        if exc is not None:
            self.abort()  # a reset: the other side sees one too
        elif not other.lost:
            end.lane.finish()  # what this side sent reaches the other, then the other is closed
        if (self.client.lost or self.client.transport is None) and (self.server.lost or self.server.transport is None):
            self._end()

    def abort(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        for end in (self.client, self.server):
            if end.transport is not None:
                end.transport.abort()

    def _end(self) -> None:
        if self.ended.done():
            return
        self.conn.closed = time.monotonic()
        self.meter._live.pop(self.conn.id, None)
        self.meter._relays.discard(self)
        self.ended.set_result(None)
