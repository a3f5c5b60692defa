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
import json
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass

import aiohttp
import numpy as np
import pandas as pd

from ..feed import STREAM_BYTES, Event
from ..lab import LabError, cancel_all, on_lab_loop
from ..patterns import longpolling, polling, sse
from ..record import Recorder
from ..results import Result, Rows
from ..wire import WireCounts
from .choosing_stage import arriving, backend_for, client_for, poll_after
from .core import READY_TIMEOUT, Workload, crossing, established, measure, raise_client_failure, served
from .polling import poll_heads
from .sse import chunk_framing_bytes, sse_framing_bytes

PATTERNS = ("polling", "long polling", "sse", "websocket", "pub/sub")
PUSH_PATTERNS = ("sse", "websocket", "pub/sub")
MEMORY_COUNTS = (0, 50, 100, 150)   # held connections per step; modest, as some systems allow 256 open files
BROKER_CPU_TICK = 0.01                # the broker's CPU time, read from outside, counts in clock ticks
CATCH_UP = 2.0                       # seconds a late event may take and still count as delivered, not missed


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

    def held_in_window(self) -> pd.Series:
        """How long each connection was open while the feed ran, in seconds."""
        c, end = self.result.connections, self.result.duration
        opened = c["opened"].clip(0, end)
        closed = c["closed"].fillna(end).clip(0, end)
        return (closed - opened).clip(lower=0)

    def per_client_second(self) -> dict:
        """Requests, bytes and connections held (on average while the feed ran), per client and per
        second of the feed; and the longest one connection stayed open."""
        scale = self.result.clients * self.result.duration
        held = self.held_in_window()
        return {"requests": self.requests_in_window() / scale, "bytes": self.window.bytes_total / scale,
                "connections_held": float(held.sum()) / scale, "longest_held_s": float(held.max()) if len(held) else 0.0}


async def _run_in_own_process(pattern: str, workload: Workload, *, interval: float, hold: float) -> PatternRun:
    """Run one pattern with its server in a process of its own (or the broker) and measure it.

    Every client holds its connection before the first event, so the window measures serving,
    not arriving; a stream starts listening from "now", so its clients are in place first.
    """
    backend = backend_for(pattern, workload, hold)
    subject = backend.subject if pattern == "pub/sub" else ""
    client = arriving(client_for(pattern, interval=interval, subject=subject), workload.clients)
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
    """Every pattern on one workload: the runs and one tidy table (``plots.comparison`` draws it)."""

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


async def _memory_ramp(pattern: str, backend, counts: tuple[int, ...]) -> list[dict]:
    client = _idle_keep_alive if pattern == "polling" else client_for(pattern, subject=getattr(backend, "subject", ""))
    url = f"http://127.0.0.1:{backend.port}"
    recorders: list[Recorder] = []
    tasks: list[asyncio.Task] = []
    rows = []
    try:
        for target in sorted(counts):
            new = [Recorder(i) for i in range(len(recorders), target)]
            recorders += new
            tasks += [asyncio.create_task(arriving(client, len(new))(url, r)) for r in new]
            await _held_by(backend, target + (pattern == "pub/sub"), tasks)  # the publisher holds one more
            if new:
                await asyncio.sleep(0.2)  # let the server finish setting up the last ones
            rows.append({"pattern": pattern, "connections": target, "rss_bytes": (await backend.usage()).rss_bytes})
    finally:
        await cancel_all(tasks)
    return rows


@dataclass(frozen=True)
class ConnectionMemory(Rows):
    """Each pattern's server memory at each count of idle connections held, and what one costs."""

    rows: pd.DataFrame                 # pattern, connections, rss_bytes, rss_mb
    per_connection: dict[str, float]   # pattern -> bytes: the slope of memory against connections

    def _repr_html_(self) -> str:
        return self.rows.to_html(index=False)


@on_lab_loop(expected=lambda kw: len(kw.get("patterns", PATTERNS)) * (1.0 + 0.006 * max(kw.get("counts", MEMORY_COUNTS))))
async def measure_connection_memory(*, patterns: tuple[str, ...] = PATTERNS,
                                    counts: tuple[int, ...] = MEMORY_COUNTS) -> ConnectionMemory:
    """Hold ever more idle connections to each pattern's server and read the server's memory (RSS).

    Each server runs in its own process, so its resident memory grows only with what it keeps
    for its clients. ``polling`` holds idle keep-alive connections (one poll each, then quiet);
    the others hold what they hold while waiting for news. Memory the kernel keeps for each
    socket comes on top and is not counted.
    """
    if not counts or min(counts) < 0 or max(counts) > 1000 or len(set(counts)) < 2:
        raise ValueError("counts must be at least two different connection counts between 0 and 1000.")
    workload = Workload(rate=1.0, clients=1, duration=1.0)
    # The feed never starts: connections stay idle. A fresh broker: one that served earlier runs reuses their memory.
    backends = [backend_for(p, workload, hold=60.0, fresh=True) for p in patterns]
    async with AsyncExitStack() as stack:
        # Started together (each server process takes about half a second to start) and ramped
        # together: each process's memory is its own, whoever else connects meanwhile.
        starts = [stack.enter_async_context(served(backend)) for backend in backends]
        failed = [out for out in await asyncio.gather(*starts, return_exceptions=True) if isinstance(out, BaseException)]
        if failed:
            raise failed[0]
        ramps = [asyncio.ensure_future(_memory_ramp(p, b, tuple(counts))) for p, b in zip(patterns, backends)]
        try:
            rows = [row for ramp in await asyncio.gather(*ramps) for row in ramp]
        finally:
            await cancel_all(ramps)
    table = pd.DataFrame(rows)
    table["rss_mb"] = table["rss_bytes"] / 1e6
    return ConnectionMemory(table, {
        p: float(np.polyfit(rows["connections"], rows["rss_bytes"], 1)[0]) for p, rows in table.groupby("pattern")})


# -- 2. where the curves cross ---------------------------------------------------------------

async def _sweep_run(pattern: str, rate: float, clients: int, interval: float, duration: float) -> PatternRun:
    workload = Workload(rate, clients, duration)
    if pattern == "cursor polling":
        # Chapter 3's cursor, asked on a clock: the server answers at once with every event after it.
        result = await measure("cursor polling", lambda feed: longpolling.handlers(feed, hold=0.0),
                               functools.partial(poll_after, interval=interval), workload, drain=interval + 0.05,
                               ready_first=False, connected_first=True, interval=interval)
    elif pattern.startswith("polling"):
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
class Crossover(Rows):
    """Polling against push (SSE) over event rates and client counts, per client and per second.

    The theory's byte counts come from the protocols' rules, never from this run or the server's
    own encoder: ``counted_poll_bytes`` (HTTP/1.1, as this client and server write a poll) and
    ``event_bytes`` (SSE and chunked encoding). ``poll_bytes`` is what the meter captured.
    """

    rows: pd.DataFrame        # one row per run: rate, clients, pattern, requests, bytes, connections_held,
                              # longest_held_s (the longest one connection stayed open), ...
    interval: float
    poll_bytes: float         # one poll without keep-alive, request and answer, as the wire meter captured it
    counted_poll_bytes: float  # the same poll, counted by HTTP's rules
    event_bytes: float        # one event on the stream, counted by the SSE and chunked-encoding rules

    @property
    def theory_rate(self) -> float:
        """Where push's bytes per second (r × event) reach polling's (poll / interval), by the rules' counts."""
        return self.counted_poll_bytes / (self.event_bytes * self.interval)

    def connections_held(self, pattern: str) -> float:
        """Connections held per client over every run of ``pattern``, each client weighted alike: one
        connection that closes late counts as one of all the pattern's, not half of a two-client run."""
        rows = self.rows[self.rows["pattern"] == pattern]
        return float((rows["connections_held"] * rows["clients"]).sum() / rows["clients"].sum())

    def crossover_rates(self) -> dict[int, float]:
        """Measured crossover in bytes, per client count: log-interpolated where the curves meet."""
        found = {}
        for clients, rows in self.rows.groupby("clients"):
            wide = rows.pivot(index="rate", columns="pattern", values="bytes").sort_index()
            found[int(clients)] = crossing(wide.index, np.log(wide["sse"] / wide["polling"]))
        return found

    def who_is_cheaper(self, measure_name: str = "bytes") -> pd.DataFrame:
        """A grid of event rate × clients: which pattern costs less of ``measure_name``."""
        wide = self.rows.pivot_table(index="clients", columns=["rate", "pattern"], values=measure_name)
        return pd.DataFrame({rate: np.where(wide[(rate, "sse")] < wide[(rate, "polling")], "push", "pull")
                             for rate in sorted(self.rows["rate"].unique())}, index=wide.index)


SWEEP_PATTERNS = ("polling", "polling, keep-alive", "cursor polling", "sse")


def _expected_sweep(kwargs: dict) -> float:
    return len(kwargs.get("rates", (1, 4, 16, 64))) * (kwargs.get("duration", 1.5) + kwargs.get("interval", 0.25) + 0.6)


async def _sweep_rate(rate: float, clients: tuple[int, ...], interval: float,
                      duration: float) -> tuple[list[tuple[str, int]], list[PatternRun]]:
    """The runs of one event rate, at the same time."""
    grid = [(p, n) for p in ("polling", "sse") for n in clients] + [(p, min(clients)) for p in
                                                                    ("polling, keep-alive", "cursor polling")]
    return grid, list(await asyncio.gather(*(_sweep_run(p, rate, n, interval, duration) for p, n in grid)))


@on_lab_loop(expected=_expected_sweep)
async def run_crossover_sweep(*, rates: tuple[float, ...] = (1, 4, 16, 64), clients: tuple[int, ...] = (2, 8),
                              interval: float = 0.25, duration: float = 1.5) -> Crossover:
    """Periodic polling (without and with keep-alive, and with a cursor) and SSE over every (event rate, client count).

    The runs of one event rate go at the same time, one rate after the other. All clients,
    meters and servers share the lab's one thread; a poll without keep-alive costs it a new
    connection at each end of the meter (about 1.5 ms of CPU), so running the whole grid at once
    asked for most of a core, and the pollers fell behind their clock.
    """
    if not rates or min(rates) <= 0 or not clients or min(clients) < 1:
        raise ValueError("rates must be positive events per second and clients at least 1.")
    if not 0.05 <= interval <= 10:
        raise ValueError(f"interval must be between 0.05 and 10 s, not {interval!r}.")
    if len(rates) * (2 * sum(clients) + 2 * min(clients)) > 1500:
        raise ValueError("That sweep would start more than 1500 clients in all: use fewer rates or clients.")
    rows, exchanges, events = [], [], 0
    for rate in rates:
        grid, runs = await _sweep_rate(rate, tuple(clients), interval, duration)
        for (pattern, n), run in zip(grid, runs):
            s = run.result.summary()
            rows.append({"rate": rate, "clients": n, "pattern": pattern, **run.per_client_second(),
                         "delivered_share": 1 - s["missed_share"], "missed": s["missed"],
                         "latency_mean_ms": s["latency_mean_ms"],
                         "bytes_per_delivered_event": run.window.bytes_total / max(run.deliveries_in_window(), 1),
                         "polls": run.requests_in_window(), "deliveries": run.deliveries_in_window(),
                         "window_bytes": run.window.bytes_total})
            if pattern == "polling":  # without keep-alive: one poll per connection
                exchanges += [len(up) + len(down) for up, down in run.result.heads if up and down]
            events = max(events, len(run.result.events))
    return Crossover(pd.DataFrame(rows), interval, poll_bytes=float(np.median(exchanges)),
                     event_bytes=mean_event_bytes(events), counted_poll_bytes=float(poll_exchange_bytes()))


# -- the theory's byte counts, from the protocols' rules ----------------------------------------

TYPICAL_VALUE = 100.01   # a ticker price near its start: 6 characters (99.99 and 100.1 take 5)


def _payload(seq: int, value: float = TYPICAL_VALUE) -> str:
    return json.dumps(Event(seq, 0.0, value).to_json())


def poll_exchange_bytes(seq: int = 10) -> int:
    """One poll without keep-alive, request and answer: the heads as this client and server write them
    (``polling.poll_heads``), each with its ``Connection: close`` line (RFC 9112 9.6), and the event's
    JSON. A price of 5 characters or a one-digit ``seq`` makes it a byte or two shorter."""
    payload = len(_payload(seq))
    up, down = poll_heads(payload)
    return up + down + 2 * len("Connection: close\r\n") + payload


def cursor_poll_bytes(cursor: int = 10) -> int:
    """One poll with a cursor that finds no news, request and answer: the heads of a poll (``poll_heads``)
    with ``/events?after=<cursor>`` for ``/latest``, and the answer ``{"events": []}``."""
    payload = len(json.dumps({"events": []}))
    up, down = poll_heads(payload)
    return up + len(f"/events?after={cursor}") - len("/latest") + down + payload


def cursor_event_bytes(seq: int) -> int:
    """What one more event adds to a cursor poll's answer: its JSON and the ``", "`` before it."""
    return len(_payload(seq)) + len(", ")


def framed_event_bytes(seq: int, value: float = TYPICAL_VALUE) -> int:
    """Bytes one event takes on an SSE stream, by the format's rules (WHATWG HTML 9.2.5: ``id:``, ``data:``
    and the blank line) and chunked encoding's (RFC 9112 7.1), not by the server's encoder."""
    sse = sse_framing_bytes(f"{'0' * 2 * STREAM_BYTES}-{seq}") + len(_payload(seq, value))  # the stream's life, seq
    return sse + chunk_framing_bytes(sse)


def mean_event_bytes(events: int) -> float:
    """The mean of ``framed_event_bytes`` over a run's events, numbered 1 to ``events``."""
    return float(np.mean([framed_event_bytes(seq) for seq in range(1, max(events, 1) + 1)]))
