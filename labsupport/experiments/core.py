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
from dataclasses import asdict, dataclass
from typing import Awaitable, Callable

import pandas as pd

from ..feed import Feed
from ..lab import LabError, Server, lab
from ..record import Recorder
from ..results import Result
from ..wire import Link, WireMeter

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


@dataclass
class Run:
    """A run in progress, as a scenario sees it: the feed, the server, the meter, the clients."""

    pattern: str
    feed: Feed
    handlers: Callable[[Feed], list]
    server: Server
    meter: WireMeter
    recorders: list[Recorder]

    async def restart_server(self, down_for: float = 0.0) -> None:
        """Stop the server (dropping its connections), wait, and start a fresh one on the same feed."""
        await lab.stop_server(self.server.name)
        await asyncio.sleep(down_for)
        self.server = await lab.serve(self.server.name, self.handlers(self.feed))
        self.meter.target_port = self.server.port


async def measure(pattern: str, handlers: Callable[[Feed], list], client: ClientFactory,
                  workload: Workload, *, drain: float, ready_first: bool,
                  scenario: Callable[[Run], Awaitable[None]] | None = None, **settings) -> Result:
    """Run ``clients`` copies of ``client`` against the pattern's server under ``workload``.

    ``ready_first`` waits until every client is connected before the first event (push
    patterns start listening from "now"); ``drain`` is how long clients may catch up after
    the last event; ``scenario(run)`` runs alongside the feed. ``settings`` are recorded in
    the result.
    """
    feed = Feed(workload.rate, arrivals=workload.arrivals, value=workload.value, seed=workload.seed)
    server = await lab.serve(f"{pattern}-run-{next(_run_ids)}", handlers(feed))
    link = Link(latency=workload.latency)
    meter = await WireMeter(server.port, capture=CAPTURE_BYTES, up=link, down=link, log_bytes=LOG_BYTES).start()
    run = Run(pattern, feed, handlers, server, meter, [Recorder(i) for i in range(workload.clients)])
    tasks = [asyncio.create_task(client(meter.url, r)) for r in run.recorders]
    try:
        if ready_first:
            await all_ready(run.recorders, tasks)
        started = time.monotonic()
        feed.start(workload.duration)
        if scenario is not None:
            await asyncio.gather(feed.finished(), scenario(run))
        await feed.finished()
        await asyncio.sleep(drain)
        raise_client_failure(tasks)
    finally:
        await cancel_all(tasks)
        counts = meter.counts()
        await meter.stop()
        await lab.stop_server(run.server.name)
    return Result.build(pattern, {**asdict(workload), **settings}, feed.events, run.recorders,
                        meter.connections, counts, feed.started or started, workload.duration)


async def all_ready(recorders: list[Recorder], tasks: list[asyncio.Task]) -> None:
    waiting = [asyncio.ensure_future(r.ready.wait()) for r in recorders]
    deadline = time.monotonic() + READY_TIMEOUT
    try:
        while not all(w.done() for w in waiting):
            raise_client_failure(tasks)
            if time.monotonic() > deadline:
                raise LabError(
                    f"Only {sum(w.done() for w in waiting)} of {len(recorders)} clients connected within "
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
    seconds = sum((run.expected or expected_seconds)({**fixed, over: value}) for value in values)
    return lab.run(_sweep(run, over, list(values), fixed), expected_seconds=seconds, label=f"sweep {over}")
