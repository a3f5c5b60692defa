"""Chapter 8's reconnect storms: every client cut at once, back with a fixed delay or with
exponential backoff and jitter. Reconnects per 10 ms, the server's CPU and the time to get
back on the stream.

The SSE server runs in a process of its own (``server_process.py``) so its CPU time is its
own; the clients (``patterns/reconnect.py``, bare HTTP/1.0 clients) run in the lab and reach the
server through a wire meter, which cuts every connection at once and notes when each new one
arrives.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import psutil

from ..lab import cancel_all, on_lab_loop
from ..patterns import reconnect, sse
from ..record import Recorder
from ..server_process import ServerProcess
from ..wire import WireMeter
from .core import all_ready, raise_client_failure

BIN = 0.010            # seconds: reconnects are counted per 10 ms
CPU_EVERY = 0.05       # seconds between readings of the server's CPU time
ARRIVAL_SPREAD = 0.5   # seconds over which the clients first connect (no storm before the storm)
MAX_CLIENTS = 1000
DRAIN = 0.3            # seconds after the last client is back, for it to catch up
BACK_TIMEOUT = 5.0     # seconds past the window to wait for the last clients


@dataclass
class Storm:
    """One policy's storm: when clients came back, how long they waited, what the server spent."""

    policy: str
    clients: int
    arrivals: np.ndarray       # seconds after the cut at which each new connection reached the meter
    wait: np.ndarray           # per reconnect: attempt -> stream open (s)
    cpu: pd.DataFrame          # t (s after the cut), cpu_share (of one core) over the last reading
    lost: int                  # events a client never got (counted over both storms, on the last)
    window: float

    def per_bin(self) -> np.ndarray:
        bins = np.arange(0, max(self.window, self.arrivals.max(initial=0)) + BIN, BIN)
        return np.histogram(self.arrivals, bins)[0]

    @property
    def bin_width(self) -> float:
        """The width of one bin of ``per_bin_table`` (s)."""
        return BIN

    def per_bin_table(self) -> pd.DataFrame:
        """Reconnects per ``bin_width`` s: ``t`` (s after the cut, where the bin starts) and ``reconnects``."""
        counts = self.per_bin()
        return pd.DataFrame({"t": np.arange(len(counts)) * BIN, "reconnects": counts})

    def half_span(self) -> float:
        """The shortest time in which half of the clients came back (s): how tightly they bunch."""
        return _half_span(self.arrivals)

    def summary(self) -> dict:
        return {"policy": self.policy, "clients": self.clients, "reconnects": len(self.arrivals),
                "half_back_within_ms": round(self.half_span() * 1000, 1),
                "peak_per_10ms": int(self.per_bin().max()) if len(self.arrivals) else 0,
                "back_within_s": round(float(self.arrivals.max()), 3) if len(self.arrivals) else None,
                "wait_p50_ms": round(float(np.median(self.wait)) * 1000, 1),
                "wait_max_ms": round(float(self.wait.max(initial=0)) * 1000, 1),
                "cpu_peak_share": round(float(self.cpu["cpu_share"].max()), 2), "lost": self.lost}


def _half_span(times: np.ndarray) -> float:
    times = np.sort(times)
    k = len(times) // 2
    return float((times[k:] - times[:len(times) - k]).min()) if k else 0.0


def uniform_half_span(base: float, clients: int, trials: int = 2000, seed: int = 1) -> tuple[float, float]:
    """What full jitter predicts for ``half_span``: its mean and standard deviation over ``trials``
    draws of ``clients`` delays uniform in [0, ``base``] s. The shortest window holding half of
    them is a little under ``base / 2`` (the draws are never perfectly even)."""
    rng = np.random.default_rng(seed)
    spans = [_half_span(rng.uniform(0, base, clients)) for _ in range(trials)]
    return float(np.mean(spans)), float(np.std(spans))


async def _sample_cpu(pid: int, since: float, samples: list) -> None:
    """Read the server process's CPU time (user + system) from the operating system every CPU_EVERY s.

    Read from outside, it ticks in 10 ms steps: a 50 ms reading is good to about 20 %, enough
    to tell a saturated core from a lightly loaded one. Reading from outside costs the server nothing.
    """
    process = psutil.Process(pid)

    def cpu() -> float:
        times = process.cpu_times()
        return times.user + times.system

    last_t, last_cpu = time.monotonic(), cpu()
    while True:
        await asyncio.sleep(CPU_EVERY)
        now, used = time.monotonic(), cpu()
        samples.append({"t": now - since, "cpu_share": (used - last_cpu) / (now - last_t)})
        last_t, last_cpu = now, used


async def _storm(meter: WireMeter, server: ServerProcess, recorders: list[Recorder], window: float) -> tuple:
    """Cut every connection through ``meter``; watch ``window`` s (plus a drain) as the clients come back.

    The meter notes each arrival on the lab loop, so a pause of the loop holds back every arrival
    that falls in it until the pause ends.
    """
    samples: list = []
    opened_before = len(meter.connections)
    cut = time.monotonic()
    sampler = asyncio.create_task(_sample_cpu(server.pid, cut, samples))
    await meter.cut_all()
    await asyncio.sleep(window)
    deadline = time.monotonic() + BACK_TIMEOUT   # a slow machine needs longer to serve them all
    while not all(r.requests and r.requests[-1].sent > cut for r in recorders) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(DRAIN)
    await cancel_all([sampler])
    arrivals = np.array([c.opened - cut for c in meter.connections[opened_before:]])
    wait = np.array([q.answered - q.sent for r in recorders for q in r.requests if q.sent > cut])
    return arrivals, wait, pd.DataFrame(samples)


def _lost(recorders: list[Recorder], upto: int) -> int:
    """Events 1..upto that a client never saw (every client was connected from before event 1)."""
    return sum(len(set(range(1, upto + 1)) - {s for s, _ in r.seen}) for r in recorders)


def _expected(kw: dict) -> float:
    return kw.get("retry", 0.5) + kw.get("base", 3.0) + ARRIVAL_SPREAD + 3.5


# A fixed delay's bunch comes back within 100 ms: a wait for a core of 90 ms at a stretch spreads it past that.
@on_lab_loop(expected=_expected, tolerates=lambda kw: 0.09)
async def run_storms(*, clients: int = 500, retry: float = 0.5, base: float = 3.0, cap: float = 30.0,
                     seed: int = 8) -> dict[str, Storm]:
    """Cut ``clients`` SSE streams at once, twice: first the clients wait a fixed ``retry`` s, then
    they use full-jitter backoff from ``base`` s (ceiling ``cap``). Each storm is watched for its
    longest delay, then until every client is back (at most BACK_TIMEOUT s more)."""
    if not 1 <= clients <= MAX_CLIENTS:
        raise ValueError(f"clients must be between 1 and {MAX_CLIENTS}, not {clients!r}.")
    if not 0 <= retry <= 5 or not 0 < base <= min(cap, 5):
        raise ValueError("retry and base must be at most 5 s (and base above 0, at most cap) to fit the run.")
    policies = {"fixed": (f"fixed {retry:g} s", reconnect.fixed(retry), retry),
                "jitter": (f"backoff from {base:g} s, full jitter", reconnect.backoff_with_jitter(base, cap), base)}
    current = [policies["fixed"][1]]
    server = await ServerProcess(sse.PATTERN, rate=5.0, options={"heartbeat": None, "retry": 1000}).start()
    meter = await WireMeter(server.port).start()
    recorders = [Recorder(i) for i in range(clients)]
    rng = random.Random(seed)

    async def arrive(recorder: Recorder) -> None:
        await asyncio.sleep(ARRIVAL_SPREAD * recorder.client / clients)
        await reconnect.follow(meter.url, recorder, lambda attempt, r: current[0](attempt, r), rng)

    tasks = [asyncio.create_task(arrive(r)) for r in recorders]
    storms = {}
    try:
        await all_ready(recorders, tasks)
        await server.start_feed(sum(w for _, _, w in policies.values()) + 2 * (DRAIN + BACK_TIMEOUT) + 1.0)
        for key, (name, policy, window) in policies.items():
            current[0] = policy
            await asyncio.sleep(0.5)   # every client sees an event (and so has an id to resume from) before the cut
            arrivals, wait, cpu = await _storm(meter, server, recorders, window)
            storms[key] = Storm(name, clients, arrivals, wait, cpu, 0, window)
        back = time.monotonic() - DRAIN
        raise_client_failure(tasks)
        events = await server.events()
    finally:
        await cancel_all(tasks)
        await meter.stop()
        await server.stop()
    upto = max(e.seq for e in events if e.created < back)
    storms["jitter"].lost = _lost(recorders, upto)   # across both storms: every event until all were back
    return storms
