"""Chapter 8's deploys: restarting the servers under open streams, WebSockets and long polls.

Two server instances share one event log (the lab's feed; in production a database or the
broker of chapter 6) behind a round-robin balancer. A **rolling deploy** restarts them one at a
time: take the instance out of rotation, tell its clients (WebSocket close 1012 "service
restart", RFC 6455 §7.4 and the IANA registry; end each SSE response), let them come back to the
other instance with their cursor, stop it, start the new version, put it back. A **naive
deploy** restarts the one instance while a maintenance page answers ``503``, which an
``EventSource`` takes as final (WHATWG HTML §9.2: any non-200 answer fails the connection).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from dataclasses import dataclass

import tornado.web

from ..feed import Feed
from ..lab import Server, lab, on_lab_loop
from ..patterns import longpolling, sse
from ..patterns import websocket as ws
from ..record import Recorder
from ..results import Result
from ..wire import WireMeter
from .core import all_ready, raise_client_failure
from .guards import stopping

SERVICE_RESTART = 1012   # RFC 6455 close code registry: the server is restarting, come back later
GOING_AWAY = 1001        # RFC 6455 §7.4.1: the endpoint is going away, such as a server going down
RETRY = 0.1              # seconds every client waits before it reconnects
PATTERNS = ("sse", "websocket", "long polling")


class RoundRobin(WireMeter):
    """A wire meter that sends each new connection to the next backend in turn (a TCP balancer)."""

    def __init__(self, ports: list[int]) -> None:
        self.backends = list(ports)
        self._turn = itertools.count()
        super().__init__(ports[0])

    @property
    def target_port(self) -> int:
        return self.backends[next(self._turn) % len(self.backends)]

    @target_port.setter
    def target_port(self, port: int) -> None:
        pass   # the backends list decides


class _DrainableStream(sse.EventStreamHandler):
    """The chapter 4 stream handler, listed while open so a deploy can end it cleanly."""

    def initialize(self, open_streams: set, **options) -> None:
        super().initialize(**options)
        self.open_streams = open_streams

    async def get(self) -> None:
        self.open_streams.add(self)
        try:
            await super().get()
        finally:
            self.open_streams.discard(self)


class _Unavailable(tornado.web.RequestHandler):
    """A maintenance page: every request gets ``503 Service Unavailable``."""

    def prepare(self) -> None:
        self.set_status(503)
        self.set_header("Retry-After", "1")
        self.finish("deploying, back soon")


@dataclass
class Instance:
    server: Server
    hub: ws.Hub
    open_streams: set

    def close_sockets(self, code: int, reason: str) -> None:
        """Close every open WebSocket with ``code`` (stopping a Tornado server leaves upgraded connections open)."""
        for socket in list(self.hub.sockets):
            if socket.closed is None and socket.ws_connection is not None:
                socket.close(code, reason)

    async def drain(self) -> None:
        """Tell every client to go: WebSockets get close 1012, SSE responses end; held polls are cut at stop."""
        self.close_sockets(SERVICE_RESTART, "service restart")
        for stream in list(self.open_streams):
            if stream.waiting is not None:
                stream.waiting.cancel()   # the handler returns, the response ends, EventSource reconnects


async def _start_instance(name: str, feed: Feed) -> Instance:
    hub, open_streams = ws.Hub(feed), set()
    routes = [(r"/events", _DrainableStream, {"feed": feed, "open_streams": open_streams, "retry": int(RETRY * 1000),
                                              "heartbeat": None})]
    routes += ws.handlers(hub)
    routes += [(r"/lp/events", handler, options) for _, handler, options in longpolling.handlers(feed, hold=5.0)]
    return Instance(await lab.serve(name, routes), hub, open_streams)


async def _follow_events(url: str, recorder: Recorder) -> None:
    """An SSE client with EventSource's rule: a non-200 answer ends it for good (noted, not raised)."""
    try:
        await sse.listen(url, recorder, retry=RETRY)
    except sse.StreamRefused as refused:
        recorder.errors.append(f"gave up: {refused}")


def _clients(pattern: str):
    if pattern == "sse":
        return _follow_events
    if pattern == "websocket":
        return lambda url, r: ws.follow(url, r, after=0, retry=RETRY)
    return lambda url, r: longpolling.long_poll(f"{url}/lp", r, retry_delay=lambda n: RETRY)


@dataclass
class Deploy:
    """A deploy under load: every client's deliveries, and how each noticed the restarts."""

    kind: str
    result: Result
    patterns: list[str]            # pattern of each client, by client number
    restarts: list[tuple[float, float]]   # (stop began, new instance serving), s after the feed started

    def table(self):
        import pandas as pd
        d = self.result.deliveries
        rows = []
        for pattern in PATTERNS:
            clients = [i for i, p in enumerate(self.patterns) if p == pattern]
            got = d[d["client"].isin(clients)]
            rows.append({"pattern": pattern, "clients": len(clients),
                         "events x clients": len(self.result.events) * len(clients),
                         "delivered": len(got), "lost": len(self.result.events) * len(clients) - len(got),
                         "clients that gave up": sum(1 for i in clients if self._gave_up(i)),
                         "how they were told": self._notices(clients)})
        return pd.DataFrame(rows).set_index("pattern")

    def _gave_up(self, client: int) -> bool:
        return any(e.startswith("gave up") for e in self.errors[client])

    def _notices(self, clients: list[int]) -> str:
        seen = Counter(e.split(",")[0][:60] for i in clients for e in self.errors[i])
        return "; ".join(f"{text} ×{n}" for text, n in seen.most_common(2))

    @property
    def errors(self) -> list[list[str]]:
        return self.result.settings["errors"]


def _expected(kw: dict) -> float:
    return kw.get("duration", 2.0) + 1.0


@on_lab_loop(expected=_expected)
async def run_deploy(*, kind: str = "rolling", clients: int = 5, rate: float = 20.0, duration: float = 2.0,
                     down: float = 0.4) -> Deploy:
    """``clients`` clients of each pattern follow a feed of ``rate`` events/s for ``duration`` s
    while the servers are deployed: ``kind="rolling"`` (two instances, one after the other) or
    ``"naive"`` (one instance, a 503 maintenance page for ``down`` s)."""
    if kind not in ("rolling", "naive"):
        raise ValueError(f"kind must be 'rolling' or 'naive', not {kind!r}.")
    if not 1 <= clients <= 200:
        raise ValueError(f"clients (per pattern) must be between 1 and 200, not {clients!r}.")
    feed = Feed(rate)
    count = 2 if kind == "rolling" else 1
    instances = [await _start_instance(f"deploy-{i}", feed) for i in range(count)]
    balancer = await RoundRobin([i.server.port for i in instances]).start()
    patterns = [p for p in PATTERNS for _ in range(clients)]
    recorders = [Recorder(i) for i in range(len(patterns))]
    tasks = [asyncio.create_task(_clients(p)(balancer.url, r)) for p, r in zip(patterns, recorders)]
    restarts, maintenance = [], None
    servers = [f"deploy-{i}" for i in range(count)] + ["deploy-maintenance"]
    async with stopping(balancer, feed, tasks, servers) as ending:
        streams = [r for p, r in zip(patterns, recorders) if p != "long polling"]
        await all_ready(streams, tasks)   # a long poll is only answered once there is news: it cannot be 'ready' earlier
        await asyncio.sleep(0.1)          # by now the long polls are held
        feed.start(duration)
        for i in range(count):
            await asyncio.sleep(duration / (count + 1) - (down if kind == "naive" else 0))
            began = time.monotonic()
            old = instances[i]
            if kind == "rolling":
                balancer.backends.remove(old.server.port)   # no new connections to the old instance
                await old.drain()
                await asyncio.sleep(0.1)                    # clients leave and reconnect to the other one
                await lab.stop_server(old.server.name)
            else:
                old.close_sockets(GOING_AWAY, "going away")  # a server going down closes its WebSockets
                await lab.stop_server(old.server.name)      # and everything else on it is cut at once
                maintenance = await lab.serve("deploy-maintenance", [(r"/.*", _Unavailable)],
                                              log_function=lambda handler: None)
                balancer.backends = [maintenance.port]
                await asyncio.sleep(down)
            instances[i] = await _start_instance(f"deploy-{i}", feed)
            balancer.backends = [inst.server.port for inst in instances]
            await lab.stop_server("deploy-maintenance")   # and its kept-alive connections
            restarts.append((began - feed.started, time.monotonic() - feed.started))
        await feed.finished()
        await asyncio.sleep(0.3)
        raise_client_failure(tasks)
    result = Result.build(f"{kind} deploy", {"clients": len(recorders), "errors": [r.errors for r in recorders]},
                          feed.events, recorders, balancer.connections, ending.counts, feed.started, duration)
    return Deploy(kind, result, patterns, restarts)
