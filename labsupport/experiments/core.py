"""The shape every experiment shares: run a pattern under a workload, return a ``Result``.

Every experiment has the same shape, whatever the pattern:

1. a feed creates events at the workload's rate;
2. the pattern's server serves that feed on loopback;
3. a wire meter sits in front of the server (adding link latency if asked) and counts;
4. N clients connect through the meter and record what they see;
5. the feed runs for ``duration`` seconds, the clients get a short time to catch up, and
   everything is stopped, whatever happened.

A ``scenario`` coroutine may run alongside the feed to act on the run while it happens: cut
the link (``measure_cut``), restart the server. Each chapter's module builds its ``run_*``
functions on ``measure``; their plain form waits for the result and ``await run_x.aio(...)``
does the same from a coroutine. Both run the work on the lab loop.

A run that needs no feed (a handshake, a chat room, bad frames) still stops nothing by hand:
``async with served(Routes(name, routes)) as server:``, or ``metered(...)`` for a meter in front.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import AsyncIterator, Awaitable, Callable

import numpy as np
import pandas as pd
import psutil

from ..feed import Event, Feed
from ..lab import LabCall, LabError, Server, cancel_all, lab
from ..record import Recorder
from ..results import Result
from ..wire import Link, WireCounts, WireMeter

MAX_CLIENTS = 2000
MAX_DURATION = 60.0
CAPTURE_BYTES = 4096
LOG_BYTES = 2_000_000  # every chunk of a run, for its ladder diagram, up to this many bytes
READY_TIMEOUT = 10.0
_run_ids = itertools.count(1)


@dataclass(frozen=True)
class Workload:
    """What the clients face: event rate (per s), clients, duration (s), one-way link latency (s)."""

    rate: float = 5.0
    clients: int = 1
    duration: float = 2.0
    latency: float = 0.0
    arrivals: str = "fixed"
    value: str = "ticker"
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.clients <= MAX_CLIENTS:
            raise ValueError(f"clients must be between 1 and {MAX_CLIENTS}, not {self.clients!r}.")
        if not 0 < self.duration <= MAX_DURATION:
            raise ValueError(f"duration must be above 0 and at most {MAX_DURATION:.0f} s, not {self.duration!r}.")
        if not 0 <= self.latency <= 2.0:
            raise ValueError(f"latency is one way, between 0 and 2 s, not {self.latency!r}.")


ClientFactory = Callable[[str, Recorder], Awaitable[None]]


class Routes:
    """The plainest backend: fixed routes on the lab loop and no feed (a handshake, a chat room, an echo).

    Every backend has the same small face, so ``served``, ``metered`` and ``measure`` treat them
    alike: ``start()`` (then ``port``) and ``stop()``; a backend with a feed (``LabServer``,
    ``ServerProcess``) adds ``start_feed(duration)`` (returns the monotonic start time),
    ``finished()``, ``events()`` and ``usage()`` (the server's CPU time and memory, or ``None``
    when it shares the lab's thread and cannot be told apart).
    """

    def __init__(self, name: str, handlers: list, **settings) -> None:
        self.name, self.handlers, self.settings = name, handlers, settings
        self.server: Server | None = None
        self.port: int | None = None
        self.url: str | None = None

    def routes(self) -> list:
        return self.handlers

    async def start(self) -> "Routes":
        self.server = await lab.serve(self.name, self.routes(), **self.settings)
        self.port, self.url = self.server.port, self.server.url
        return self

    async def stop(self) -> None:
        await lab.stop_server(self.name)


class LabServer(Routes):
    """Where the events come from, by default: the pattern's server on the lab loop, with its own feed.

    ``ServerProcess`` is the other such backend: the same server in a child process, so its CPU
    time is its own.
    """

    def __init__(self, pattern: str, handlers: Callable[[Feed], list], workload: Workload) -> None:
        super().__init__(f"{pattern}-run-{next(_run_ids)}", handlers)
        self.feed = Feed(workload.rate, arrivals=workload.arrivals, value=workload.value, seed=workload.seed)

    def routes(self) -> list:
        return self.handlers(self.feed)

    async def start_feed(self, duration: float) -> float:
        self.feed.start(duration)
        await asyncio.sleep(0)  # the feed's task notes its start time
        return self.feed.started

    async def finished(self) -> None:
        await self.feed.finished()

    async def events(self) -> list[Event]:
        return list(self.feed.events)

    async def usage(self) -> None:
        return None

    async def restart(self, down_for: float) -> None:
        """Stop the server (dropping its connections), wait, and start a fresh one on the same feed."""
        await super().stop()
        await asyncio.sleep(down_for)
        await self.start()

    async def stop(self) -> None:
        await self.feed.stop()
        await super().stop()


@dataclass
class Run:
    """A run in progress, as a scenario sees it: the backend (server and feed), the meter, the clients."""

    pattern: str
    backend: LabServer
    meter: WireMeter
    recorders: list[Recorder]

    @property
    def feed(self) -> Feed:
        return self.backend.feed

    @property
    def server(self) -> Server:
        return self.backend.server

    async def restart_server(self, down_for: float = 0.0) -> None:
        """Stop the server (dropping its connections), wait, and start a fresh one on the same feed."""
        await self.backend.restart(down_for)
        self.meter.target_port = self.backend.port


@asynccontextmanager
async def served(backend) -> AsyncIterator:
    """Start ``backend``; stop it, whatever happens. ``async with served(Routes(name, routes)) as server:``"""
    await backend.start()
    try:
        yield backend
    finally:
        await backend.stop()


@asynccontextmanager
async def metered(backend, latency: float = 0.0, *, capture: int = CAPTURE_BYTES,
                  log_bytes: int = LOG_BYTES) -> AsyncIterator[WireMeter]:
    """Start ``backend`` and a wire meter in front of it; stop both, whatever happens."""
    async with served(backend):
        link = Link(latency=latency)
        meter = await WireMeter(backend.port, capture=capture, up=link, down=link, log_bytes=log_bytes).start()
        try:
            yield meter
        finally:
            await meter.stop()


async def measure(pattern: str, handlers: Callable[[Feed], list] | None, client: ClientFactory,
                  workload: Workload, *, drain: float, ready_first: bool,
                  scenario: Callable[[Run], Awaitable[None]] | None = None, backend=None,
                  connected_first: bool = False, catch_up: float = 0.0, **settings) -> Result:
    """Run ``clients`` copies of ``client`` against the pattern's server under ``workload``.

    ``backend`` is where the server runs: by default on the lab loop (``LabServer`` over
    ``handlers``); a ``ServerProcess`` runs it in a child process, so its CPU time and memory
    are its own. ``ready_first`` waits until every client is in place before the first event
    (push patterns start listening from "now"); ``connected_first`` until every client holds a
    connection through the meter. ``drain`` is how long clients may catch up after the last
    event, and ``catch_up`` how much longer, at most, to wait for every client to see the last
    event (so an event that is late on a busy machine is counted late, not missed).
    ``scenario(run)`` runs alongside the feed. ``settings`` are recorded in the result.

    The result also tells the feed's window apart: the wire counts in it and the server's CPU
    time in it (own process only).
    """
    backend = backend or LabServer(pattern, handlers, workload)
    recorders = [Recorder(i) for i in range(workload.clients)]
    async with metered(backend, workload.latency) as meter:
        tasks = [asyncio.create_task(client(meter.url, r)) for r in recorders]
        try:
            if connected_first:
                await all_connected(meter, workload.clients, tasks)
            if ready_first:
                await all_ready(recorders, tasks)
            first, before = meter.counts(), await backend.usage()
            started = await backend.start_feed(workload.duration)
            if scenario is not None:
                await asyncio.gather(backend.finished(), scenario(Run(pattern, backend, meter, recorders)))
            await backend.finished()
            last, after = meter.counts(), await backend.usage()
            await asyncio.sleep(drain)
            events = await backend.events()
            if catch_up:
                await all_caught_up(recorders, max((e.seq for e in events), default=0), catch_up)
            raise_client_failure(tasks)
        finally:
            await cancel_all(tasks)
        counts = meter.counts()
    result = Result.build(pattern, {**asdict(workload), **settings}, events, recorders,
                          meter.connections, counts, started, workload.duration)
    result.window = window_counts(first, last)
    if after is not None:
        result.server_cpu_s, result.server_rss = after.cpu_seconds - before.cpu_seconds, after.rss_bytes
    return result


@dataclass
class CutOutcome:
    """A run with every connection cut mid-stream: what the clients saw afterwards."""

    result: Result
    cut_at: float                 # seconds after the feed started
    connections_cut: int
    reconnects: int               # requests beyond each client's first
    lost: int                     # (client, event) pairs never delivered
    duplicated: int               # deliveries of an event a client already had
    missed_notices: list[dict] = field(default_factory=list)  # the "missed" events clients got (SSE)

    @property
    def announced(self) -> int:
        """Lost events that a ``missed`` notice told the client about."""
        return sum(n["last"] - n["first"] + 1 for n in self.missed_notices)

    def summary(self) -> dict:
        return {"cut_at_s": round(self.cut_at, 3), "connections_cut": self.connections_cut,
                "reconnects": self.reconnects, "events": len(self.result.events),
                "lost": self.lost, "announced_as_missed": self.announced, "duplicated": self.duplicated}


async def measure_cut(pattern: str, handlers: Callable[[Feed], list], client: ClientFactory, workload: Workload,
                      *, cut_at: float, drain: float, **settings) -> CutOutcome:
    """``measure`` with every connection cut ``cut_at`` s into the feed, as a network blip would."""
    if not 0 < cut_at < workload.duration:
        raise ValueError(f"cut_at must fall inside the run (0 to {workload.duration} s), not {cut_at!r}.")
    cut = {}

    async def scenario(run: Run) -> None:
        await asyncio.sleep(cut_at)
        cut["at"], cut["n"] = time.monotonic() - run.feed.started, await run.meter.cut_all()
        cut["recorders"] = run.recorders

    result = await measure(pattern, handlers, client, workload, drain=drain, ready_first=True, scenario=scenario,
                           **settings)
    seen = Counter((r.client, seq) for r in cut["recorders"] for seq, _ in r.seen)
    return CutOutcome(result=result, cut_at=cut["at"], connections_cut=cut["n"],
                      reconnects=sum(len(r.requests) - 1 for r in cut["recorders"]),
                      lost=result.summary()["missed"], duplicated=sum(n - 1 for n in seen.values()))


def window_counts(start: WireCounts, end: WireCounts) -> WireCounts:
    """The meter's counts between two snapshots (open and peak as at the end)."""
    return WireCounts(end.connections_opened - start.connections_opened, end.open_now, end.peak_open,
                      end.bytes_up - start.bytes_up, end.bytes_down - start.bytes_down)


async def all_connected(meter: WireMeter, clients: int, tasks: list[asyncio.Task]) -> None:
    """Wait until ``clients`` connections are open through the meter (each one reached the server)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while meter.counts().open_now < clients:
        raise_client_failure(tasks)
        if time.monotonic() > deadline:
            raise LabError(f"Only {meter.counts().open_now} of {clients} connections were open after "
                           f"{READY_TIMEOUT:.0f} s. Try fewer clients.")
        await asyncio.sleep(0.02)


async def all_caught_up(recorders: list[Recorder], last_seq: int, limit: float) -> None:
    """Wait, at most ``limit`` seconds, until every client has seen event ``last_seq`` (or a later one)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and not all(r.seen and max(s for s, _ in r.seen) >= last_seq
                                                  for r in recorders):
        await asyncio.sleep(0.02)


def established(port: int, pid: int | None = None) -> int:
    """TCP connections the operating system shows as established on a server's port.

    ``pid`` is the server's process (a child process or the broker); by default this one.
    """
    return sum(1 for c in psutil.Process(pid).net_connections(kind="tcp")
               if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED)


def crossing(xs, gap) -> float:
    """Where ``gap`` (measured at the increasing ``xs``) first goes from below zero to zero or above,
    interpolated on a log scale of ``xs``; NaN if it never does in the measured range."""
    xs, gap = np.asarray(xs, dtype=float), np.asarray(gap, dtype=float)
    for i in range(len(gap) - 1):
        if gap[i] < 0 <= gap[i + 1]:
            share = -gap[i] / (gap[i + 1] - gap[i])
            return float(xs[i] * (xs[i + 1] / xs[i]) ** share)
    return float("nan")


async def all_ready(recorders: list[Recorder], tasks: list[asyncio.Task], *, count: int | None = None) -> None:
    """Wait until every client (or any ``count`` of them) is in place; a clear error after ``READY_TIMEOUT``."""
    wanted = len(recorders) if count is None else count
    waiting = [asyncio.ensure_future(r.ready.wait()) for r in recorders]
    deadline = time.monotonic() + READY_TIMEOUT
    try:
        while sum(w.done() for w in waiting) < wanted:
            raise_client_failure(tasks)
            if time.monotonic() > deadline:
                raise LabError(
                    f"Only {sum(w.done() for w in waiting)} of {wanted} clients connected within "
                    f"{READY_TIMEOUT:.0f} s. Try fewer clients."
                )
            await asyncio.wait(waiting, timeout=0.05)
    finally:
        for w in waiting:
            w.cancel()


def raise_client_failure(tasks: list[asyncio.Task]) -> None:
    """Raise a learner-readable error for the first client that crashed, if any did."""
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            error = task.exception()
            raise LabError(f"A client stopped with {type(error).__name__}: {error}") from error


def variants_of(run: LabCall) -> LabCall:
    """``run`` several times at the same time, each with its own settings; the results by name.

    ``variants_of(run_polling)({"keep-alive": dict(interval=0.1), "close": dict(interval=0.1, keep_alive=False)})``
    """
    async def variants(variants: dict[str, dict]) -> dict[str, Result]:
        results = await asyncio.gather(*(run.coro(**settings) for settings in variants.values()))
        return dict(zip(variants, results))

    variants.__name__ = variants.__qualname__ = f"{run.__name__}_variants"
    variants.__module__ = run.__module__
    return LabCall(variants, lambda arguments: max((run.seconds(**v) or 0.0 for v in arguments["variants"].values()),
                                                   default=0.0))


async def _sweep(run: Callable, over: str, values: list, fixed: dict) -> pd.DataFrame:
    rows = []
    for value in values:
        result = await run.coro(**{**fixed, over: value})
        rows.append({over: value, **result.summary()})
    return pd.DataFrame(rows)


def expected_seconds(kwargs: dict) -> float:
    """About how long a run takes: the feed's duration, a last poll interval, and setup."""
    return kwargs.get("duration", Workload.duration) + kwargs.get("interval", 0.0) + 0.3


def sweep(run: LabCall, over: str, values: list, **fixed) -> pd.DataFrame:
    """Run an experiment once per value of one setting; one summary row per run.

    The sweep is one experiment call: watched as a whole, and run once more as a whole if other
    programs held the lab back (``LabCall``)."""
    calls = [run.arguments(**{**fixed, over: value}) for value in values]
    seconds = sum((run.expected or expected_seconds)(arguments) for arguments in calls)

    async def swept() -> pd.DataFrame:
        return await _sweep(run, over, list(values), fixed)

    swept.__name__ = swept.__qualname__ = f"sweep of {run.__name__} over {over}"
    hold_limit = min(run.hold_limit(**arguments) for arguments in calls)
    return LabCall(swept, lambda _: seconds, tolerates=lambda _: hold_limit)()
