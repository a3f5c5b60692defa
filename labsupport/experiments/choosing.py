"""Chapter 7's experiments: every pattern on one workload, where pull and push cross, what waiting costs.

Three questions, each with its own part of this module:

1. **One workload, every pattern.** ``run_all_patterns`` starts short polling, long polling,
   Server-Sent Events and WebSockets, each server in a process of its own (see
   ``server_process.py``) with the same feed settings, plus a NATS subscription through the
   broker (core NATS publish/subscribe: at most once, nothing stored; not chapter 6's JetStream
   work queue). The same number of clients per pattern connect through a
   wire meter. All five run at the same time, so a busy machine slows them alike. The server's
   CPU time is read from the operating system for the server's process alone.
2. **Where the curves cross.** ``run_crossover_sweep`` runs periodic polling and SSE over a grid
   of event rates and client counts and measures, per client and second, requests, bytes and
   connections held, in the window while the feed runs.
3. **What a held connection costs.** ``measure_connection_memory`` holds ever more idle
   connections to each pattern's server and reads the server's memory.

The runs give the unit costs that ``labsupport.costs`` multiplies out on paper.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import random
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

import aiohttp
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import psutil
from plotly.subplots import make_subplots

from ..feed import Event, Feed
from ..lab import LAB_LATE_LIMIT, LabError, on_lab_loop
from ..patterns import longpolling, polling, sse
from ..patterns import websocket as ws
from ..patterns.sse_codec import encode_event
from ..plots import mark_x, tidy_log_axes
from ..record import Recorder
from ..results import Result
from ..server_process import ServerProcess, Usage
from ..wire import WireCounts
from .core import READY_TIMEOUT, Workload, cancel_all, crossing, established, measure, raise_client_failure

PATTERNS = ("polling", "long polling", "sse", "websocket", "pub/sub")
PUSH_PATTERNS = ("sse", "websocket", "pub/sub")
COLOURS = {"polling": "#7f7f7f", "polling, keep-alive": "#bcbd22", "long polling": "#ff7f0e", "sse": "#1f77b4", "websocket": "#2ca02c",
           "pub/sub": "#9467bd"}
MEMORY_COUNTS = (0, 50, 100, 150)   # held connections per step; modest, as some systems allow 256 open files
ARRIVAL_SPREAD = 0.002               # seconds per client over which clients first connect
BROKER_CPU_TICK = 0.01                # the broker's CPU time, read from outside, counts in clock ticks
CLOSE_TIMEOUT = 2.0                  # seconds a NATS client may take to close
CATCH_UP = 2.0                       # seconds a late event may take and still count as delivered, not missed
_subjects = itertools.count(1)


# -- the clients, one per pattern (the chapters' own clients) --------------------------------

def _client(pattern: str, *, interval: float = 1.0, subject: str = "") -> Callable[[str, Recorder], Awaitable[None]]:
    """The pattern's own client (the one its chapter shows), with this run's settings."""
    if pattern == "polling":
        return functools.partial(polling.poll, interval=interval)
    if pattern == "pub/sub":
        return functools.partial(subscribe, subject=subject)
    return {"long polling": longpolling.long_poll, "sse": sse.listen, "websocket": ws.follow}[pattern]


def _arriving(client, clients: int) -> Callable[[str, Recorder], Awaitable[None]]:
    """``client``, started after a random pause: clients arrive spread out, as page loads do, so a
    burst of connects does not overflow the server's listen backlog (see chapter 3)."""
    async def arrive(url: str, recorder: Recorder) -> None:
        await asyncio.sleep(random.uniform(0, ARRIVAL_SPREAD * clients))
        await client(url, recorder)
    return arrive


async def subscribe(base_url: str, recorder: Recorder, subject: str) -> None:
    """A NATS subscriber: one connection to the broker, every event on ``subject`` recorded."""
    from ..broker import connect

    sent = time.monotonic()
    client = await connect(base_url.replace("http://", "nats://"), f"client-{recorder.client}")
    try:
        subscription = await client.subscribe(subject)
        await client.flush()  # the broker has the subscription: from now on nothing passes us by
        recorder.request(sent, 0, 0)  # not an HTTP request: status 0 marks the subscription
        async for message in subscription.messages:
            recorder.saw(json.loads(message.data)["seq"])
    finally:
        await _close_soon(client)


async def _close_soon(client) -> None:
    """Close a NATS client, but give up after CLOSE_TIMEOUT: one whose read loop died (nats-py's
    does when a PONG answers a ping it had given up on, on a very busy machine) may never finish."""
    closing = asyncio.ensure_future(client.close())
    done, _ = await asyncio.wait({closing}, timeout=CLOSE_TIMEOUT)
    if not done:
        closing.cancel()


# -- where the events come from: a server process, or the broker -------------------------------

class _PubSubBackend:
    """Core NATS publish/subscribe as a fan-out: a publisher on the lab loop sends each feed event to the broker,
    which delivers it to every subscriber. The server measured is the broker process."""

    def __init__(self, rate: float, arrivals: str, seed: int | None) -> None:
        self.feed = Feed(rate, arrivals=arrivals, seed=seed)
        self.subject = f"choosing.feed.{next(_subjects)}"
        self._task: asyncio.Task | None = None

    async def start(self) -> "_PubSubBackend":
        from ..broker import connect, start_broker

        self.broker = await start_broker.coro("choosing")
        self.publisher = await connect(self.broker, "feed-publisher")
        self.port, self.pid = self.broker.port, self.broker.pid
        return self

    async def start_feed(self, duration: float) -> float:
        self.feed.start(duration)
        self._task = asyncio.create_task(self._publish())
        await asyncio.sleep(0)
        return self.feed.started

    async def _publish(self) -> None:
        cursor = 0
        while True:
            for event in await self.feed.wait_after(cursor):
                await self.publisher.publish(self.subject, json.dumps(event.to_json()).encode())
                cursor = event.seq

    async def finished(self) -> None:
        await self.feed.finished()

    async def events(self) -> list[Event]:
        return list(self.feed.events)

    async def usage(self) -> Usage:
        """The broker's CPU time and memory, from the operating system (CPU in 10 ms ticks on Linux)."""
        process = psutil.Process(self.pid)
        cpu = process.cpu_times()
        return Usage(cpu.user + cpu.system, process.memory_info().rss)

    async def stop(self) -> None:
        await self.feed.stop()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await _close_soon(self.publisher)


def _backend(pattern: str, workload: Workload, hold: float):
    """The pattern's server in a process of its own (pub/sub's is the broker), not started yet."""
    if pattern == "pub/sub":
        return _PubSubBackend(workload.rate, workload.arrivals, workload.seed)
    options = {"hold": hold} if pattern == "long polling" else {}
    return ServerProcess(pattern, rate=workload.rate, arrivals=workload.arrivals, seed=workload.seed,
                         options=options)


# -- one pattern, one run ------------------------------------------------------------------------

@dataclass
class PatternRun:
    """One pattern's run: its ``Result``, read over the feed's window alone.

    ``result.window`` is the wire meter's counts over exactly the feed's ``duration``
    (connection set-up before it is left out, so a stream's handshake does not weigh on a
    2-second run as it would not on a 2-hour one). ``server_cpu_s`` is the server process's CPU
    time over the same window, ``None`` when the server ran on the lab loop and cannot be told
    apart.
    """

    result: Result
    cpu_tick_s: float = 0.0   # how finely the CPU time was counted (the broker's: 10 ms ticks)

    @property
    def window(self) -> WireCounts:
        return self.result.window

    @property
    def server_cpu_s(self) -> float | None:
        return self.result.server_cpu_s

    @property
    def server_rss(self) -> int | None:
        return self.result.server_rss

    @property
    def pattern(self) -> str:
        return self.result.pattern

    def requests_in_window(self) -> int:
        sent = self.result.requests["sent"]
        return int(sent.between(0, self.result.duration).sum())

    def deliveries_in_window(self) -> int:
        return int(self.result.deliveries["seen"].between(0, self.result.duration).sum())

    def mean_open_connections(self) -> float:
        """Connections open on average while the feed ran (the time they were held, summed)."""
        c, end = self.result.connections, self.result.duration
        opened = c["opened"].clip(0, end)
        closed = c["closed"].fillna(end).clip(0, end)
        return float((closed - opened).clip(lower=0).sum() / end)

    def per_client_second(self) -> dict:
        """Requests, bytes and connections held, per client and per second of the feed."""
        scale = self.result.clients * self.result.duration
        return {"requests": self.requests_in_window() / scale, "bytes": self.window.bytes_total / scale,
                "connections_held": self.mean_open_connections() / self.result.clients}


async def _run_in_own_process(pattern: str, workload: Workload, *, interval: float, hold: float) -> PatternRun:
    """Run one pattern with its server in a process of its own (or the broker) and measure it.

    Every client holds its connection before the first event, so the window measures serving,
    not arriving; a stream starts listening from "now", so its clients are in place first.
    """
    backend = _backend(pattern, workload, hold)
    client = _arriving(_client(pattern, interval=interval, subject=backend.subject if pattern == "pub/sub" else ""),
                       workload.clients)
    result = await measure(pattern, None, client, workload, backend=backend, drain=_drain(pattern, workload, interval),
                           ready_first=pattern in PUSH_PATTERNS, connected_first=True, catch_up=CATCH_UP,
                           interval=interval if pattern == "polling" else None,
                           server="own process" if pattern != "pub/sub" else "nats-server")
    return PatternRun(result, cpu_tick_s=BROKER_CPU_TICK if pattern == "pub/sub" else 0.0)


def _drain(pattern: str, workload: Workload, interval: float) -> float:
    """How long clients may catch up after the last event: a poll interval, or a trip down."""
    return (interval if pattern == "polling" else 0.05) + 2 * workload.latency + workload.clients / 2000 + 0.05


# -- 1. one workload, every pattern ----------------------------------------------------------

@dataclass
class Comparison:
    """Every pattern on one workload: the runs, one tidy table, and the plots that compare them."""

    runs: dict[str, PatternRun]
    workload: Workload
    interval: float

    @property
    def results(self) -> dict[str, Result]:
        return {name: run.result for name, run in self.runs.items()}

    def table(self) -> pd.DataFrame:
        """One row per pattern: the figures C1 asks for, in the units a learner reads."""
        rows = {}
        for name, run in self.runs.items():
            s = run.result.summary()
            rows[name] = {
                "requests": s["requests"], "bytes up": s["bytes_up"], "bytes down": s["bytes_down"],
                "connections opened": s["connections_opened"], "connections held (peak)": s["peak_open_connections"],
                "latency p50 (ms)": s["latency_p50_ms"], "latency p99 (ms)": s["latency_p99_ms"],
                "events missed": s["missed"], "staleness mean (ms)": s["staleness_mean_ms"],
                "server CPU (ms)": 1000 * run.server_cpu_s,
            }
        return pd.DataFrame(rows).T.round(1)

    def plot(self) -> go.Figure:
        """Six panels side by side: requests, bytes, connections, latency, missed events, server CPU."""
        t = self.table()
        names = list(t.index)
        colours = [COLOURS.get(n, "#333") for n in names]
        fig = make_subplots(rows=2, cols=3, subplot_titles=(
            "requests", "bytes on the wire (up + down)", "connections held at once",
            "latency p50 and p99 (ms)", "events missed (client × event)", "server CPU time (ms)"))
        bars = [("requests", 1, 1), ("connections held (peak)", 1, 3), ("events missed", 2, 2),
                ("server CPU (ms)", 2, 3)]
        for column, row, col in bars:
            fig.add_bar(x=names, y=t[column], marker_color=colours, showlegend=False, row=row, col=col)
        fig.add_bar(x=names, y=t["bytes up"], name="up", marker_color="#aec7e8", row=1, col=2)
        fig.add_bar(x=names, y=t["bytes down"], name="down", marker_color="#1f77b4", row=1, col=2)
        fig.add_bar(x=names, y=t["latency p50 (ms)"], name="p50", marker_color="#98df8a", row=2, col=1)
        fig.add_bar(x=names, y=t["latency p99 (ms)"], name="p99", marker_color="#2ca02c", row=2, col=1)
        fig.update_layout(barmode="group", height=560, margin=dict(l=10, r=10, t=70, b=40),
                          title=f"One workload, every pattern: {self.workload.clients} clients, "
                                f"{self.workload.rate:g} events/s for {self.workload.duration:g} s "
                                f"(polling every {self.interval:g} s)")
        fig.update_yaxes(type="log", row=1, col=2)
        return tidy_log_axes(fig)

    def _repr_html_(self) -> str:
        return self.table().to_html()


def _expected_all(kwargs: dict) -> float:
    return kwargs.get("duration", 2.0) + kwargs.get("interval", 0.5) + 2.5


@on_lab_loop(expected=_expected_all)
async def run_all_patterns(*, rate: float = 4.0, clients: int = 20, duration: float = 2.0, interval: float = 0.5,
                           latency: float = 0.0, hold: float = 20.0, arrivals: str = "fixed", seed: int | None = 7,
                           patterns: tuple[str, ...] = PATTERNS) -> Comparison:
    """Every pattern under the same feed settings and the same clients, all at once.

    ``interval`` is the polling clients' interval; ``hold`` the long-polling server's. Each
    server runs in its own process (pub/sub's is the NATS broker), so its CPU time is its own.
    """
    unknown = set(patterns) - set(PATTERNS)
    if unknown or not patterns:
        raise ValueError(f"patterns must be chosen from {PATTERNS}, not {tuple(patterns)!r}.")
    if not 0.01 <= interval <= 60:
        raise ValueError(f"interval must be between 0.01 and 60 s, not {interval!r}.")
    workload = Workload(rate, clients, duration, latency, arrivals, "ticker", seed)
    runs = await asyncio.gather(*(_run_in_own_process(p, workload, interval=interval, hold=hold) for p in patterns))
    return Comparison(dict(zip(patterns, runs)), workload, interval)


# -- memory per held connection, in the server's own process ----------------------------------

async def _idle_keep_alive(base_url: str, recorder: Recorder) -> None:
    """One poll, then the connection stays open, idle, as keep-alive leaves it between polls."""
    async with aiohttp.ClientSession() as session:
        sent = time.monotonic()
        async with session.get(f"{base_url}/latest") as response:
            await response.read()
        recorder.request(sent, response.status, 0)
        await asyncio.Event().wait()


async def _held_by(backend, target: int, tasks: list[asyncio.Task]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while established(backend.port, backend.pid) < target:
        raise_client_failure(tasks)
        if time.monotonic() > deadline:
            raise LabError(f"Only {established(backend.port, backend.pid)} of {target} connections were open "
                           f"after {READY_TIMEOUT:.0f} s. Try fewer.")
        await asyncio.sleep(0.05)


async def _memory_ramp(pattern: str, counts: tuple[int, ...]) -> list[dict]:
    workload = Workload(rate=1.0, clients=1, duration=1.0)
    backend = await _backend(pattern, workload, hold=60.0).start()  # the feed never starts: connections stay idle
    client = _idle_keep_alive if pattern == "polling" else _client(pattern, subject=getattr(backend, "subject", ""))
    url = f"http://127.0.0.1:{backend.port}"
    recorders: list[Recorder] = []
    tasks: list[asyncio.Task] = []
    rows = []
    try:
        for target in sorted(counts):
            new = [Recorder(i) for i in range(len(recorders), target)]
            recorders += new
            tasks += [asyncio.create_task(_arriving(client, len(new))(url, r)) for r in new]
            await _held_by(backend, target + (pattern == "pub/sub"), tasks)  # the publisher holds one more
            await asyncio.sleep(0.2)  # let the server finish setting up the last ones
            rows.append({"pattern": pattern, "connections": target, "rss_bytes": (await backend.usage()).rss_bytes})
    finally:
        await cancel_all(tasks)
        await backend.stop()
    return rows


@on_lab_loop(expected=lambda kw: len(kw.get("patterns", PATTERNS)) * (1.0 + 0.006 * max(kw.get("counts", MEMORY_COUNTS))))
async def measure_connection_memory(*, patterns: tuple[str, ...] = PATTERNS,
                                    counts: tuple[int, ...] = MEMORY_COUNTS) -> pd.DataFrame:
    """Hold ever more idle connections to each pattern's server and read the server's memory (RSS).

    Each server runs in its own process, so its resident memory grows only with what it keeps
    for its clients. ``polling`` holds idle keep-alive connections (one poll each, then quiet);
    the others hold what they hold while waiting for news. ``table.attrs["per_connection"]``
    is the slope of memory against connections for each pattern, in bytes. Memory the kernel
    keeps for each socket comes on top and is not counted.
    """
    if not counts or min(counts) < 0 or max(counts) > 1000 or len(set(counts)) < 2:
        raise ValueError("counts must be at least two different connection counts between 0 and 1000.")
    rows = []
    for pattern in patterns:  # one at a time: hundreds of clients connecting at once would swamp the lab
        rows += await _memory_ramp(pattern, tuple(counts))
    table = pd.DataFrame(rows)
    table["rss_mb"] = table["rss_bytes"] / 2 ** 20
    table.attrs["per_connection"] = {
        p: float(np.polyfit(rows["connections"], rows["rss_bytes"], 1)[0]) for p, rows in table.groupby("pattern")}
    return table


# -- 2. where the curves cross ---------------------------------------------------------------

async def _sweep_run(pattern: str, rate: float, clients: int, interval: float, duration: float) -> PatternRun:
    workload = Workload(rate, clients, duration)
    if pattern.startswith("polling"):
        # Without keep-alive, as real pollers that ask less often than servers keep an idle connection;
        # with it, as pollers that ask more often.
        keep_alive = pattern == "polling, keep-alive"
        client = functools.partial(polling.poll, interval=interval, keep_alive=keep_alive)
        result = await measure("polling", polling.handlers, client, workload, drain=interval + 0.05,
                               ready_first=False, connected_first=keep_alive, interval=interval,
                               keep_alive=keep_alive)
    else:
        result = await measure("sse", lambda feed: sse.handlers(feed, heartbeat=None), sse.listen, workload,
                               drain=0.1 + clients / 1000, ready_first=True, catch_up=CATCH_UP)
    return PatternRun(result)


@dataclass
class Crossover:
    """Polling against push (SSE) over event rates and client counts, per client and per second."""

    table: pd.DataFrame       # one row per run: rate, clients, pattern, requests, bytes, connections_held, ...
    interval: float
    poll_bytes: float         # one poll, request and answer, as the wire meter captured it
    event_bytes: float        # one event on the stream, by the SSE and chunked-encoding framing rules
    lab_limit_ms: float = 50.0          # how late the lab loop may run before its counts are the machine's
    retried_rates: tuple[float, ...] = ()  # rates run twice because the lab fell behind the first time

    def lab_kept_up(self) -> bool:
        """Whether the lab loop stayed within ``lab_limit_ms`` in every run."""
        return bool((self.table["lab_late_ms"] <= self.lab_limit_ms).all())

    def lab_report(self) -> str:
        """One sentence for the learner: could the lab keep up, and what was done if not."""
        worst = self.table["lab_late_ms"].max()
        share = self.table["lab_cpu_share"].max()
        if self.lab_kept_up():
            told = f"The lab kept up: its loop ran at most {worst:.0f} ms late (limit {self.lab_limit_ms:.0f} ms)"
        else:
            told = (f"The lab could NOT keep up: its loop ran up to {worst:.0f} ms late (limit "
                    f"{self.lab_limit_ms:.0f} ms), so some counts are this machine's limit, not the pattern's. "
                    "Close other programs, or sweep fewer clients or rates")
        again = f"; rates {', '.join(f'{r:g}' for r in self.retried_rates)} were run twice" if self.retried_rates else ""
        return f"{told}, using up to {share:.0%} of one core{again}."

    @property
    def theory_rate(self) -> float:
        """Where push's bytes per second (r × event) reach polling's (poll / interval)."""
        return self.poll_bytes / (self.event_bytes * self.interval)

    def crossover_rates(self) -> dict[int, float]:
        """Measured crossover in bytes, per client count: log-interpolated where the curves meet."""
        found = {}
        for clients, rows in self.table.groupby("clients"):
            wide = rows.pivot(index="rate", columns="pattern", values="bytes").sort_index()
            found[int(clients)] = crossing(wide.index, np.log(wide["sse"] / wide["polling"]))
        return found

    def plot(self, measure_name: str = "bytes") -> go.Figure:
        """One measure against the event rate, a line per pattern and client count, theory dashed."""
        labels = {"bytes": "bytes per client per second", "requests": "requests per client per second",
                  "connections_held": "connections held per client", "delivered_share": "share of events delivered"}
        fig = go.Figure()
        most = self.table["clients"].max()
        for (pattern, clients), rows in self.table.groupby(["pattern", "clients"]):
            fig.add_scatter(x=rows["rate"], y=rows[measure_name], mode="lines+markers",
                            name=f"{pattern}, {clients} clients",
                            line=dict(color=COLOURS[pattern], dash="solid" if clients == most else "dot"))
        rates = np.array(sorted(self.table["rate"].unique()), dtype=float)
        if measure_name == "bytes":
            fig.add_scatter(x=rates, y=[self.poll_bytes / self.interval] * len(rates), mode="lines",
                            name="theory: poll bytes / interval", line=dict(color="#333", dash="dash", width=1))
            fig.add_scatter(x=rates, y=rates * self.event_bytes, mode="lines", name="theory: rate × event bytes",
                            line=dict(color="#1f77b4", dash="dash", width=1))
            mark_x(fig, self.theory_rate, f"theory: cross at {self.theory_rate:.1f} events/s", log_x=True, dash="dot")
        fig.update_layout(title=f"{labels[measure_name]} (polling every {self.interval:g} s)",
                          xaxis_title="events per second", yaxis_title=labels[measure_name], xaxis_type="log",
                          yaxis_type="log" if measure_name in ("bytes", "requests") else "linear", height=380,
                          margin=dict(l=10, r=10, t=50, b=40))
        return tidy_log_axes(fig)

    def who_is_cheaper(self, measure_name: str = "bytes") -> pd.DataFrame:
        """A grid of event rate × clients: which pattern costs less of ``measure_name``."""
        wide = self.table.pivot_table(index="clients", columns=["rate", "pattern"], values=measure_name)
        return pd.DataFrame({rate: np.where(wide[(rate, "sse")] < wide[(rate, "polling")], "push", "pull")
                             for rate in sorted(self.table["rate"].unique())}, index=wide.index)


SWEEP_PATTERNS = ("polling", "polling, keep-alive", "sse")


def _expected_sweep(kwargs: dict) -> float:
    return len(kwargs.get("rates", (1, 4, 16, 64))) * (kwargs.get("duration", 1.5) + kwargs.get("interval", 0.25) + 0.6)


async def _sweep_rate(rate: float, clients: tuple[int, ...], interval: float, duration: float,
                      limit: float) -> tuple[list[tuple[str, int]], list[PatternRun], bool]:
    """The runs of one event rate, at the same time; once more if the lab could not keep up."""
    grid = [(p, n) for p in ("polling", "sse") for n in clients] + [("polling, keep-alive", min(clients))]
    runs = await asyncio.gather(*(_sweep_run(p, rate, n, interval, duration) for p, n in grid))
    if max(run.result.lab_late for run in runs) <= limit:
        return grid, list(runs), False
    again = await asyncio.gather(*(_sweep_run(p, rate, n, interval, duration) for p, n in grid))
    better = min((runs, again), key=lambda rs: max(run.result.lab_late for run in rs))
    return grid, list(better), True


@on_lab_loop(expected=_expected_sweep)
async def run_crossover_sweep(*, rates: tuple[float, ...] = (1, 4, 16, 64), clients: tuple[int, ...] = (2, 8),
                              interval: float = 0.25, duration: float = 1.5) -> Crossover:
    """Periodic polling (without and with keep-alive) and SSE over every (event rate, client count).

    The runs of one event rate go at the same time, one rate after the other. All clients,
    meters and servers share the lab's one thread; a poll without keep-alive costs it a new
    connection at each end of the meter (about 1.5 ms of CPU), so running the whole grid at once
    asked for most of a core, more than a shared machine gives, and the pollers fell behind
    their clock. Each run watches how late the lab loop runs (``LoopWatch``). A poll takes a
    handful of loop passes (connect, relay, answer, relay back), so a loop a fifth of the
    interval late makes polls outlast the interval and the clock slip: a rate whose runs found
    the lab that far behind is run once more, and the table keeps ``lab_late_ms`` so that what
    remains is visible.
    """
    if not rates or min(rates) <= 0 or not clients or min(clients) < 1:
        raise ValueError("rates must be positive events per second and clients at least 1.")
    if not 0.05 <= interval <= 10:
        raise ValueError(f"interval must be between 0.05 and 10 s, not {interval!r}.")
    if len(rates) * (2 * sum(clients) + min(clients)) > 1500:
        raise ValueError("That sweep would start more than 1500 clients in all: use fewer rates or clients.")
    limit = min(LAB_LATE_LIMIT, interval / 5)
    rows, exchanges, retried, events = [], [], [], 0
    for rate in rates:
        grid, runs, again = await _sweep_rate(rate, tuple(clients), interval, duration, limit)
        if again:
            retried.append(rate)
        for (pattern, n), run in zip(grid, runs):
            s = run.result.summary()
            rows.append({"rate": rate, "clients": n, "pattern": pattern, **run.per_client_second(),
                         "delivered_share": 1 - s["missed_share"], "missed": s["missed"],
                         "latency_mean_ms": s["latency_mean_ms"],
                         "bytes_per_delivered_event": run.window.bytes_total / max(run.deliveries_in_window(), 1),
                         "polls": run.requests_in_window(), "deliveries": run.deliveries_in_window(),
                         "window_bytes": run.window.bytes_total, "lab_late_ms": 1000 * run.result.lab_late,
                         "lab_cpu_share": run.result.lab_cpu_share})
            if pattern == "polling":  # without keep-alive: one poll per connection
                exchanges += [len(up) + len(down) for up, down in run.result.heads if up and down]
            events = max(events, len(run.result.events))
    return Crossover(pd.DataFrame(rows), interval, poll_bytes=float(np.median(exchanges)),
                     event_bytes=float(np.mean([framed_event_bytes(seq) for seq in range(1, events + 1)])),
                     lab_limit_ms=1000 * limit, retried_rates=tuple(retried))


def framed_event_bytes(seq: int, value: float = 100.01) -> int:
    """Bytes one event takes on an SSE stream: its JSON, the ``id:``/``data:`` framing, the chunk framing."""
    framed = encode_event(json.dumps(Event(seq, 0.0, value).to_json()), id=str(seq))
    return len(framed) + len(f"{len(framed):x}\r\n") + 2
