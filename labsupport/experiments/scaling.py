"""Chapter 9's experiments: K gateways fed by the cluster, under load (fan-out, CPU, memory).

The stage (cluster, stream, gateway processes) and the producer are in ``scaling_stage``; the
faults (a gateway killed, broker nodes killed, no quorum) in ``scaling_faults``. Every run
checks, for every client, that it saw every acknowledged event once: ``lost`` and
``duplicates`` are counted from the clients' own records, against the producer's acks.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..cluster import node_arguments
from ..lab import cancel_all, on_lab_loop
from ..patterns.gateway import CLIENTS, GatewayProcess, GatewayRecorder
from ..results import Rows
from .choosing import framed_event_bytes
from .core import all_ready, raise_client_failure
from .guards import check_range
from .scaling_stage import DRAIN_TIMEOUT, MAX_CLIENTS, MAX_DURATION, MAX_GATEWAYS, MAX_RATE, Publish, produce, stage


# -- what a run saw --------------------------------------------------------------------------

@dataclass
class ScalingRun:
    """One run: what was published and acked, what every client saw, what each gateway used."""

    settings: dict
    published: list[Publish]
    recorders: list[GatewayRecorder]
    kinds: list[str]
    usage: pd.DataFrame                 # one row per gateway
    marks: list[tuple[float, str]] = field(default_factory=list)
    arrivals: dict[int, dict[int, float]] = field(default_factory=dict)   # gateway -> {seq: when it got there}
    t0: float = 0.0
    facts: dict = field(default_factory=dict)

    @property
    def acked(self) -> dict[int, Publish]:
        return {p.seq: p for p in self.published if p.seq is not None}

    def deliveries(self) -> pd.DataFrame:
        """One row per event a client saw: client, its kind, seq, latency (ms), time (s since start)."""
        acked = self.acked
        rows = [{"client": r.client, "kind": kind, "seq": seq, "t": seen - self.t0,
                 "latency_ms": 1000 * (seen - acked[seq].created)}
                for r, kind in zip(self.recorders, self.kinds) for seq, seen in r.seen if seq in acked]
        return pd.DataFrame(rows, columns=["client", "kind", "seq", "t", "latency_ms"])

    def lost(self) -> int:
        """Acknowledged events some client never saw (summed over clients)."""
        wanted = set(self.acked)
        return sum(len(wanted - {seq for seq, _ in r.seen}) for r in self.recorders)

    def duplicates(self) -> int:
        return sum(len(r.seen) - len({seq for seq, _ in r.seen}) for r in self.recorders)

    def publish_gaps(self) -> pd.DataFrame:
        """Time between consecutive acks (s), with when the gap ended: a pause shows as one long gap."""
        acks = sorted(p.acked for p in self.published if p.acked is not None)
        return pd.DataFrame({"t": np.array(acks[1:]) - self.t0, "gap_s": np.diff(acks)})

    def pause_after(self, mark: str, within: float = 15.0) -> float:
        """The longest gap between acks that began within ``within`` s after the mark, or spans it
        (however long it lasted: a pause that never ended in time is the longest of all)."""
        at = dict((label, t) for t, label in self.marks)[mark] - self.t0
        gaps = self.publish_gaps()
        window = gaps[(gaps["t"] > at) & (gaps["t"] - gaps["gap_s"] <= at + within)]
        return float(window["gap_s"].max()) if len(window) else float("nan")

    def summary(self) -> dict[str, Any]:
        d = self.deliveries()
        return {**self.settings, "events": len(self.acked), "deliveries": len(d),
                "p50_ms": float(d["latency_ms"].quantile(0.5)) if len(d) else float("nan"),
                "p99_ms": float(d["latency_ms"].quantile(0.99)) if len(d) else float("nan"),
                "lost": self.lost(), "duplicates": self.duplicates(), **self.facts}

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([self.summary()])

    def _repr_html_(self) -> str:
        return self.table().round(2).to_html(index=False)

    def ladder(self, seq: int | None = None, clients: tuple[int, ...] | None = None) -> pd.DataFrame:
        """The messages of one event's trip, with when each left and arrived (s since the run began).

        Observed are: the publish leaving the producer, the ack reaching it, the event reaching
        each gateway and each client. The cluster's own moments are not observed, so its arrows
        leave at the earliest moment something came out of it (a bound, not a measurement).
        By default: the middle event, and the first client on each of two gateways.
        """
        acked = self.acked
        seq = seq if seq is not None else sorted(acked)[len(acked) // 2]
        p = acked[seq]
        if clients is None:
            firsts: dict[int, int] = {}
            for r in self.recorders:
                if r.visits:
                    firsts.setdefault(r.visits[0][1], r.client)
            clients = tuple(list(firsts.values())[:2])
        legs = []
        for c in clients:
            r = self.recorders[c]
            seen = dict(r.seen).get(seq)
            if seen is None:
                continue
            gateway = [g for t, g in r.visits if t <= seen][-1]
            legs.append((c, gateway, self.arrivals.get(gateway, {}).get(seq), seen))
        out = min([p.acked] + [at for _, _, at, _ in legs if at is not None])
        rows = [("producer", "cluster", p.created, out, f"publish {seq}"), ("cluster", "producer", out, p.acked, "ack")]
        for c, gateway, at_gateway, seen in legs:
            if at_gateway is not None:
                rows.append(("cluster", f"gateway {gateway}", out, at_gateway, f"msg {seq}"))
            rows.append((f"gateway {gateway}", f"client {c}", at_gateway or seen, seen, f"id: {seq}"))
        return self._ladder_table(rows)

    def failover_ladder(self, client: int | None = None) -> pd.DataFrame:
        """One moved client's failover: its last event from the killed gateway, the kill, the
        reconnect to another gateway with its last id, and the first event it got there."""
        killed_at, label = next((t, m) for t, m in self.marks if m.startswith("gateway"))
        dead = int(label.split()[1])
        moved = [r for r in self.recorders if r.visits and r.visits[0][1] == dead and len(r.visits) > 1]
        r = moved[0] if client is None else self.recorders[client]
        before = [(seq, t) for seq, t in r.seen if t < killed_at]
        (back, new_gateway) = next((t, g) for t, g in r.visits if t >= killed_at)
        request = max((q for q in r.requests if q.answered <= back), key=lambda q: q.answered)
        after = next((seq, t) for seq, t in r.seen if t >= back)
        rows = [(f"gateway {dead}", f"client {r.client}", before[-1][1], before[-1][1], f"id: {before[-1][0]}"),
                (f"gateway {dead}", f"gateway {dead}", killed_at, killed_at, "killed"),
                (f"client {r.client}", f"gateway {new_gateway}", request.sent, back,
                 f"GET Last-Event-ID: {before[-1][0]}" if self.kinds[r.client] == "sse"
                 else f"GET /feed?after={before[-1][0]}"),
                (f"gateway {new_gateway}", f"client {r.client}", back, after[1], f"id: {after[0]}")]
        return self._ladder_table(rows)

    def _ladder_table(self, rows: list[tuple]) -> pd.DataFrame:
        table = pd.DataFrame(rows, columns=["from", "to", "sent", "arrived", "label"])
        table[["sent", "arrived"]] = table[["sent", "arrived"]] - self.t0
        return table

    def fault_marks(self) -> list[tuple[float, str]]:
        """The faults' marks, in seconds since the run began."""
        return [(t - self.t0, label) for t, label in self.marks]


async def _usage(gateways: list[GatewayProcess]) -> list:
    return list(await asyncio.gather(*(g.usage() for g in gateways)))


async def _drain(recorders: list[GatewayRecorder], last_seq: int | None, timeout: float) -> None:
    """Wait until every client has seen ``last_seq`` (or the timeout passes)."""
    deadline = time.monotonic() + timeout
    while last_seq is not None and time.monotonic() < deadline:
        if all(r.seen and max(seq for seq, _ in r.seen[-20:]) >= last_seq for r in recorders):
            return
        await asyncio.sleep(0.05)


async def run_on_gateways(*, gateways: int, clients: int, rate: float, duration: float | None, kind: str,
                          scenario=None) -> ScalingRun:
    """The shape every run shares: stage up, clients in place, publish, (scenario), drain, measure.

    With ``duration=None`` the producer publishes until the scenario has finished, plus 0.5 s.
    The stage's other gateways, running but holding no client, are measured too: their CPU time
    is what reading the stream alone costs (``idle_gateway_cpu_s``).
    """
    check_range("gateways", gateways, 1, MAX_GATEWAYS)
    check_range("clients", clients, 1, MAX_CLIENTS)
    check_range("rate", rate, 0.5, MAX_RATE)
    if duration is not None:
        check_range("duration", duration, 0.2, MAX_DURATION)
    if kind not in ("sse", "websocket", "mixed"):
        raise ValueError(f"kind must be 'sse', 'websocket' or 'mixed', not {kind!r}.")
    s = await stage.coro(gateways)
    serving = s.gateways[:gateways]
    urls = [g.url for g in serving]
    kinds = [kind if kind != "mixed" else ("sse", "websocket")[i % 2] for i in range(clients)]
    recorders = [GatewayRecorder(i) for i in range(clients)]
    tasks = [asyncio.create_task(CLIENTS[k](urls, r, first=i % gateways))
             for i, (r, k) in enumerate(zip(recorders, kinds))]
    run = ScalingRun({"gateways": gateways, "clients": clients, "rate": rate, "kind": kind},
                     [], recorders, kinds, pd.DataFrame())
    stop = asyncio.Event()

    async def act() -> None:
        try:
            await scenario(s, run)
        finally:
            await asyncio.sleep(0.5)
            stop.set()

    idle = [g for g in s.gateways[gateways:] if g.process is not None and g.process.returncode is None]
    try:
        await all_ready(recorders, tasks)
        before = await _usage(serving + idle)
        run.t0 = time.monotonic()
        producing = asyncio.create_task(produce(s, rate, run.published, duration=duration, stop=stop))
        if scenario is not None:
            await asyncio.gather(producing, act())
        await producing
        acked = [p.seq for p in run.published if p.seq is not None]
        await _drain(recorders, max(acked) if acked else None, DRAIN_TIMEOUT)
        raise_client_failure(tasks)
        alive = [g for g in serving + idle if g.process.returncode is None]
        after = dict(zip(map(id, alive), await _usage(alive)))
        if acked:
            for i, g in enumerate(serving):
                if g in alive:
                    run.arrivals[i] = await g.received(min(acked), max(acked))
    finally:
        await cancel_all(tasks)
    rows = []
    for i, (g, b) in enumerate(zip(serving, before)):
        a = after.get(id(g))
        held = sum(1 for r in recorders if r.visits and r.visits[0][1] == i)
        rows.append({"gateway": i, "clients": held,
                     "cpu_s": a.cpu_seconds - b.cpu_seconds if a else float("nan"),
                     "rss_mb": a.rss_bytes / 1e6 if a else float("nan")})
    run.usage = pd.DataFrame(rows)
    reading = [after[id(g)].cpu_seconds - b.cpu_seconds for g, b in zip(idle, before[len(serving):]) if id(g) in after]
    run.facts["idle_gateway_cpu_s"] = float(np.mean(reading)) if reading else float("nan")
    return run


# -- 1. fan-out as gateways are added --------------------------------------------------------

def _expected(kwargs: dict) -> float:
    return kwargs.get("duration", 2.0) + 1.5


@on_lab_loop(expected=_expected)
async def run_fanout(*, gateways: int = 1, clients: int = 30, rate: float = 20.0, duration: float = 2.0,
                     kind: str = "sse") -> ScalingRun:
    """``clients`` clients spread round robin over ``gateways`` gateways; every event to every client."""
    run = await run_on_gateways(gateways=gateways, clients=clients, rate=rate, duration=duration, kind=kind)
    usage, deliveries = run.usage, len(run.deliveries())
    busiest = usage.loc[usage["cpu_s"].idxmax()]
    run.facts.update({
        "busiest_gateway_cpu_s": float(busiest["cpu_s"]),
        "quietest_gateway_cpu_s": float(usage["cpu_s"].min()),
        "total_gateway_cpu_s": float(usage["cpu_s"].sum()),
        "cpu_ms_per_delivery": 1000 * float(usage["cpu_s"].sum()) / max(deliveries, 1),
        "max_gateway_rss_mb": float(usage["rss_mb"].max()),
    })
    return run


def _expected_sweep(kwargs: dict) -> float:
    return len(kwargs.get("ks", (1, 2, 3))) * (_expected(kwargs) + 0.3)


@on_lab_loop(expected=_expected_sweep)
async def sweep_gateways(*, ks: tuple[int, ...] = (1, 2, 3), clients: int = 30, rate: float = 20.0,
                         duration: float = 2.0) -> pd.DataFrame:
    """The same clients and events over 1, 2, 3 gateways: latency and each gateway's CPU and memory."""
    await stage.coro(max(ks))    # every gateway up first, so no run pays for starting one
    rows = []
    for k in ks:
        run = await run_fanout.coro(gateways=k, clients=clients, rate=rate, duration=duration)
        rows.append(run.summary())
    return pd.DataFrame(rows)


def split_cpu(sweep: pd.DataFrame) -> dict[str, float]:
    """Split the gateways' CPU into its two parts, from a sweep over K.

    Each gateway pays once per event for reading the stream (``ingest``) and once per delivery
    for writing it to a client (``deliver``), so for K gateways: total CPU = K × events × ingest
    + deliveries × deliver. Two unknowns, one equation per K: least squares over the sweep.
    """
    rows = sweep[["gateways", "events", "deliveries", "total_gateway_cpu_s"]].astype(float)
    a = np.column_stack([rows["gateways"] * rows["events"], rows["deliveries"]])
    (ingest, deliver), *_ = np.linalg.lstsq(a, rows["total_gateway_cpu_s"].to_numpy(), rcond=None)
    return {"ingest_ms_per_event_per_gateway": 1000 * ingest, "deliver_ms_per_delivery": 1000 * deliver}


def unit_costs(sweep: pd.DataFrame, memory_kb_per_connection: float, *, name: str = "sse via gateways") -> pd.DataFrame:
    """Chapter 7's unit costs for the gateways, one row, for chapter 7's ``project``.

    CPU per delivered event is the one-gateway run's, measured whole: all its CPU over all its
    deliveries, reading the stream included. Spread over that run's clients, reading the stream
    makes it a little dearer than with thousands of clients per gateway, so the projection errs
    high. (``split_cpu``'s fit over K moves too much between runs to project from.) Bytes are
    the SSE framing of one event; memory per connection comes from ``gateway_memory``.
    """
    one = sweep.set_index("gateways").loc[1]
    return pd.DataFrame({name: {"unit": "delivered event", "bytes_per_unit": float(framed_event_bytes(1000)),
                                "cpu_ms_per_unit": float(one["cpu_ms_per_delivery"]), "setup_bytes_per_connection": 0.0,
                                "memory_kb_per_connection": memory_kb_per_connection}}).T


@dataclass(frozen=True)
class GatewayMemory(Rows):
    """One gateway's resident memory at each count of idle SSE streams, and what one costs."""

    rows: pd.DataFrame         # connections, rss_mb
    kb_per_connection: float   # the slope of memory against connections

    def _repr_html_(self) -> str:
        return self.rows.to_html(index=False)


@on_lab_loop(expected=lambda kw: 3.0)
async def gateway_memory(*, counts: tuple[int, ...] = (0, 100, 200)) -> GatewayMemory:
    """One gateway's resident memory holding 0, 100, 200 idle SSE streams; the slope is per connection."""
    s = await stage.coro(1)
    gateway, rows, tasks = s.gateways[0], [], []
    try:
        for count in counts:
            while len(tasks) < count:
                r = GatewayRecorder(len(tasks))
                tasks.append((asyncio.create_task(CLIENTS["sse"]([gateway.url], r)), r))
            await all_ready([r for _, r in tasks], [t for t, _ in tasks])
            await asyncio.sleep(0.2)
            rows.append({"connections": count, "rss_mb": (await gateway.usage()).rss_bytes / 1e6})
    finally:
        await cancel_all([t for t, _ in tasks])
    table = pd.DataFrame(rows)
    slope = np.polyfit(table["connections"], table["rss_mb"], 1)[0] if len(table) > 1 else float("nan")
    return GatewayMemory(table, 1000 * slope)


# -- going past one machine --------------------------------------------------------------------

def machine_plan(hosts: list[str], *, client_port: int = 4222, cluster_port: int = 6222,
                 store: str = "/var/lib/nats") -> pd.DataFrame:
    """The command each machine runs for a cluster on ``hosts``: the same options the lab uses on loopback.

    Not for copying as is: these commands carry no TLS and no credentials on the client port and
    the routes, and ``-m 8222`` opens nats-server's monitoring page, which has no authentication
    at all (docs.nats.io, "Monitoring"). Across machines, add TLS and credentials, and keep the
    monitoring port on localhost or behind a firewall.
    """
    routes = [f"nats://{h}:{cluster_port}" for h in hosts]
    rows = []
    for i, host in enumerate(hosts, start=1):
        args = node_arguments(f"n{i}", host=host, port=client_port, cluster_port=cluster_port, routes=routes,
                              store=store, monitor_port=8222)
        rows.append({"node": f"n{i}", "host": host, "command": "nats-server " + " ".join(args)})
    return pd.DataFrame(rows)


__all__ = ["GatewayMemory", "ScalingRun", "gateway_memory", "machine_plan", "run_fanout", "split_cpu", "sweep_gateways",
           "unit_costs"]
