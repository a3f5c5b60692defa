"""Chapter 7's experiments: every pattern on one workload, where pull and push cross, scale on paper.

Three questions, each with its own part of this module:

1. **One workload, every pattern.** ``run_all_patterns`` starts short polling, long polling,
   Server-Sent Events and WebSockets, each server in a process of its own (see
   ``server_process.py``) with the same feed settings, plus a NATS subscription through the
   broker (the queue as a fan-out). The same number of clients per pattern connect through a
   wire meter. All five run at the same time, so a busy machine slows them alike. The server's
   CPU time is read from the operating system for the server's process alone.
2. **Where the curves cross.** ``run_crossover_sweep`` runs periodic polling and SSE over a grid
   of event rates and client counts and measures, per client and second, requests, bytes and
   connections held, in the window while the feed runs.
3. **Scale on paper.** ``unit_costs`` turns the measurements into costs per request, per
   delivered event and per held connection; ``project`` multiplies them out to any number of
   clients, with every assumption named in its arguments.

``recommend`` is the decision guide: it filters the patterns a need rules out, then picks the
cheapest of the rest by the projected cost.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import math
import random
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import aiohttp
import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import psutil
from IPython.display import display
from plotly.subplots import make_subplots

from ..feed import Event, Feed
from ..lab import LabError, on_lab_loop
from ..patterns import longpolling, polling, sse
from ..patterns import websocket as ws
from ..patterns.sse_codec import encode_event
from ..plots import mark_x, tidy_log_axes
from ..record import Recorder
from ..results import Result
from ..server_process import ServerProcess, Usage
from ..wire import Link, WireCounts, WireMeter
from .core import CAPTURE_BYTES, LOG_BYTES, READY_TIMEOUT, Run, Workload, all_ready, cancel_all, raise_client_failure, measure

PATTERNS = ("polling", "long polling", "sse", "websocket", "queue")
PUSH_PATTERNS = ("sse", "websocket", "queue")
COLOURS = {"polling": "#7f7f7f", "long polling": "#ff7f0e", "sse": "#1f77b4", "websocket": "#2ca02c",
           "queue": "#9467bd"}
MEMORY_COUNTS = (0, 50, 100, 150)   # held connections per step; modest, as some systems allow 256 open files
ARRIVAL_SPREAD = 0.002               # seconds per client over which clients first connect
QUEUE_CPU_TICK = 0.01                # the broker's CPU time, read from outside, counts in clock ticks
_subjects = itertools.count(1)


# -- the clients, one per pattern (the chapters' own clients) --------------------------------

def _client(pattern: str, *, interval: float = 1.0, subject: str = "") -> Callable[[str, Recorder], Awaitable[None]]:
    """The pattern's own client (the one its chapter shows), with this run's settings."""
    if pattern == "polling":
        return functools.partial(polling.poll, interval=interval)
    if pattern == "queue":
        return functools.partial(subscribe, subject=subject)
    return {"long polling": longpolling.long_poll, "sse": sse.listen, "websocket": ws.follow}[pattern]


async def _arrive(client, url: str, recorder: Recorder, clients: int) -> None:
    """Start ``client`` after a random pause: clients arrive spread out, as page loads do, so a
    burst of connects does not overflow the server's listen backlog (see chapter 3)."""
    await asyncio.sleep(random.uniform(0, ARRIVAL_SPREAD * clients))
    await client(url, recorder)


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
        await client.close()


# -- where the events come from: a server process, or the broker -------------------------------

class _QueueBackend:
    """The queue as a fan-out: a publisher on the lab loop sends each feed event to the broker,
    which delivers it to every subscriber. The server measured is the broker process."""

    def __init__(self, rate: float, arrivals: str, seed: int | None) -> None:
        self.feed = Feed(rate, arrivals=arrivals, seed=seed)
        self.subject = f"choosing.feed.{next(_subjects)}"
        self._task: asyncio.Task | None = None

    async def start(self) -> "_QueueBackend":
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
        await self.publisher.close()


async def _backend(pattern: str, workload: Workload, hold: float):
    if pattern == "queue":
        return await _QueueBackend(workload.rate, workload.arrivals, workload.seed).start()
    options = {"hold": hold} if pattern == "long polling" else {}
    return await ServerProcess(pattern, rate=workload.rate, arrivals=workload.arrivals, seed=workload.seed,
                               options=options).start()


# -- one pattern, one run ------------------------------------------------------------------------

@dataclass
class PatternRun:
    """One pattern's run: the usual ``Result`` plus what happened while the feed ran.

    ``window`` is the wire meter's counts over exactly the feed's ``duration`` (connection set-up
    before it is left out, so a stream's handshake does not weigh on a 2-second run as it would
    not on a 2-hour one). ``server_cpu_s`` is the server process's CPU time over the same window,
    ``None`` when the server ran on the lab loop and cannot be told apart.
    """

    result: Result
    window: WireCounts
    server_cpu_s: float | None = None
    server_rss: int | None = None
    cpu_tick_s: float = 0.0   # how finely the CPU time was counted (the broker's: 10 ms ticks)

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


def _window(start: WireCounts, end: WireCounts) -> WireCounts:
    return WireCounts(end.connections_opened - start.connections_opened, end.open_now, end.peak_open,
                      end.bytes_up - start.bytes_up, end.bytes_down - start.bytes_down)


async def _run_with_process(pattern: str, workload: Workload, *, interval: float, hold: float) -> PatternRun:
    """Run one pattern with its server in a process of its own (or the broker) and measure it."""
    backend = await _backend(pattern, workload, hold)
    client = _client(pattern, interval=interval, subject=getattr(backend, "subject", ""))
    ready_first = pattern in PUSH_PATTERNS  # a stream starts listening from "now": connect first
    link = Link(latency=workload.latency)
    meter = await WireMeter(backend.port, capture=CAPTURE_BYTES, up=link, down=link, log_bytes=LOG_BYTES).start()
    recorders = [Recorder(i) for i in range(workload.clients)]
    tasks = [asyncio.create_task(_arrive(client, meter.url, r, workload.clients)) for r in recorders]
    try:
        await _held_by(backend, workload.clients, tasks)  # every client connected before the first event:
        if ready_first:                                   # the window measures serving, not arriving
            await all_ready(recorders, tasks)
        first, before = meter.counts(), await backend.usage()
        started = await backend.start_feed(workload.duration)
        await asyncio.sleep(max(0.0, started + workload.duration - time.monotonic()))
        last, after = meter.counts(), await backend.usage()
        await asyncio.sleep(_drain(pattern, workload, interval))
        raise_client_failure(tasks)
        events = await backend.events()
    finally:
        await cancel_all(tasks)
        counts = meter.counts()
        await meter.stop()
        await backend.stop()
    settings = {**workload.__dict__, "interval": interval if pattern == "polling" else None,
                "server": "own process" if pattern != "queue" else "nats-server"}
    result = Result.build(pattern, settings, events, recorders, meter.connections, counts, started, workload.duration)
    return PatternRun(result, _window(first, last), after.cpu_seconds - before.cpu_seconds, after.rss_bytes,
                      cpu_tick_s=QUEUE_CPU_TICK if pattern == "queue" else 0.0)


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
    server runs in its own process (the queue's is the NATS broker), so its CPU time is its own.
    """
    unknown = set(patterns) - set(PATTERNS)
    if unknown or not patterns:
        raise ValueError(f"patterns must be chosen from {PATTERNS}, not {tuple(patterns)!r}.")
    if not 0.01 <= interval <= 60:
        raise ValueError(f"interval must be between 0.01 and 60 s, not {interval!r}.")
    workload = Workload(rate, clients, duration, latency, arrivals, "ticker", seed)
    runs = await asyncio.gather(*(_run_with_process(p, workload, interval=interval, hold=hold) for p in patterns))
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


def _established(pid: int, port: int) -> int:
    """Connections the operating system shows as established on the server's port."""
    return sum(1 for c in psutil.Process(pid).net_connections(kind="tcp")
               if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED)


async def _held_by(backend, target: int, tasks: list[asyncio.Task]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while _established(backend.pid, backend.port) < target:
        raise_client_failure(tasks)
        if time.monotonic() > deadline:
            raise LabError(f"Only {_established(backend.pid, backend.port)} of {target} connections were open "
                           f"after {READY_TIMEOUT:.0f} s. Try fewer.")
        await asyncio.sleep(0.05)


async def _memory_ramp(pattern: str, counts: tuple[int, ...]) -> list[dict]:
    workload = Workload(rate=1.0, clients=1, duration=1.0)
    backend = await _backend(pattern, workload, hold=60.0)  # the feed never starts: connections stay idle
    client = _idle_keep_alive if pattern == "polling" else _client(pattern, subject=getattr(backend, "subject", ""))
    url = f"http://127.0.0.1:{backend.port}"
    recorders: list[Recorder] = []
    tasks: list[asyncio.Task] = []
    rows = []
    try:
        for target in sorted(counts):
            new = [Recorder(i) for i in range(len(recorders), target)]
            recorders += new
            tasks += [asyncio.create_task(_arrive(client, url, r, len(new))) for r in new]
            await _held_by(backend, target, tasks)
            await asyncio.sleep(0.2)  # let the server finish setting up the last ones
            rows.append({"pattern": pattern, "connections": target, "rss_bytes": (await backend.usage()).rss_bytes})
    finally:
        await cancel_all(tasks)
        await backend.stop()
    return rows


@on_lab_loop(expected=lambda kw: 3.0 + 0.004 * max(kw.get("counts", MEMORY_COUNTS)) * len(kw.get("patterns", PATTERNS)))
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
    tables = await asyncio.gather(*(_memory_ramp(p, tuple(counts)) for p in patterns))
    table = pd.DataFrame([row for rows in tables for row in rows])
    table["rss_mb"] = table["rss_bytes"] / 2 ** 20
    table.attrs["per_connection"] = {
        p: float(np.polyfit(rows["connections"], rows["rss_bytes"], 1)[0]) for p, rows in table.groupby("pattern")}
    return table


# -- 2. where the curves cross ---------------------------------------------------------------

async def _sweep_run(pattern: str, rate: float, clients: int, interval: float, duration: float) -> PatternRun:
    marks: dict[str, WireCounts] = {}

    async def window(run: Run) -> None:
        marks["start"] = run.meter.counts()
        await asyncio.sleep(duration)
        marks["end"] = run.meter.counts()

    workload = Workload(rate, clients, duration)
    if pattern == "polling":
        # No keep-alive: real pollers ask less often than servers keep an idle connection open.
        def client(url: str, recorder: Recorder):
            return polling.poll(url, recorder, interval=interval, keep_alive=False)
        result = await measure("polling", polling.handlers, client, workload, drain=interval + 0.05,
                               ready_first=False, scenario=window, interval=interval, keep_alive=False)
    else:
        result = await measure("sse", lambda feed: sse.handlers(feed, heartbeat=None), sse.listen, workload,
                               drain=0.1 + clients / 1000, ready_first=True, scenario=window)
    return PatternRun(result, _window(marks["start"], marks["end"]))


@dataclass
class Crossover:
    """Polling against push (SSE) over event rates and client counts, per client and per second."""

    table: pd.DataFrame       # one row per run: rate, clients, pattern, requests, bytes, connections_held, ...
    interval: float
    poll_bytes: float         # one poll, request and answer, as the wire meter captured it
    event_bytes: float        # one event on the stream, by the SSE and chunked-encoding framing rules

    @property
    def theory_rate(self) -> float:
        """Where push's bytes per second (r × event) reach polling's (poll / interval)."""
        return self.poll_bytes / (self.event_bytes * self.interval)

    def crossover_rates(self) -> dict[int, float]:
        """Measured crossover in bytes, per client count: log-interpolated where the curves meet."""
        found = {}
        for clients, rows in self.table.groupby("clients"):
            wide = rows.pivot(index="rate", columns="pattern", values="bytes").sort_index()
            gap = np.log(wide["sse"] / wide["polling"]).to_numpy()
            rates = wide.index.to_numpy(dtype=float)
            found[int(clients)] = float("nan")
            for i in range(len(gap) - 1):
                if gap[i] < 0 <= gap[i + 1]:
                    share = -gap[i] / (gap[i + 1] - gap[i])
                    found[int(clients)] = float(rates[i] * (rates[i + 1] / rates[i]) ** share)
                    break
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
        fig.update_layout(title=f"{labels[measure_name]} (polling every {self.interval:g} s, no keep-alive)",
                          xaxis_title="events per second", yaxis_title=labels[measure_name], xaxis_type="log",
                          yaxis_type="log" if measure_name in ("bytes", "requests") else "linear", height=380,
                          margin=dict(l=10, r=10, t=50, b=40))
        return tidy_log_axes(fig)

    def who_is_cheaper(self, measure_name: str = "bytes") -> pd.DataFrame:
        """A grid of event rate × clients: which pattern costs less of ``measure_name``."""
        wide = self.table.pivot_table(index="clients", columns=["rate", "pattern"], values=measure_name)
        return pd.DataFrame({rate: np.where(wide[(rate, "sse")] < wide[(rate, "polling")], "push", "pull")
                             for rate in sorted(self.table["rate"].unique())}, index=wide.index)


def _expected_sweep(kwargs: dict) -> float:
    return kwargs.get("duration", 1.5) + kwargs.get("interval", 0.25) + 1.5


@on_lab_loop(expected=_expected_sweep)
async def run_crossover_sweep(*, rates: tuple[float, ...] = (1, 4, 16, 64), clients: tuple[int, ...] = (4, 16),
                              interval: float = 0.25, duration: float = 1.5) -> Crossover:
    """Periodic polling and SSE over every (event rate, client count), all runs at the same time.

    Each run has its own server; what the sweep compares are counts (requests, bytes,
    connections) over the feed's window, which do not depend on how fast the machine is.
    """
    if not rates or min(rates) <= 0 or not clients or min(clients) < 1:
        raise ValueError("rates must be positive events per second and clients at least 1.")
    if sum(clients) * len(rates) * 2 > 1500:
        raise ValueError("That sweep would hold more than 1500 clients at once: use fewer rates or clients.")
    grid = [(p, r, n) for r in rates for n in clients for p in ("polling", "sse")]
    runs = await asyncio.gather(*(_sweep_run(p, r, n, interval, duration) for p, r, n in grid))
    rows = []
    for (pattern, rate, n), run in zip(grid, runs):
        s = run.result.summary()
        rows.append({"rate": rate, "clients": n, "pattern": pattern, **run.per_client_second(),
                     "delivered_share": 1 - s["missed_share"], "missed": s["missed"],
                     "latency_mean_ms": s["latency_mean_ms"],
                     "bytes_per_delivered_event": run.window.bytes_total / max(run.deliveries_in_window(), 1),
                     "polls": run.requests_in_window(), "deliveries": run.deliveries_in_window(),
                     "window_bytes": run.window.bytes_total})
    exchanges = [len(up) + len(down) for (pattern, _, _), run in zip(grid, runs) if pattern == "polling"
                 for up, down in run.result.heads if up and down]  # without keep-alive: one poll per connection
    events = max(len(run.result.events) for run in runs)
    return Crossover(pd.DataFrame(rows), interval, poll_bytes=float(np.median(exchanges)),
                     event_bytes=float(np.mean([framed_event_bytes(seq) for seq in range(1, events + 1)])))


def framed_event_bytes(seq: int, value: float = 100.01) -> int:
    """Bytes one event takes on an SSE stream: its JSON, the ``id:``/``data:`` framing, the chunk framing."""
    framed = encode_event(json.dumps(Event(seq, 0.0, value).to_json()), id=str(seq))
    return len(framed) + len(f"{len(framed):x}\r\n") + 2


# -- 3. scale on paper ------------------------------------------------------------------------

KEEPALIVE_BYTES, KEEPALIVE_EVERY = 20, 30.0   # an SSE comment, a WebSocket ping/pong, a NATS PING/PONG
REFERENCE_SERVER = {"cores": 8, "memory_gb": 16, "network_gbit": 1.0}


def unit_costs(comparison: Comparison, memory: pd.DataFrame) -> pd.DataFrame:
    """Measured cost per unit of work, per pattern: what the projections multiply out.

    * bytes and server CPU per request (polling, long polling) or per delivered event (push);
    * set-up bytes per connection (a stream's handshake, paid once per client);
    * memory per held connection (slope of the server's RSS, from ``measure_connection_memory``).

    CPU time under three ticks of its clock is left as NaN (unknown): the broker's comes from
    the operating system in 10 ms ticks, too coarse to divide.
    """
    per_connection = memory.attrs["per_connection"]
    rows = {}
    for name, run in comparison.runs.items():
        pulls = name in ("polling", "long polling")
        units = run.requests_in_window() if pulls else run.deliveries_in_window()
        first = run.result.wire.bytes_total - run.window.bytes_total
        cpu_ms = 1000 * run.server_cpu_s / max(units, 1) if run.server_cpu_s > 3 * run.cpu_tick_s else float("nan")
        rows[name] = {
            "unit": "request" if pulls else "delivered event",
            "bytes_per_unit": run.window.bytes_total / max(units, 1),
            "cpu_ms_per_unit": cpu_ms,
            "setup_bytes_per_connection": 0.0 if pulls else first / max(run.result.wire.connections_opened, 1),
            "memory_kb_per_connection": per_connection.get(name, float("nan")) / 1024,
        }
    return pd.DataFrame(rows).T


def project(units: pd.DataFrame, *, clients: int, rate: float, interval: float, hold: float = 20.0,
            keep_alive_timeout: float = 5.0, server: dict = REFERENCE_SERVER) -> pd.DataFrame:
    """Bandwidth, request rate, memory and cores for ``clients`` clients, per pattern, on paper.

    The assumptions, all in the arguments: every client follows the same feed of ``rate``
    events per second; pollers ask every ``interval`` seconds and keep no idle connection when
    the interval is longer than ``keep_alive_timeout`` (servers drop idle connections after
    5 s (Apache) to 75 s (nginx)); a long-polling client makes one request per event and one
    per ``hold`` without news; a held stream sends a keepalive of ``KEEPALIVE_BYTES`` every
    ``KEEPALIVE_EVERY`` s; costs grow linearly (no batching, no compression, no HTTP/2); CPU is
    this Python server's, so cores are an upper bound for a compiled server and the ratios
    between patterns are what carry over; kernel socket memory is not counted. ``servers`` is
    how many ``server`` machines the busiest resource needs.
    """
    rows = {}
    for name, u in units.iterrows():
        if name == "polling":
            requests = clients / interval
            units_per_s, held = requests, clients if interval < keep_alive_timeout else 0
            standing = 0.0
        elif name == "long polling":
            requests = clients * (rate + 1 / hold)
            units_per_s, held, standing = requests, clients, 0.0
        else:
            requests = 0.0
            units_per_s, held = clients * rate, clients
            standing = clients * KEEPALIVE_BYTES / KEEPALIVE_EVERY
        bandwidth = units_per_s * u["bytes_per_unit"] + standing
        memory_gb = held * u["memory_kb_per_connection"] * 1024 / 1e9
        cores = units_per_s * u["cpu_ms_per_unit"] / 1000
        mbit = bandwidth * 8 / 1e6
        servers = max(cores / server["cores"], memory_gb / server["memory_gb"], mbit / 1000 / server["network_gbit"])
        if math.isnan(cores) or math.isnan(memory_gb):
            servers = float("nan")  # a cost that could not be measured: no total either
        rows[name] = {"clients": clients, "requests_per_s": requests, "bandwidth_mbit_s": mbit,
                      "held_connections": held, "memory_gb": memory_gb, "cores": cores, "servers": servers}
    return pd.DataFrame(rows).T


def cheaper_on_paper(units: pd.DataFrame, *, rates: tuple[float, ...], clients: tuple[int, ...], max_delay: float,
                     pull: str = "polling", push: str = "sse", **assumptions) -> pd.DataFrame:
    """A grid of clients × event rate: which of ``pull`` and ``push`` needs fewer servers, and by how much.

    Both deliver every event within ``max_delay`` seconds: the poller asks every
    ``min(max_delay, 1 / rate)`` seconds, so it neither waits too long nor skips events. Cells
    read like "push 3.2×": the winner, and the loser's cost over the winner's. Where both need
    under 1 % of one server, the choice does not matter and the cell says so.
    """
    cells = {}
    for rate in rates:
        column = {}
        for n in clients:
            cost = project(units.loc[[pull, push]], clients=n, rate=rate, interval=min(max_delay, 1 / rate),
                           **assumptions)["servers"]
            if cost.max() < 0.01:
                column[n] = "either (< 1 % of a server)"
            else:
                winner = "pull" if cost[pull] <= cost[push] else "push"
                column[n] = f"{winner} {cost.max() / cost.min():.1f}×"
        cells[rate] = column
    table = pd.DataFrame(cells)
    table.index.name, table.columns.name = "clients", "events per second"
    return table


# The classic figure: Lubbers & Greco, "HTML5 Web Sockets: A Quantum Leap in Scalability for the
# Web" (Kaazing, 2010, on websocket.org). A browser's poll carried 871 bytes of request and
# response headers; their use cases poll once a second; a WebSocket frame costs 2 bytes.
PUBLISHED_HEADER_BYTES, PUBLISHED_FRAME_BYTES = 871, 2


def header_traffic(clients: int, interval: float, header_bytes: float) -> float:
    """Megabits per second of header traffic alone: ``clients`` polls every ``interval`` s."""
    return clients * header_bytes * 8 / interval / 1e6


def published_comparison(poll_bytes: float) -> pd.DataFrame:
    """The published polling figures beside the same sums with this lab's measured bytes per poll."""
    rows = []
    for clients, interval in ((1_000, 1.0), (10_000, 1.0), (100_000, 1.0), (10_000, 60.0)):
        published = header_traffic(clients, interval, PUBLISHED_HEADER_BYTES)
        rows.append({"clients": clients, "poll every (s)": interval,
                     "published: 871 B headers (Mbit/s)": published,
                     "as the article prints it (2^20 bits)": published * 1e6 / 2 ** 20,
                     "this lab's poll (Mbit/s)": header_traffic(clients, interval, poll_bytes),
                     "WebSocket, 2 B frames, one message per interval (Mbit/s)":
                         header_traffic(clients, interval, PUBLISHED_FRAME_BYTES)})
    return pd.DataFrame(rows)


# -- 4. the decision guide --------------------------------------------------------------------

@dataclass(frozen=True)
class Need:
    """A workload described the way a product owner would: what moves, how fast, to whom."""

    name: str
    clients: int
    updates_per_minute: float          # how often the data changes
    max_delay_s: float                 # how late an update may show up
    two_way: bool = False              # clients send often too (chat, games)
    every_update_matters: bool = True  # False: only the latest value counts (a reading, a price board)
    background_work: bool = False      # work for another service to do later, nobody watching (emails)


CASES = (
    Need("weather panel", clients=50_000, updates_per_minute=0.1, max_delay_s=300, every_update_matters=False),
    Need("stock ticker", clients=100_000, updates_per_minute=600, max_delay_s=0.5),
    Need("news feed", clients=1_000_000, updates_per_minute=2, max_delay_s=5),
    Need("chat", clients=100_000, updates_per_minute=20, max_delay_s=0.3, two_way=True),
    Need("email jobs", clients=3, updates_per_minute=3000, max_delay_s=60, background_work=True),
)


@dataclass
class Recommendation:
    """The guide's answer: a pattern, why, and the projected cost of every candidate."""

    need: Need
    pattern: str
    reasons: list[str]
    costs: pd.DataFrame = field(default_factory=pd.DataFrame)

    def _repr_html_(self) -> str:
        why = "".join(f"<li>{r}</li>" for r in self.reasons)
        return f"<b>{self.need.name}: {self.pattern}</b><ul>{why}</ul>" + self.costs.round(3).to_html()


def recommend(need: Need, units: pd.DataFrame, *, keep_alive_timeout: float = 5.0,
              server: dict = REFERENCE_SERVER) -> Recommendation:
    """Rule out what the need forbids, then take the cheapest remaining pattern by projected servers.

    The rules: background work for another service goes on a queue; clients that send often
    need a two-way connection (WebSocket); polling cannot show an update sooner than its
    interval, and skips updates when they come faster than it polls. The costs are
    ``project(...)`` with the measured ``units``; polling is costed at the interval the delay
    allows.
    """
    if need.background_work:
        return Recommendation(need, "queue", [
            "the work is for another service to do later, not for someone watching: producers hand jobs to a "
            "queue and carry on, the broker keeps them until a consumer acknowledges them (chapter 6)"])
    rate = need.updates_per_minute / 60
    interval = need.max_delay_s
    costs = project(units, clients=need.clients, rate=rate, interval=interval,
                    keep_alive_timeout=keep_alive_timeout, server=server)
    reasons, allowed = [], ["polling", "long polling", "sse", "websocket"]
    if need.two_way:
        allowed = ["websocket"]
        reasons.append("clients send often too: only a WebSocket carries both directions on one connection")
    elif need.every_update_matters and rate * interval > 1:
        allowed.remove("polling")
        reasons.append(f"updates come {rate * interval:.0f}× per allowed delay and every one matters: "
                       "polling that slowly would skip them")
    candidates = costs.loc[[p for p in allowed if p in costs.index]]
    best = candidates["servers"].idxmin()
    if not need.two_way:
        # For one direction, SSE does what a WebSocket does over plain HTTP: it wins a near tie.
        if best == "websocket" and candidates.loc["sse", "servers"] <= 1.05 * candidates.loc["websocket", "servers"]:
            best = "sse"
        reasons.append(f"cheapest of {', '.join(candidates.index)}: {candidates.loc[best, 'servers']:.3g} "
                       f"reference servers ({server['cores']} cores, {server['memory_gb']} GB) against "
                       + ", ".join(f"{p} {candidates.loc[p, 'servers']:.3g}" for p in candidates.index if p != best))
    return Recommendation(need, best, reasons, costs)


class DecisionPanel:
    """Describe a workload with sliders; ``run()`` (or the button) shows the guide's recommendation."""

    def __init__(self, units: pd.DataFrame) -> None:
        self.units = units
        self.controls = {
            "clients": widgets.IntText(value=10_000, description="clients"),
            "updates_per_minute": widgets.FloatLogSlider(value=1, base=10, min=-2, max=4, step=0.1,
                                                         description="updates per minute", continuous_update=False,
                                                         style={"description_width": "initial"}),
            "max_delay_s": widgets.FloatLogSlider(value=5, base=10, min=-1, max=3, step=0.1,
                                                  description="acceptable delay (s)", continuous_update=False,
                                                  style={"description_width": "initial"}),
            "two_way": widgets.Checkbox(value=False, description="clients send often too"),
            "every_update_matters": widgets.Checkbox(value=True, description="every update matters"),
            "background_work": widgets.Checkbox(value=False, description="background work for another service"),
        }
        self.button = widgets.Button(description="Recommend", button_style="primary")
        self.answer = widgets.HTML()  # not an Output widget: see labsupport/widgets.py
        self.button.on_click(lambda _: self.run())
        self.widget = widgets.VBox(list(self.controls.values()) + [self.button, self.answer])

    def need(self) -> Need:
        return Need("your workload", **{name: w.value for name, w in self.controls.items()})

    def run(self) -> Recommendation | None:
        try:
            answer = recommend(self.need(), self.units)
        except ValueError as problem:
            self.answer.value = f'<span style="color:#a11">Could not recommend for these settings: {problem}</span>'
            return None
        self.answer.value = answer._repr_html_()
        return answer

    def _ipython_display_(self) -> None:
        display(self.widget)


def guide(units: pd.DataFrame, cases: tuple[Need, ...] = CASES) -> pd.DataFrame:
    """The decision guide over the article's cases: one row each, with the reason."""
    rows = []
    for need in cases:
        answer = recommend(need, units)
        rows.append({"case": need.name, "clients": need.clients, "updates/min": need.updates_per_minute,
                     "delay allowed (s)": need.max_delay_s, "recommended": answer.pattern,
                     "why": "; ".join(answer.reasons)})
    return pd.DataFrame(rows).set_index("case")

