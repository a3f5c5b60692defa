"""Speed and memory of the course, each figure beside a plain baseline doing the same work in the same run.

    python3 course.py bench                    # the table, also written to bench.json
    python3 course.py bench --json runs/a.json --repeat 3 --course-times

Tests never time anything; this is where speed lives. The course's figures come from its own
experiment functions, called exactly as a notebook calls them (servers, wire meter and clients
on the lab loop). Each baseline is written for the benchmark alone (``bench/``): a plain Tornado
server in one process and plain aiohttp clients in another, on the same workload. A busy machine
slows both, so the *ratio* course / baseline is the figure to read, and each has a target: the
largest (or, for throughput, the smallest) ratio the course accepts.

``--repeat N`` runs every pair N times and reports medians; ``--course-times`` also runs every
notebook headless and times it, ``--test-time`` the README's test command (minutes each);
``--skip`` leaves sections out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench import baseline
from bench.baseline import BaselineServer
from labsupport import LabError, lab
from labsupport.experiments.choosing import measure_connection_memory
from labsupport.experiments.connections import (PATTERNS as PUSH_PATTERNS, SPARE_FILES, Holding, allow_open_files,
                                                close_all, hold_idle_connections, open_idle, settled)
from labsupport.experiments.longpolling import run_long_polling
from labsupport.experiments.polling import poll_costs, run_polling
from labsupport.experiments.pull_push import measure_held_connections, run_push
from labsupport.experiments.sse import run_sse
from labsupport.experiments.websocket import run_websocket
from labsupport.server_process import Usage
from labsupport.wire import WireMeter

HERE = Path(__file__).resolve().parent
LATENCY_TARGET = 1.3     # latency p50 and p99 at most 1.3x the baseline's
POLLS_TARGET = 0.8       # polls answered per second at least 0.8x
METER_ADDED_US = 100     # the wire meter adds at most 100 µs to a round trip ...
METER_THROUGHPUT = 0.9   # ... and keeps at least 0.9x of direct throughput
MEMORY_TARGET = 1.5      # memory per held connection at most 1.5x plain Tornado's
CHAPTER_SECONDS = 30.0   # every notebook headless in 30 s (chapters 8 and 9: 60 s), all of them in 150 s
COURSE_SECONDS = 150.0
TEST_SECONDS = 240.0     # the README's test command in 4 minutes, once the environment exists

# (figure, course's call as a notebook makes it, the baseline's pattern and workload)
LATENCY_WORKLOADS = [
    ("polling every 0.5 s, 20 clients, 5 events/s", lambda: run_polling(0.5, rate=5, clients=20, duration=2),
     ("polling", dict(rate=5, clients=20, duration=2, interval=0.5, drain=0.55))),
    ("long polling, 20 clients, 5 events/s", lambda: run_long_polling(rate=5, clients=20, duration=2),
     ("long polling", dict(rate=5, clients=20, duration=2))),
    ("push, 1 client, 10 events/s", lambda: run_push(rate=10, clients=1, duration=2),
     ("push", dict(rate=10, clients=1, duration=2))),
    ("SSE fan-out, 300 clients, 5 events/s", lambda: run_sse(rate=5, clients=300, duration=2, backend="process"),
     ("sse", dict(rate=5, clients=300, duration=2))),
    ("SSE fan-out, 1,000 clients, 10 events/s",
     lambda: run_sse(rate=10, clients=1000, duration=2, backend="process"),
     ("sse", dict(rate=10, clients=1000, duration=2, drain=1.0))),
    ("WebSocket, 20 clients, 10 events/s", lambda: run_websocket(rate=10, clients=20, duration=2),
     ("websocket", dict(rate=10, clients=20, duration=2))),
]
MEMORY_PATTERNS = ("polling", "long polling", "sse", "websocket")
MEMORY_COUNTS = (0, 500, 1000)
HELD = 10_000


@dataclass
class Row:
    """One figure: the course's, the baseline's, and the ratio the course must stay within."""

    figure: str
    course: float
    baseline: float
    target: float | None     # the largest acceptable ratio (or the smallest, with at_least)
    at_least: bool = False
    baseline_is: str = "plain Tornado + aiohttp, own processes"

    @property
    def ratio(self) -> float:
        return self.course / self.baseline if self.baseline else float("nan")

    @property
    def holds(self) -> bool | None:
        if self.target is None:
            return None
        return self.ratio >= self.target if self.at_least else self.ratio <= self.target

    def as_json(self) -> dict:
        return {"figure": self.figure, "course": round(self.course, 4), "baseline": round(self.baseline, 4),
                "ratio": round(self.ratio, 4), "target": self.target,
                "target_is": None if self.target is None else ("min" if self.at_least else "max"),
                "holds": self.holds, "baseline_is": self.baseline_is}


def median_rows(runs: list[list[Row]]) -> list[Row]:
    """The median of each figure over repeated runs (course and baseline each; the ratio follows)."""
    merged = []
    for same in zip(*runs):
        first = same[0]
        merged.append(Row(first.figure, statistics.median(r.course for r in same),
                          statistics.median(r.baseline for r in same), first.target, first.at_least,
                          first.baseline_is))
    return merged


def write_json(rows: list[Row], path: Path, *, meta: dict | None = None) -> None:
    """The table as JSON: ``{"meta": {...}, "rows": [{figure, course, baseline, ratio, target, holds}, ...]}``."""
    path.write_text(json.dumps({"meta": meta or {}, "rows": [r.as_json() for r in rows]}, indent=1) + "\n")


def print_table(rows: list[Row]) -> None:
    width = max(len(r.figure) for r in rows)
    print(f"{'figure':<{width}}  {'course':>10}  {'baseline':>10}  {'ratio':>6}  {'target':>7}  holds")
    for r in rows:
        target = "" if r.target is None else ("≥ " if r.at_least else "≤ ") + f"{r.target:.2f}"
        holds = {True: "yes", False: "NO", None: ""}[r.holds]
        print(f"{r.figure:<{width}}  {r.course:>10.2f}  {r.baseline:>10.2f}  {r.ratio:>6.2f}  {target:>7}  {holds}",
              flush=True)


# -- the wire meter --------------------------------------------------------------------------

async def _round_trips(port: int, count: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        writer.write(b"ping")
        await reader.readexactly(4)
        times.append(time.perf_counter() - started)
    writer.close()
    return statistics.median(times)


async def _throughput(port: int, size: int = 16 * 2 ** 20) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    payload = b"x" * size
    started = time.perf_counter()

    async def send() -> None:
        writer.write(payload)
        await writer.drain()

    sender = asyncio.ensure_future(send())
    await reader.readexactly(size)
    await sender
    writer.close()
    return size / (time.perf_counter() - started)


async def _meter_figures(echo_port: int) -> tuple[float, float, float, float]:
    meter = await WireMeter(echo_port).start()
    try:
        direct_rtt, meter_rtt, direct_bps, meter_bps = [], [], [], []
        for _ in range(5):  # alternate, so a busy moment weighs on both
            direct_rtt.append(await _round_trips(echo_port, 400))
            meter_rtt.append(await _round_trips(meter.port, 400))
            direct_bps.append(await _throughput(echo_port))
            meter_bps.append(await _throughput(meter.port))
    finally:
        await meter.stop()
    return tuple(statistics.median(v) for v in (direct_rtt, meter_rtt, direct_bps, meter_bps))


def wire_meter() -> list[Row]:
    echo = subprocess.Popen([sys.executable, str(HERE / "bench" / "echo_server.py")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        port = json.loads(echo.stdout.readline())["port"]
        direct_rtt, meter_rtt, direct_bps, meter_bps = lab.run(_meter_figures(port))
    finally:
        echo.stdin.close()
        echo.wait(timeout=10)
    what = "direct to a TCP echo server in another process"
    return [Row("wire meter: round trip, 4 bytes (µs, median)", meter_rtt * 1e6, direct_rtt * 1e6,
                round(1 + METER_ADDED_US * 1e-6 / direct_rtt, 2), baseline_is=what + f" (+{METER_ADDED_US} µs allowed)"),
            Row("wire meter: throughput (MB/s)", meter_bps / 1e6, direct_bps / 1e6, METER_THROUGHPUT, at_least=True,
                baseline_is=what)]


# -- latency of every pattern, and polls per second ------------------------------------------

def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def latencies() -> list[Row]:
    rows = []
    for figure, course_run, (pattern, workload) in LATENCY_WORKLOADS:
        course = course_run().summary()
        base = baseline.run(pattern, **workload)["latencies"]
        rows.append(Row(f"{figure}: latency p50 (ms)", course["latency_p50_ms"], _pct(base, 50), LATENCY_TARGET))
        rows.append(Row(f"{figure}: latency p99 (ms)", course["latency_p99_ms"], _pct(base, 99), LATENCY_TARGET))
    return rows


def polls_per_second() -> list[Row]:
    """One client polling on keep-alive as fast as the course allows (every 10 ms): 1 / time per poll."""
    course = poll_costs(run_polling(0.01, rate=5, clients=1, duration=2))["time_per_poll_p50_ms"] / 1000
    base = statistics.median(baseline.run("polling", rate=5, clients=1, duration=2, interval=0.01)["poll_seconds"])
    return [Row("polls answered per second, one client on keep-alive (1 / median poll)", 1 / course, 1 / base,
                POLLS_TARGET, at_least=True)]


# -- memory per held connection --------------------------------------------------------------

async def _usage(server: BaselineServer) -> Usage:
    answer = server.usage()
    return Usage(answer["cpu"], answer["rss"])


async def _baseline_ramp(pattern: str, counts: tuple[int, ...], *, traced: bool = False) -> Holding:
    """What chapter 7's memory ramp measures, against the plain server: memory at each count held."""
    allow_open_files(max(counts) + SPARE_FILES)
    key = "traced" if traced else "rss"
    with BaselineServer(trace=traced) as server:
        writers, rows = [], []
        try:
            for target in sorted(counts):
                started = time.monotonic()
                writers += await open_idle(server.port, baseline.PATHS[pattern], target - len(writers),
                                           websocket=pattern == "websocket", held=pattern == "long polling")
                took = time.monotonic() - started
                await settled(lambda: _usage(server))
                rows.append({"connections": len(writers), "rss_bytes": server.usage()[key], "open_seconds": took})
        finally:
            close_all(writers)
    return Holding(pattern, pd.DataFrame(rows))


def memory() -> list[Row]:
    rows = []
    course = measure_connection_memory(patterns=MEMORY_PATTERNS, counts=MEMORY_COUNTS).per_connection
    for pattern in MEMORY_PATTERNS:
        base = lab.run(_baseline_ramp(pattern, MEMORY_COUNTS)).bytes_per_connection
        rows.append(Row(f"{pattern}: server memory per idle connection, up to 1,000 (kB, RSS)",
                        course[pattern] / 1000, base / 1000, MEMORY_TARGET))
    held = measure_held_connections(counts=(0, 200, 400)).bytes_per_connection
    base = lab.run(_baseline_ramp("push", (0, 200, 400), traced=True)).bytes_per_connection
    rows.append(Row("push (chapter 1): Python memory per held stream (kB, tracemalloc)", held / 1000, base / 1000,
                    MEMORY_TARGET))
    return rows


def ten_thousand(count: int = HELD) -> list[Row]:
    """Hold ``count`` idle connections of each push pattern: memory per connection and time to open them."""
    rows = []
    for pattern in PUSH_PATTERNS:
        course = hold_idle_connections(pattern, count)
        steps = tuple(int(n) for n in np.linspace(0, count, 5).round())
        base = lab.run(_baseline_ramp(pattern, steps))
        print(f"  {pattern}: course {course.summary()}", flush=True)
        print(f"  {pattern}: plain  {base.summary()}", flush=True)
        rows.append(Row(f"{count:,} idle {pattern}: server memory per connection (kB, RSS)",
                        course.bytes_per_connection / 1000, base.bytes_per_connection / 1000, MEMORY_TARGET))
        rows.append(Row(f"{count:,} idle {pattern}: seconds to open them", course.open_seconds, base.open_seconds,
                        None))
    return rows


# -- the course's own speed ------------------------------------------------------------------

def course_times() -> list[Row]:
    """Every notebook executed headless, as nbval runs it; each timed alone."""
    rows, total = [], 0.0
    for notebook in sorted((HERE / "notebooks").glob("[0-9]*.ipynb")):
        budget = 60.0 if notebook.name[:2] in ("08", "09") else CHAPTER_SECONDS
        started = time.monotonic()
        run = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                              "--stdout", str(notebook)], cwd=HERE / "notebooks", stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        took = time.monotonic() - started
        total += took
        if run.returncode:  # the time still counts; say what stopped it
            print(f"{notebook.name} stopped with an error after {took:.0f} s:\n  "
                  + "\n  ".join(run.stderr.strip().splitlines()[-4:]), flush=True)
        stopped = ", stopped by an error" if run.returncode else ""
        rows.append(Row(f"{notebook.stem} headless (s{stopped})", took, budget, 1.0,
                        baseline_is="the chapter's budget (s)"))
    rows.append(Row("whole course headless (s)", total, COURSE_SECONDS, 1.0, baseline_is="the course's budget (s)"))
    return rows


def test_time() -> list[Row]:
    """The README's test command, timed whole (the environment exists already)."""
    started = time.monotonic()
    run = subprocess.run([sys.executable, str(HERE / "course.py"), "test", "-q"], cwd=HERE,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    took = time.monotonic() - started
    print(run.stdout.strip().splitlines()[-1] if run.stdout.strip() else "(no output)", flush=True)
    stopped = ", with failures" if run.returncode else ""
    return [Row(f"README's test command (s{stopped})", took, TEST_SECONDS, 1.0, baseline_is="its budget (s)")]


SECTIONS = {"meter": wire_meter, "latency": latencies, "polls": polls_per_second, "memory": memory,
            "held": ten_thousand}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Speed and memory of the course against plain baselines.")
    parser.add_argument("--json", type=Path, default=HERE / "bench.json", help="where to write the table")
    parser.add_argument("--repeat", type=int, default=1, help="run every pair this many times; report medians")
    parser.add_argument("--skip", nargs="*", default=[], choices=sorted(SECTIONS), help="sections to leave out")
    parser.add_argument("--course-times", action="store_true", help="also time every notebook headless (minutes)")
    parser.add_argument("--test-time", action="store_true", help="also time the README's test command (minutes)")
    args = parser.parse_args(argv)
    rows: list[Row] = []
    failed: list[str] = []
    try:
        for name, section in SECTIONS.items():
            if name in args.skip:
                continue
            print(f"-- {name}", flush=True)
            repeats = 1 if name == "held" else args.repeat
            try:
                found = median_rows([section() for _ in range(repeats)])
            except LabError as problem:  # say so and measure the rest
                print(f"could not measure {name}: {problem}", flush=True)
                failed.append(name)
                continue
            print_table(found)
            rows += found
        if args.course_times:
            print("-- course times", flush=True)
            found = course_times()
            print_table(found)
            rows += found
        if args.test_time:
            print("-- the test command", flush=True)
            found = test_time()
            print_table(found)
            rows += found
    finally:
        lab.shutdown()
    print("\n== all figures (course / baseline = ratio; the target is the largest ratio, ≥ the smallest)")
    print_table(rows)
    write_json(rows, args.json, meta={"when": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "repeat": args.repeat,
                                      "cpus": os.cpu_count(),
                                      "load": os.getloadavg()})
    print(f"written to {args.json}")
    return 0 if all(r.holds is not False for r in rows) and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
