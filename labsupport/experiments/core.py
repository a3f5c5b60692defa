"""The shape every experiment shares: run a pattern under a workload, return a ``Result``.

Every experiment has the same shape, whatever the pattern:

1. a feed creates events at the workload's rate;
2. the pattern's server serves that feed on loopback;
3. a wire meter sits in front of the server (adding link latency if asked) and counts;
4. N clients connect through the meter and record what they see;
5. the feed runs for ``duration`` seconds, the clients get a short time to catch up, and
   everything is stopped, whatever happened.

A ``scenario`` coroutine may run alongside the feed to act on the run while it happens: cut
the link, restart the server. Each chapter's module builds its ``run_*`` functions on
``measure``; their plain form waits for the result and ``await run_x.aio(...)`` does the
same from a coroutine. Both run the work on the lab loop.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import AsyncIterator, Awaitable, Callable

import numpy as np
import pandas as pd
import psutil

from ..feed import Event, Feed
from ..lab import LabCall, LabError, LoopWatch, Server, lab
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


class LabServer:
    """Where the events come from, by default: the pattern's server on the lab loop, with its own feed.

    Every backend has the same small face, so ``measure`` treats them alike: ``start()`` (then
    ``port``), ``start_feed(duration)`` (returns the monotonic start time), ``finished()``,
    ``events()``, ``usage()`` (the server's CPU time and memory, or ``None`` when it shares the
    lab's thread and cannot be told apart) and ``stop()``. ``ServerProcess`` is the other one:
    the same server in a child process, so its CPU time is its own.
    """

    def __init__(self, pattern: str, handlers: Callable[[Feed], list], workload: Workload) -> None:
        self.name = f"{pattern}-run-{next(_run_ids)}"
        self.handlers = handlers
        self.feed = Feed(workload.rate, arrivals=workload.arrivals, value=workload.value, seed=workload.seed)
        self.server: Server | None = None

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self) -> "LabServer":
        self.server = await lab.serve(self.name, self.handlers(self.feed))
        return self

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
        await lab.stop_server(self.name)
        await asyncio.sleep(down_for)
        await self.start()

    async def stop(self) -> None:
        await self.feed.stop()
        await lab.stop_server(self.name)


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
async def metered(backend, latency: float = 0.0) -> AsyncIterator[WireMeter]:
    """Start ``backend`` and a wire meter in front of it; stop both, whatever happens."""
    await backend.start()
    try:
        link = Link(latency=latency)
        meter = await WireMeter(backend.port, capture=CAPTURE_BYTES, up=link, down=link, log_bytes=LOG_BYTES).start()
        try:
            yield meter
        finally:
            await meter.stop()
    finally:
        await backend.stop()


@dataclass
class Ending:
    """What a run that wires its own relay keeps from its end: the relay's last counts."""

    counts: WireCounts | None = None


@asynccontextmanager
async def stopping(relay, feed: Feed, tasks: list[asyncio.Task], servers: list[str]) -> AsyncIterator[Ending]:
    """For a run that wires its own clients, relay and servers: on leaving, whatever happens, cancel
    the clients, keep the relay's last counts (``ending.counts``), then stop the relay, the named
    servers and the feed."""
    ending = Ending()
    try:
        yield ending
    finally:
        await cancel_all(tasks)
        ending.counts = relay.counts()
        await relay.stop()
        for name in servers:
            await lab.stop_server(name)
        await feed.stop()


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

    The result also tells the feed's window apart: the wire counts in it, the server's CPU time
    in it (own process only), and how late the lab loop ran meanwhile (``lab_late``): when the
    lab cannot keep up, its numbers describe the machine more than the pattern.
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
            watch = LoopWatch().start()
            started = await backend.start_feed(workload.duration)
            if scenario is not None:
                await asyncio.gather(backend.finished(), scenario(Run(pattern, backend, meter, recorders)))
            await backend.finished()
            last, after = meter.counts(), await backend.usage()
            await watch.stop()
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
    result.window, result.lab_late, result.lab_cpu_share = window_counts(first, last), watch.late_p95, watch.cpu_share
    if after is not None:
        result.server_cpu_s, result.server_rss = after.cpu_seconds - before.cpu_seconds, after.rss_bytes
    return result


def check_range(name: str, value: float, low: float, high: float, unit: str = "") -> None:
    """Refuse a setting outside ``[low, high]`` with a message that names it and its range."""
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}{unit}, not {value!r}.")


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


async def cancel_all(tasks: list[asyncio.Task]) -> None:
    """Stop every client task and wait until each has finished."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


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


def sweep(run: Callable, over: str, values: list, **fixed) -> pd.DataFrame:
    """Run an experiment once per value of one setting; one summary row per run."""
    calls = [run.arguments(**{**fixed, over: value}) for value in values]
    seconds = sum((run.expected or expected_seconds)(arguments) for arguments in calls)
    return lab.run(_sweep(run, over, list(values), fixed), expected_seconds=seconds, label=f"sweep {over}")
