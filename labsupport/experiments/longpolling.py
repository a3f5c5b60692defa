"""Chapter 3's experiments: long polling against periodic polling and push, at scale and under faults."""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from dataclasses import dataclass, field
from typing import Awaitable

import numpy as np
import pandas as pd

from ..feed import Feed
from ..lab import cancel_all, on_lab_loop
from ..patterns import longpolling, polling, push
from ..record import Recorder
from ..results import Result, Rows
from .polling import ROUND_TRIP
from .core import Routes, Run, Workload, all_caught_up, all_connected, crossing, measure, metered, variants_of


def _expected(kwargs: dict) -> float:
    restart = 2 * kwargs.get("down_for", 0.3) if kwargs.get("restart_at") is not None else 0.0
    return kwargs.get("duration", 2.0) + 0.5 + restart


@on_lab_loop(expected=_expected)
async def run_long_polling(*, rate: float = 5.0, clients: int = 1, duration: float = 2.0, latency: float = 0.0,
                           hold: float = 20.0, batch: float = 0.0, use_cursor: bool = True,
                           give_up_after: float = 30.0, restart_at: float | None = None,
                           down_for: float = 0.3, arrivals: str = "fixed", value: str = "ticker",
                           seed: int | None = None) -> Result:
    """Clients long-poll ``/events`` (see ``patterns/longpolling.py``).

    ``restart_at`` (seconds into the run) stops the server, keeps it down for ``down_for``
    seconds and starts a fresh one on the same feed: the clients must find their way back.
    Clients that back off may return up to about ``down_for`` after the server does, so the
    run waits that much longer at the end.
    """
    return await _long_polling(Workload(rate, clients, duration, latency, arrivals, value, seed), hold=hold,
                               batch=batch, use_cursor=use_cursor, give_up_after=give_up_after,
                               restart_at=restart_at, down_for=down_for)


async def _long_polling(workload: Workload, *, hold: float, batch: float, use_cursor: bool,
                        give_up_after: float = 30.0, restart_at: float | None = None, down_for: float = 0.3,
                        held: longpolling.Held | None = None, scenario=None) -> Result:
    if not 0 < hold <= 60:
        raise ValueError(f"hold must be above 0 and at most 60 s, not {hold!r}.")
    if not 0 <= batch <= 5:
        raise ValueError(f"batch must be between 0 and 5 s, not {batch!r}.")
    if restart_at is not None and not 0 <= restart_at < workload.duration:
        raise ValueError(f"restart_at must fall inside the run (0 to {workload.duration} s), not {restart_at!r}.")

    def client(url: str, recorder: Recorder):
        return longpolling.long_poll(url, recorder, use_cursor=use_cursor, give_up_after=give_up_after)

    async def restart(run: Run) -> None:
        await asyncio.sleep(restart_at)
        await run.restart_server(down_for)

    handlers = functools.partial(longpolling.handlers, hold=hold, batch=batch, held=held)
    return await measure("long polling", handlers, client, workload,
                         drain=batch + 2 * workload.latency + 0.1 + (2 * down_for if restart_at is not None else 0),
                         ready_first=False, scenario=scenario or (restart if restart_at is not None else None),
                         hold=hold, batch=batch, use_cursor=use_cursor, restart_at=restart_at)


run_long_polling_variants = variants_of(run_long_polling)


def lost_between_answers(result: Result) -> int:
    """Events a client never saw although it saw older and newer ones: lost in the gaps."""
    lost = 0
    for _, seen in result.deliveries.groupby("client")["seq"]:
        lost += int(seen.max() - seen.min() + 1 - seen.nunique())
    return lost


def requests_per_event(result: Result) -> float:
    """Requests the clients made for each event they received."""
    return len(result.requests) / max(len(result.deliveries), 1)


def fewest_requests_per_event(result: Result) -> float:
    """The fewest requests per event long polling can make for the events this run published.

    An event published at least a round trip after the one before finds the client waiting, so it
    needs an answer, and a request, of its own. One published sooner (a fixed-rate feed catching up
    after its loop ran late publishes several at once) may come while the client is still asking
    again, and share the next answer with the one before.
    """
    created = np.sort(result.events["created"].to_numpy())
    if len(created) == 0:
        return 1.0
    return (1 + int((np.diff(created) >= ROUND_TRIP).sum())) / len(created)


@dataclass
class WaitingClients:
    """A long-polling run with many clients, and what the server held while it ran."""

    result: Result
    samples: pd.DataFrame   # t (s since the feed started), held_requests, open_connections

    def between_events(self) -> pd.DataFrame:
        """The two counts halfway between consecutive events (the run's start and end count as
        events): the quiet moments when every client should be waiting for news. A stretch shorter
        than half the first one (an event at the very end of the run) has no quiet moment."""
        edges = np.concatenate([[0.0], np.sort(self.result.events["created"].to_numpy()), [self.result.duration]])
        long_enough = np.diff(edges) >= np.diff(edges)[0] / 2
        moments = ((edges[:-1] + edges[1:]) / 2)[long_enough]
        index = np.searchsorted(self.samples["t"].to_numpy(), moments, side="right") - 1
        counts = self.samples.iloc[np.maximum(index, 0)][["held_requests", "open_connections"]]
        return counts.assign(t=moments).reset_index(drop=True)[["t", "held_requests", "open_connections"]]


@on_lab_loop(expected=lambda kwargs: kwargs.get("duration", 2.0) + 1.5)
async def run_waiting_clients(clients: int = 300, *, rate: float = 1.0, duration: float = 2.0,
                              hold: float = 20.0) -> WaitingClients:
    """Many long-polling clients on a slow feed: count held requests and open connections as it runs."""
    held = _HeldLog()
    origin = {}

    async def note_start(run: Run) -> None:
        origin["feed"] = run.feed.started or time.monotonic()

    result = await _long_polling(Workload(rate, clients, duration), hold=hold, batch=0.0, use_cursor=True,
                                 held=held, scenario=note_start)
    return WaitingClients(result, held.samples(result, origin["feed"]))


@dataclass
class _HeldLog(longpolling.Held):
    """``Held``, keeping every change: a sampler on the loop that 300 clients keep busy wakes too
    rarely to see the long quiet stretches, so the counts are rebuilt from the changes instead."""

    changes: list = field(default_factory=list)  # (time.monotonic(), requests held after the change)

    def add(self) -> None:
        super().add()
        self.changes.append((time.monotonic(), self.now))

    def remove(self) -> None:
        super().remove()
        self.changes.append((time.monotonic(), self.now))

    def samples(self, result: Result, started: float) -> pd.DataFrame:
        """Held requests and open connections (from the wire meter's table) at every change."""
        held_at = np.array([t - started for t, _ in self.changes])
        held = np.array([n for _, n in self.changes])
        opened = np.sort(result.connections["opened"].to_numpy())
        closed = np.sort(result.connections["closed"].dropna().to_numpy())
        times = np.unique(np.concatenate([[0.0], held_at, opened, closed]))
        times = times[(times >= 0) & (times <= result.duration)]
        index = np.searchsorted(held_at, times, side="right") - 1
        return pd.DataFrame({
            "t": times,
            "held_requests": np.where(index >= 0, held[np.maximum(index, 0)], 0),
            "open_connections": np.searchsorted(opened, times, side="right") - np.searchsorted(closed, times, side="right"),
        })


def _polling(workload: Workload, interval: float) -> Result:
    def client(url: str, recorder: Recorder):
        return polling.poll(url, recorder, interval=interval)

    return measure("polling", polling.handlers, client, workload, drain=interval + 2 * workload.latency + 0.05,
                   ready_first=False, interval=interval)


def _push(workload: Workload):
    return measure("push", push.handlers, push.listen, workload, drain=workload.latency + 0.1, ready_first=True)


def _crossover_group(rate: float, interval: float, batch: float, clients: int, duration: float) -> Awaitable[list]:
    """The three runs of one event rate, at the same time: polling, long polling, batched long polling."""
    workload = Workload(rate, clients, duration)
    return asyncio.gather(_polling(workload, interval),
                          _long_polling(workload, hold=20.0, batch=0.0, use_cursor=True),
                          _long_polling(workload, hold=20.0, batch=batch, use_cursor=True))


CROSSOVER_PATTERNS = ("polling", "long polling", "long polling, batched")


@dataclass(frozen=True)
class LongPollCrossover(Rows):
    """Periodic polling, long polling and batched long polling at each event rate: a row per
    (rate, pattern), and the rate where long polling starts to send more requests than polling."""

    rows: pd.DataFrame
    interval: float        # the periodic poller's interval (s)
    batch: float           # the batched server's window (s)
    crossover_rate: float  # events per second; NaN if the lines do not cross in the rates run

    def pivot(self, values: str) -> pd.DataFrame:
        """One column of the rows as a table: a row per rate, a column per pattern."""
        return self.rows.pivot(index="rate", columns="pattern", values=values)

    def _repr_html_(self) -> str:
        return self.rows.to_html(index=False)


@on_lab_loop(expected=lambda kwargs: kwargs.get("duration", 1.5) + 1.0)
async def run_crossover(rates: tuple[float, ...] = (1, 2, 5, 10, 20, 50), *, interval: float = 0.2,
                        batch: float = 0.1, clients: int = 2, duration: float = 1.5) -> LongPollCrossover:
    """Requests per second per client as the event rate rises: periodic polling, long polling, batched.

    Every run happens at once on its own server, so the whole table takes about one run's time.
    """
    if not rates or min(rates) <= 0:
        raise ValueError("rates must be positive events per second.")
    group = functools.partial(_crossover_group, interval=interval, batch=batch, clients=clients, duration=duration)
    rows = []
    for rate, runs in zip(rates, await asyncio.gather(*(group(rate) for rate in rates))):
        for pattern, run in zip(CROSSOVER_PATTERNS, runs):
            s = run.summary()
            rows.append({"rate": rate, "pattern": pattern, "requests_per_s_per_client": s["requests_per_s"] / clients,
                         "requests_per_event": requests_per_event(run),
                         "fewest_requests_per_event": fewest_requests_per_event(run), "latency_mean_ms": s["latency_mean_ms"],
                         "latency_p50_ms": s["latency_p50_ms"],
                         "missed_share": s["missed_share"]})
    table = pd.DataFrame(rows)
    return LongPollCrossover(table, interval, batch, crossover_rate(table))


def crossover_rate(table: pd.DataFrame) -> float:
    """The event rate where long polling starts to send more requests than periodic polling.

    Interpolated on a log scale between the two measured rates either side; NaN if the
    curves do not cross in the measured range.
    """
    wide = table.pivot(index="rate", columns="pattern", values="requests_per_s_per_client").sort_index()
    return crossing(wide.index, wide["long polling"] - wide["polling"])


@on_lab_loop(expected=lambda kwargs: kwargs.get("duration", 1.5) + 0.5 + kwargs.get("interval", 0.2))
async def run_side_by_side(*, latency: float = 0.0, rate: float = 10.0, interval: float = 0.2, clients: int = 3,
                           duration: float = 1.5, hold: float = 20.0) -> dict[str, Result]:
    """Long polling, periodic polling and push on the same workload and link, at the same time."""
    workload = Workload(rate, clients, duration, latency)
    names = ("long polling", "polling", "push")
    results = await asyncio.gather(_long_polling(workload, hold=hold, batch=0.0, use_cursor=True),
                                   _polling(workload, interval), _push(workload))
    return dict(zip(names, results))


@dataclass
class CrashOutcome:
    """Long-polling clients across a crash that took the server's in-memory feed with it."""

    new_events: int          # events the new server published (its numbering starts at 1)
    received: list[int]      # of them, how many each client received
    resets: list[int]        # how many times each client was told the numbering began again
    stopped: list[str]       # clients that gave up, and why

    def summary(self) -> dict:
        return {"events of the new server": self.new_events, "fewest received by a client": min(self.received),
                "clients told of the reset": sum(1 for r in self.resets if r), "clients that gave up": len(self.stopped)}


@on_lab_loop(expected=lambda kwargs: 1.5 + kwargs.get("down_for", 0.2) + kwargs.get("after", 10) / kwargs.get("rate", 50.0))
async def run_crash(*, before: int = 10, head_start: int = 0, after: int = 10, clients: int = 3,
                    down_for: float = 0.2, rate: float = 50.0) -> CrashOutcome:
    """Clients long-poll a server that publishes ``before`` events and crashes: its feed, kept only
    in memory, dies with it. The server that replaces it ``down_for`` s later starts a feed of its
    own, numbered from 1, with ``head_start`` events already published when it comes up (ahead of
    the clients' cursors when ``head_start > before``), then publishes ``after`` more at ``rate``."""
    if not (0 <= before <= 1000 and 0 <= head_start <= 1000 and 1 <= after <= 1000):
        raise ValueError("before and head_start must be 0 to 1000 events, after 1 to 1000.")
    if not 0 <= down_for <= 5:
        raise ValueError(f"down_for must be between 0 and 5 s, not {down_for!r}.")
    recorders = [Recorder(i) for i in range(clients)]
    old_feed = Feed(rate)
    old = Routes(f"long-polling-crash-{next(_crashes)}", longpolling.handlers(old_feed, hold=5.0))
    async with metered(old) as meter:
        tasks = [asyncio.create_task(longpolling.long_poll(meter.url, r)) for r in recorders]
        new = Routes(f"{old.name}-after", [])
        try:
            await all_connected(meter, clients, tasks)
            await _publish(old_feed, before, rate)
            await all_caught_up(recorders, before, 2.0)
            await old.stop()                              # the crash: connections and feed are gone
            crashed = time.monotonic()
            await asyncio.sleep(down_for)
            feed = Feed(rate)
            for _ in range(head_start):
                feed.publish()
            new.handlers = longpolling.handlers(feed, hold=5.0)
            await new.start()
            meter.target_port = new.port
            await _publish(feed, after, rate)
            await all_caught_up(recorders, feed.last_seq, 2.0 + 2 * down_for)
            stopped = [f"client {r.client}: {type(t.exception()).__name__}: {t.exception()}"
                       for r, t in zip(recorders, tasks) if t.done() and not t.cancelled() and t.exception()]
        finally:
            await cancel_all(tasks)
            await new.stop()
    received = [len({seq for seq, at in r.seen if at > crashed and 1 <= seq <= feed.last_seq}) for r in recorders]
    return CrashOutcome(feed.last_seq, received, [len(r.resets) for r in recorders], stopped)


_crashes = itertools.count(1)


async def _publish(feed: Feed, events: int, rate: float) -> None:
    for _ in range(events):
        feed.publish()
        await asyncio.sleep(1 / rate)
