"""One browser run on the lab loop: the feed, the server, the wire meter and a Python client.

The browser's side lives in ``client.js``; this is the kernel's side of the same run. The
Python client is client 0 and each browser route (``direct``, ``proxy``) is one more client,
so one ``Result`` puts them on the same timeline. Browser times arrive in the browser's own
clock and are turned into the server's with the ``Alignment`` from ``clock.py``.

Nothing starts until a browser says hello: a notebook run without a browser starts no server.
Everything stops when the run is over, or ``ABANDON`` seconds after it if the browser went
away.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from ..feed import Feed
from ..lab import Server, cancel_all, lab
from ..patterns import longpolling, polling, push, sse, websocket
from ..record import Recorder
from ..results import Result
from ..wire import WireMeter
from .clock import Alignment, align
from .servers import EndingStream, RefuseHandler, WitnessedChat, open_to_browsers

ROUTES = ("direct", "proxy")
CAPTURE_BYTES = 2048
ABANDON = 10.0        # seconds after the run ends before a silent browser is given up
_ids = itertools.count(1)


@dataclass(frozen=True)
class Pattern:
    """A pattern as the browser runs it: the browser API, the server's routes, the Python twin."""

    api: str
    routes: Callable[["BrowserRun"], list]
    python_client: Callable[["BrowserRun", str, Recorder], Awaitable[None]]
    push: bool  # the server sends news as it happens (so the clients must be in place first)
    closed_routes: Callable[["BrowserRun"], list] = lambda run: []  # not opened to other origins


PATTERNS = {
    "poll": Pattern("setInterval + fetch",
                    lambda run: polling.handlers(run.feed, cache_control=run.cache_control, answers=run.answers),
                    lambda run, url, rec: polling.poll(url, rec, interval=run.interval), push=False),
    "cors": Pattern("fetch across origins",
                    lambda run: polling.handlers(run.feed, answers=run.answers),
                    lambda run, url, rec: polling.poll(url, rec, interval=run.interval), push=False,
                    closed_routes=lambda run: [(r"/closed/latest", polling.LatestHandler,
                                                {"feed": run.feed, "answers": run.answers})]),
    "limit": Pattern("seven EventSources",
                     lambda run: sse.handlers(run.feed, retry=run.retry_ms),
                     lambda run, url, rec: sse.listen(url, rec, retry=run.retry_ms / 1000), push=True),
    "chat": Pattern("a WebSocket chat",
                    lambda run: [(r"/chat", WitnessedChat, {"hub": run.hub, "witnessed": run.witnessed})],
                    lambda run, url, rec: run.bots(url, rec), push=True),
    "longpoll": Pattern("a fetch loop with a cursor", lambda run: longpolling.handlers(run.feed, hold=5.0),
                        lambda run, url, rec: longpolling.long_poll(url, rec), push=True),
    "stream": Pattern("a streamed fetch body",
                      lambda run: [(r"/stream", EndingStream, {"feed": run.feed, "over": run.over,
                                                               "opened": run.streams})],
                      lambda run, url, rec: push.listen(url, rec), push=True),
    "sse": Pattern("EventSource",
                   lambda run: sse.handlers(run.feed, retry=run.retry_ms) + [(r"/refuse", RefuseHandler,
                                                                              {"hits": run.refused})],
                   lambda run, url, rec: sse.listen(url, rec, retry=run.retry_ms / 1000), push=True),
    "ws": Pattern("WebSocket", lambda run: websocket.handlers(websocket.Hub(feed=run.feed))[:1],
                  lambda run, url, rec: websocket.follow(url, rec), push=True),
}


@dataclass
class RouteLog:
    """What one browser route reported, in the browser's clock (seconds)."""

    route: str
    samples: list = field(default_factory=list)
    trips: list = field(default_factory=list)     # fetch round trips timed during the run
    requests: list = field(default_factory=list)
    seen: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    notes: dict = field(default_factory=dict)
    ready: bool = False
    failed: str = ""
    done: bool = False

    def take(self, message: dict) -> None:
        self.requests += message.get("requests", [])
        self.seen += message.get("seen", [])
        self.errors += message.get("errors", [])
        self.trips += [float(t) for t in message.get("trips", [])]
        self.notes.update(message.get("notes", {}))


@dataclass
class BrowserRun:
    pattern: str
    rate: float = 5.0
    duration: float = 3.0
    interval: float = 0.5
    cut_at: float | None = None
    retry_ms: int = 200
    cache_control: str | None = "no-cache"
    routes: tuple[str, ...] = ROUTES
    allowed_origins: set = field(default_factory=set)
    feed: Feed | None = None
    server: Server | None = None
    meter: WireMeter | None = None
    python: Recorder = field(default_factory=lambda: Recorder(0))
    logs: dict = field(default_factory=dict)
    over: asyncio.Event | None = None
    streams: list = field(default_factory=list)
    refused: dict = field(default_factory=dict)
    answers: list = field(default_factory=list)
    hub: websocket.Hub = field(default_factory=websocket.Hub)
    witnessed: list = field(default_factory=list)
    bot_heard: list = field(default_factory=list)
    forged_origin_status: int | None = None
    cut: dict = field(default_factory=dict)
    _tasks: list = field(default_factory=list)
    _browser_done: asyncio.Event | None = None

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise ValueError(f"pattern must be one of {sorted(PATTERNS)}, not {self.pattern!r}.")
        if not 0 < self.rate <= 100:
            raise ValueError(f"rate must be above 0 and at most 100 events per second, not {self.rate!r}.")
        if not 0.5 <= self.duration <= 30:
            raise ValueError(f"duration must be between 0.5 and 30 s, not {self.duration!r}.")
        if not 0.05 <= self.interval <= 10:
            raise ValueError(f"interval must be between 0.05 and 10 s, not {self.interval!r}.")
        if self.cut_at is not None and not 0 < self.cut_at < self.duration:
            raise ValueError(f"cut_at must fall inside the run (0 to {self.duration} s), not {self.cut_at!r}.")
        unknown = set(self.routes) - set(ROUTES)
        if unknown or not self.routes:
            raise ValueError(f"routes must be some of {ROUTES}, not {self.routes!r}.")
        if self.pattern == "chat":
            self.hub.feed = None
        if self.pattern in ("cors", "limit"):
            # Through the proxy the page and the server share one origin, and the streams would
            # take the connections JupyterLab itself needs.
            self.routes = ("direct",)
        self.logs = {route: RouteLog(route) for route in self.routes}

    @property
    def spec(self) -> Pattern:
        return PATTERNS[self.pattern]

    @property
    def drain(self) -> float:
        """Seconds the clients get after the last event: a poll interval, a reconnect, a proxy's end."""
        return (self.interval if self.pattern == "poll" else 0.0) + self.retry_ms / 1000 + 0.5

    # -- on the lab loop ----------------------------------------------------------------------

    async def start(self, origin: str) -> dict:
        """Start the server, the meter and the Python client; the ports the browser needs."""
        self.allowed_origins.add(origin)
        self.over, self._browser_done = asyncio.Event(), asyncio.Event()
        self.feed = Feed(self.rate)
        routes = open_to_browsers(self.spec.routes(self), self.allowed_origins) + self.spec.closed_routes(self)
        self.server = await lab.serve(f"browser-{self.pattern}-{next(_ids)}", routes)
        self.meter = await WireMeter(self.server.port, capture=CAPTURE_BYTES).start()
        lab.on_shutdown(f"meter:{self.server.name}", self.meter.stop)
        self._tasks.append(asyncio.ensure_future(self.spec.python_client(self, self.meter.url, self.python)))
        return {"server_port": self.server.port, "meter_port": self.meter.port}

    async def begin(self) -> None:
        """Once every client is in place: start the feed, the fault (if any), and the clock to the end."""
        deadline = time.monotonic() + 10
        expected_streams = 1 + sum(log.ready for log in self.logs.values())
        while time.monotonic() < deadline and not (
                self.python.ready.is_set() and (self.pattern != "stream" or len(self.streams) >= expected_streams)):
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # a request just sent reaches the server before the first event
        self.feed.start(self.duration)
        if self.cut_at is not None:
            self._tasks.append(asyncio.ensure_future(self._cut()))
        asyncio.ensure_future(self._wind_down())

    async def _cut(self) -> None:
        await asyncio.sleep(self.cut_at)
        self.cut = {"at": time.monotonic() - self.feed.started, "connections": await self.meter.cut_all()}

    async def _wind_down(self) -> None:
        await self.feed.finished()
        self.over.set()
        await asyncio.sleep(self.drain)
        await cancel_all(self._tasks)
        if self.pattern == "chat":
            await self.try_forged_origin()
        try:
            await asyncio.wait_for(self._browser_done.wait(), ABANDON)
        except asyncio.TimeoutError:
            pass
        await self.stop()

    async def bots(self, url: str, recorder: Recorder) -> None:
        """Two Python bots in the chat room, speaking on their own; then a page from a forged origin."""
        recorder.ready.set()
        lines = ["hello from the kernel", "anyone there?", "the kernel hears you", "bye for now"]
        every = max(0.2, self.duration / (len(lines) + 1))
        await asyncio.gather(*(websocket.chat(url, name, lines, every=every, heard=self.bot_heard, linger=1.0)
                               for name in ("bot-ada", "bot-bob")))

    async def try_forged_origin(self) -> None:
        """A page from another site tries to join: the server's ``Origin`` check must refuse it."""
        import aiohttp
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(websocket.ws_url(self.meter.url, "/chat?name=intruder"),
                                              headers={"Origin": "https://evil.example"}):
                    self.forged_origin_status = 101
            except aiohttp.WSServerHandshakeError as refused:
                self.forged_origin_status = refused.status

    def browser_done(self) -> None:
        """Called (from any thread) once every browser route has sent its last report."""
        lab.loop().call_soon_threadsafe(self._browser_done.set)

    async def stop(self) -> None:
        await cancel_all(self._tasks)
        if self.meter is not None:
            await self.meter.stop()
        if self.server is not None:
            await lab.stop_server(self.server.name)
            lab.forget(f"meter:{self.server.name}")

    async def result(self) -> Result:
        """The run as one Result: client 0 is Python, then one client per browser route."""
        await self.over.wait()
        while self.server is not None and self.server.name in lab.servers:
            await asyncio.sleep(0.02)  # the run's end: the meter's counts are final
        alignment = self.alignment()
        recorders = [self.python]
        for number, log in enumerate(self.logs.values(), start=1):
            recorder = Recorder(number)
            if alignment is not None:
                for sent, answered, status, new, *_ in log.requests:
                    recorder.request(alignment.to_server(sent), status, new, alignment.to_server(answered))
                for seq, at in log.seen:
                    recorder.saw(seq, alignment.to_server(at))
            recorder.errors += log.errors + ([log.failed] if log.failed else [])
            recorders.append(recorder)
        settings = {"clients": len(recorders), "rate": self.rate, "duration": self.duration,
                    "names": self.client_names(), "pattern_api": self.spec.api}
        if self.pattern == "poll":
            settings["interval"] = self.interval
        return Result.build(f"browser {self.pattern}", settings, self.feed.events, recorders,
                            self.meter.connections, self.meter.counts(), self.feed.started, self.duration)

    # -- derived ------------------------------------------------------------------------------

    def client_names(self) -> list[str]:
        python = {"chat": "two aiohttp chat bots", "poll": "aiohttp polling", "cors": "aiohttp polling", "limit": "Python EventSource", "longpoll": "aiohttp long poll", "stream": "aiohttp stream",
                  "sse": "Python EventSource", "ws": "aiohttp WebSocket"}[self.pattern]
        via = {"direct": "directly", "proxy": "via jupyter-server-proxy"}
        return [f"Python: {python}"] + [f"browser {via[route]}" for route in self.logs]

    def round_trip(self, route: str) -> float:
        """The median round trip of a fetch on a route (s), timed during the run, under the run's
        load; where the browser timed none, from the clock exchanges before it (the first left
        out: it also opened the connection)."""
        log = self.logs[route]
        trips = sorted(log.trips) or sorted(t1 - t0 for t0, _, t1 in log.samples[1:])
        return trips[len(trips) // 2] if trips else float("nan")

    def answers_to(self, route: str, phase: str | None = None) -> list[tuple[int, object]]:
        """``(status, request)`` of every poll that reached the server from one browser route."""
        return [(status, request) for status, request in self.answers if _route_of(request.headers) == route
                and phase in (None, request.query_arguments.get("phase", [b""])[0].decode())]

    def stream_requests(self, route: str) -> list[bytes]:
        """The requests for ``/events`` that reached the server from one browser route, in order.

        The meter sees the proxy's requests, not the browser's: they carry the proxy's
        ``X-Forwarded-Context``; the browser's own carry its ``Mozilla`` user agent.
        """
        heads = [bytes(c.head_up) for c in self.meter.connections]
        return [h for h in heads if h.lower().startswith(b"get /events") and _route_of(_headers(h)) == route]

    def alignment(self, route: str | None = None) -> Alignment | None:
        """The tightest alignment from one route's exchanges, or from all of them."""
        samples = [s for log in self.logs.values() if route in (None, log.route) for s in log.samples]
        return align(samples) if samples else None



def _headers(head: bytes) -> dict:
    lines = head.decode("latin-1").split("\r\n\r\n")[0].split("\r\n")[1:]
    return dict(line.split(":", 1) for line in lines if ":" in line)


def _route_of(headers) -> str:
    """Which client sent a request: the proxy adds ``X-Forwarded-Context``; a browser says ``Mozilla``."""
    lower = {k.strip().lower(): v for k, v in headers.items()}
    if "x-forwarded-context" in lower:
        return "proxy"
    return "direct" if "mozilla" in lower.get("user-agent", "").lower() else "python"
