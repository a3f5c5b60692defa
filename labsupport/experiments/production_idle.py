"""Chapter 8's idle-timeout experiments: a proxy that drops quiet connections, heartbeats that
keep them, and a half-open connection that only a read timeout finds.

The proxy is the wire meter with an ``IdleCutter`` (``patterns/idle.py``) watching it; the
servers and clients are the chapters' own (long polling, SSE, WebSocket), unchanged.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pandas as pd

from ..feed import Feed
from ..lab import cancel_all, lab, on_lab_loop
from ..patterns import longpolling, sse
from ..patterns import websocket as ws
from ..patterns.idle import IdleCutter
from ..record import Recorder
from ..results import Result, Rows
from ..wire import WireMeter
from .core import raise_client_failure
from .guards import stopping

PATTERNS = ("long polling", "sse", "websocket")
RECONNECT = 0.1   # seconds every client waits before it reconnects


def _server_and_client(pattern: str, feed: Feed, heartbeat: float | None):
    """Routes, Tornado settings and a client for ``pattern``, with ``heartbeat`` (s) or none."""
    if pattern == "long polling":
        hold = heartbeat or 20.0   # an empty answer after ``hold`` is the long poll's heartbeat
        return (longpolling.handlers(feed, hold=hold), {},
                lambda url, r: longpolling.long_poll(url, r, give_up_after=hold + 5, retry_delay=lambda n: RECONNECT))
    if pattern == "sse":
        return (sse.handlers(feed, heartbeat=heartbeat, retry=int(RECONNECT * 1000)), {},
                lambda url, r: sse.listen(url, r, retry=RECONNECT))
    settings = {"websocket_ping_interval": heartbeat, "websocket_ping_timeout": heartbeat} if heartbeat else {}
    return ws.handlers(ws.Hub(feed)), settings, lambda url, r: ws.follow(url, r, retry=RECONNECT)


@dataclass
class IdleRun(Rows):
    """Each pattern behind the same idle-cutting proxy, quiet for a while, then one event."""

    rows: pd.DataFrame      # one row per pattern
    timeout: float
    heartbeat: float | None
    quiet: float


# When a connection is dropped is timed to 50 ms past the timeout: a longer wait for a core spoils it.
@on_lab_loop(expected=lambda kw: kw.get("quiet", 1.6) + 1.0, tolerates=lambda kw: 0.05)
async def run_idle(*, timeout: float = 0.6, heartbeat: float | None = None, quiet: float = 1.6) -> IdleRun:
    """Hold a long poll, an SSE stream and a WebSocket through a proxy that drops connections quiet
    for ``timeout`` s; no event for ``quiet`` s, then one. With ``heartbeat`` (s) each pattern
    sends its keep-alive that often.
    """
    if not 0.1 <= timeout <= 10:
        raise ValueError(f"timeout must be between 0.1 and 10 s, not {timeout!r}.")
    if heartbeat is not None and not 0.05 <= heartbeat <= 10:
        raise ValueError(f"heartbeat must be between 0.05 and 10 s (or None for none), not {heartbeat!r}.")
    if not 0.2 <= quiet <= 20:
        raise ValueError(f"quiet must be between 0.2 and 20 s, not {quiet!r}.")
    feed = Feed(1.0)   # never started: one event is published by hand after the quiet spell
    parts, tasks, rows = [], [], []
    try:
        for pattern in PATTERNS:
            routes, settings, client = _server_and_client(pattern, feed, heartbeat)
            server = await lab.serve(f"idle-{pattern}", routes, **settings)
            meter = await WireMeter(server.port).start()
            cutter = IdleCutter(meter, timeout).start()
            recorder = Recorder(len(parts))
            parts.append((pattern, server, meter, cutter, recorder))
            tasks.append(asyncio.create_task(client(meter.url, recorder)))
        started = time.monotonic()
        await asyncio.sleep(quiet)
        event = feed.publish()
        await asyncio.sleep(max(0.5, 2 * RECONNECT + 0.3))
        raise_client_failure(tasks)
    finally:
        await cancel_all(tasks)
        for _, server, meter, cutter, _ in parts:
            await cutter.stop()
            await meter.stop()
            await lab.stop_server(server.name)
    for pattern, _, meter, cutter, recorder in parts:
        seen = dict(recorder.seen)
        rows.append({"pattern": pattern, "dropped_by_proxy": len(cutter.dropped),
                     "connections": len(meter.connections),
                     "event_delivered": event.seq in seen,
                     "event_latency_ms": round((seen[event.seq] - event.created) * 1000, 1) if event.seq in seen else None,
                     "how_the_client_noticed": recorder.errors[0] if recorder.errors else "",
                     "first_drop_after_s": round(cutter.dropped[0][1] - started, 2) if cutter.dropped else None})
    return IdleRun(pd.DataFrame(rows).set_index("pattern"), timeout, heartbeat, quiet)


# -- a half-open connection ---------------------------------------------------------------------

@dataclass
class HalfOpen:
    """Two SSE clients on connections the path forgets silently; one has a read timeout."""

    result: Result            # client 0: no read timeout; client 1: read timeout
    forgotten_at: float       # seconds after the feed started
    read_timeout: float
    heartbeat: float
    noticed_after: list[float | None]   # per client: forgotten -> new connection (s), None if never
    events_after: list[int]             # per client: events seen that were created after the silence began

    def summary(self) -> pd.DataFrame:
        return pd.DataFrame({
            "read timeout": ["none", f"{self.read_timeout:g} s"],
            "noticed after (s)": [None if n is None else round(n, 3) for n in self.noticed_after],
            "events seen after the silence began": self.events_after,
            "events missed": [self.result.summary()["events"] - len(set(s for c, s in
                              zip(self.result.deliveries["client"], self.result.deliveries["seq"]) if c == i))
                              for i in range(2)],
        }, index=["client 0", "client 1"])


# When the read timeout notices is timed to 50 ms: a longer wait for a core spoils it.
@on_lab_loop(expected=lambda kw: kw.get("duration", 2.5) + 0.5, tolerates=lambda kw: 0.05)
async def run_half_open(*, heartbeat: float = 0.2, read_timeout: float = 0.6, rate: float = 10.0,
                        duration: float = 2.5, forget_at: float = 0.5) -> HalfOpen:
    """Both clients' connections are silently forgotten ``forget_at`` s in; who notices, and when?

    The server sends a heartbeat comment every ``heartbeat`` s; client 1 treats ``read_timeout``
    s without a byte as a dead connection, client 0 waits for ever (aiohttp's default for a
    streamed body, and the operating system's: TCP keepalive starts after two hours).
    """
    if not 0 < forget_at < duration:
        raise ValueError(f"forget_at must fall inside the run (0 to {duration} s), not {forget_at!r}.")
    if not heartbeat < read_timeout:
        raise ValueError("read_timeout must be longer than the heartbeat interval, or every quiet spell looks dead.")
    feed = Feed(rate)
    server = await lab.serve("half-open", sse.handlers(feed, heartbeat=heartbeat, retry=int(RECONNECT * 1000)))
    meter = await WireMeter(server.port).start()
    recorders = [Recorder(0), Recorder(1)]
    tasks = [asyncio.create_task(sse.listen(meter.url, recorders[0], retry=RECONNECT)),
             asyncio.create_task(sse.listen(meter.url, recorders[1], retry=RECONNECT, idle_timeout=read_timeout))]
    async with stopping(meter, feed, tasks, [server.name]) as ending:
        await asyncio.wait_for(asyncio.gather(*(r.ready.wait() for r in recorders)), 10)
        feed.start(duration)
        await asyncio.sleep(forget_at)
        forgotten = time.monotonic()
        for conn in list(meter.connections):
            meter.blackhole(conn)
        await feed.finished()
        await asyncio.sleep(0.2)
        raise_client_failure(tasks)
    result = Result.build("SSE, half-open", {"clients": 2, "heartbeat": heartbeat, "read_timeout": read_timeout},
                          feed.events, recorders, meter.connections, ending.counts, feed.started, duration)
    noticed, after = [], []
    for r in recorders:
        again = [q.sent for q in r.requests if q.sent > forgotten]
        noticed.append(again[0] - forgotten if again else None)
        created = {e.seq: e.created for e in feed.events}
        after.append(sum(1 for seq, _ in r.seen if created.get(seq, 0) > forgotten))
    return HalfOpen(result, forgotten - feed.started, read_timeout, heartbeat, noticed, after)
