"""Chapter 9's experiments: gateways fed by a three-node JetStream cluster, under load and under faults.

The architecture, all real processes on loopback:

    producer ──publish──▶ NATS cluster (n1, n2, n3; stream with 3 replicas)
                                 │ every gateway follows the stream
                 ┌───────────────┼───────────────┐
             gateway 0       gateway 1       gateway 2     (child processes, SSE + WebSocket)
              │ │ │           │ │ │           │ │ │
                        clients (round robin)

A **stage** is that set-up: the lab's cluster, one stream for the stage, and K gateway
processes following it. It stays up between runs (a gateway process takes about a second to
start), and each run publishes a fresh stretch of the stream. The producer publishes each event
with a ``Nats-Msg-Id`` and waits for the cluster's acknowledgement; when none comes it publishes
again with the same id, so a retry never stores an event twice.

Every run checks, for every client, that it saw every acknowledged event once: ``lost`` and
``duplicates`` are counted from the clients' own records, against the producer's acks.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from nats.js.api import StorageType

from ..broker import BrokerError
from ..cluster import Cluster, connect_cluster, node_arguments, start_cluster
from ..lab import LabError, lab, on_lab_loop
from ..patterns.gateway import CLIENTS, GatewayProcess, GatewayRecorder, event_body
from ..costs import project
from .choosing import framed_event_bytes
from .core import all_ready, cancel_all, raise_client_failure

CLUSTER = "scaling"
PUBLISH_TIMEOUT = 0.5   # seconds to wait for an ack before publishing again (same id)
MAX_GATEWAYS, MAX_CLIENTS, MAX_RATE, MAX_DURATION = 6, 300, 200.0, 20.0
DRAIN_TIMEOUT = 5.0     # after the last ack, how long clients may take to see it
RECOVERY_TIMEOUT = 20.0 # an election (4-9 s) twice over, on a busy machine
_stream_ids = itertools.count(1)
_run_ids = itertools.count(1)


class PublishRefused(BrokerError):
    """The cluster acknowledged nothing: no stream leader, or no majority to store with."""


# -- the stage: cluster, stream, gateways ----------------------------------------------------

@dataclass
class Stage:
    cluster: Cluster
    client: Any            # the producer's nats-py client, connected to every node
    stream: str
    subject: str
    gateways: list[GatewayProcess] = field(default_factory=list)

    @property
    def js(self):
        return self.client.jetstream(timeout=PUBLISH_TIMEOUT)

    async def ensure_gateways(self, count: int) -> list[GatewayProcess]:
        """At least ``count`` gateways running (replacing dead ones); returns the first ``count``."""
        for i, gateway in enumerate(self.gateways):
            if gateway.process is None or gateway.process.returncode is not None:
                self.gateways[i] = GatewayProcess(self.cluster.urls, self.stream, self.subject)
        while len(self.gateways) < count:
            self.gateways.append(GatewayProcess(self.cluster.urls, self.stream, self.subject))
        await asyncio.gather(*(g.start() for g in self.gateways if g.port is None))
        return self.gateways[:count]

    async def stream_leader(self) -> str:
        return (await self.js.stream_info(self.stream)).cluster.leader

    async def replicas(self) -> dict[str, dict]:
        """Per node: is its copy of the stream current, and how far behind (messages)?"""
        info = (await self.js.stream_info(self.stream)).cluster
        states = {info.leader: {"role": "leader", "current": True, "lag": 0}}
        for r in info.replicas or []:
            states[r.name] = {"role": "follower", "current": bool(r.current), "lag": r.lag or 0}
        return states

    async def wait_healthy(self, timeout: float = RECOVERY_TIMEOUT) -> float:
        """Wait until the nodes agree on a meta-leader and every running gateway holds the whole stream.

        After a fault the gateways' consumers are recreated only once a meta-leader exists and
        two heartbeats were missed, so a run started too early would wait for that instead.
        Returns the seconds waited.
        """
        began = time.monotonic()
        await self.cluster.meta_leader(timeout)
        while True:
            try:
                last = (await self.js.stream_info(self.stream)).state.last_seq
                alive = [g for g in self.gateways if g.process is not None and g.process.returncode is None]
                states = await asyncio.gather(*(g.state() for g in alive))
                if all(state["last_seq"] >= last for state in states):
                    return time.monotonic() - began
            except Exception:   # the API may not answer during an election
                pass
            if time.monotonic() - began > timeout:
                raise LabError(f"The gateways did not catch up with the stream within {timeout:.0f} s after the "
                               "last fault. Run the cell again; if it persists, restart the kernel.")
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        await asyncio.gather(*(g.stop() for g in self.gateways))
        self.gateways.clear()
        await self.client.close()


_stage: Stage | None = None


@on_lab_loop(expected=lambda kw: 3.0)
async def stage(gateways: int = 1) -> Stage:
    """The lab's stage, started if needed, with at least ``gateways`` gateways running."""
    global _stage
    cluster = await start_cluster.coro(CLUSTER)    # every node up (restarted if a run left one down)
    if _stage is None or _stage.cluster is not cluster:
        if _stage is not None:
            await _stage.close()
        client = await connect_cluster(cluster, "producer")
        n = next(_stream_ids)
        stream, subject = f"TICKS_{n}", f"ticks{n}.>"
        await client.jetstream(timeout=5).add_stream(name=stream, subjects=[subject], num_replicas=3,
                                                     storage=StorageType.FILE, duplicate_window=120.0)
        _stage = Stage(cluster, client, stream, subject)
        lab.on_shutdown("scaling-stage", close_stage.coro)
    await _stage.ensure_gateways(gateways)
    await _stage.wait_healthy()
    return _stage


@on_lab_loop
async def close_stage() -> None:
    global _stage
    lab.forget("scaling-stage")
    if _stage is not None:
        await _stage.close()
        _stage = None


@on_lab_loop
async def cluster_state() -> dict[str, dict]:
    """Who each node says the meta-leader is, and each node's role and lag in the stage's stream."""
    s = await stage.coro(0)
    running = [node for node in s.cluster.nodes if node.running]
    reports = await asyncio.gather(*(node.jsz() for node in running))
    return {"meta_leader": {n.name: r.get("meta_cluster", {}).get("leader") for n, r in zip(running, reports)},
            "stream": await s.replicas()}


# -- producing -------------------------------------------------------------------------------

@dataclass
class Publish:
    """One event's publishing: when it was due, each attempt, the ack (stream sequence) or why none."""

    n: int
    created: float
    acked: float | None = None
    seq: int | None = None
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


async def publish_event(js, subject: str, msg_id: str, body: bytes, *, timeout: float = PUBLISH_TIMEOUT) -> int:
    """Publish once and wait for the ack; no ack becomes ``PublishRefused`` with the reason."""
    import nats.errors
    import nats.js.errors

    try:
        return (await js.publish(subject, body, headers={"Nats-Msg-Id": msg_id}, timeout=timeout)).seq
    except nats.js.errors.NoStreamResponseError:
        raise PublishRefused("no stream leader answered: the nodes that keep the stream are electing one, or "
                             "too few of them are up to elect one (a majority is needed).") from None
    except (nats.errors.TimeoutError, asyncio.TimeoutError):
        raise PublishRefused(f"no acknowledgement within {timeout:.1f} s: the stream's leader could not get a "
                             "majority of its replicas to store the message (too few nodes up, or the leader "
                             "is gone and not yet replaced). Publish again with the same id.") from None
    except nats.js.errors.APIError as error:   # e.g. 409 "duplicate message id is in process": the first try still runs
        raise PublishRefused(f"the cluster answered {error.code} ({error.description}).") from None
    except (nats.errors.ConnectionClosedError, nats.errors.NoServersError, nats.errors.ConnectionReconnectingError,
            nats.errors.OutboundBufferLimitError) as error:
        raise PublishRefused(f"the producer's connection is down ({type(error).__name__}); it reconnects to "
                             "another node by itself.") from None


async def produce(stage: Stage, rate: float, log: list[Publish], *, duration: float | None = None,
                  stop: asyncio.Event | None = None, give_up: float = 30.0) -> None:
    """Publish events at ``rate`` for ``duration`` s (or until ``stop`` is set), each retried
    with the same id until acknowledged.

    Publishing is in order: while one event waits for its ack, the next waits too, which is
    what makes a pause of the cluster visible as a gap between acks.
    """
    run = next(_run_ids)
    began = time.monotonic()
    for n in itertools.count(1):
        due = began + (n - 1) / rate
        if (duration is not None and due - began >= duration) or (stop is not None and stop.is_set()):
            return
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        entry = Publish(n, time.monotonic())
        log.append(entry)
        body = event_body(entry.created, round(100 + 0.01 * n, 2))
        while entry.seq is None:
            entry.attempts += 1
            try:
                entry.seq = await publish_event(stage.js, stage.subject.replace(">", "tick"), f"r{run}-{n}", body)
                entry.acked = time.monotonic()
            except PublishRefused as refused:
                entry.errors.append(str(refused))
                if time.monotonic() - entry.created > give_up:
                    raise PublishRefused(f"event {n} was not acknowledged for {give_up:.0f} s: {refused}") from None
                await asyncio.sleep(0.02)


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
        """The longest gap between acks that ended within ``within`` s after the mark."""
        at = dict((label, t) for t, label in self.marks)[mark] - self.t0
        gaps = self.publish_gaps()
        window = gaps[(gaps["t"] > at) & (gaps["t"] <= at + within)]
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

    def plot_deliveries(self, title: str = "") -> go.Figure:
        """Each client's events over time, coloured by client; marks show the faults."""
        d = self.deliveries()
        fig = go.Figure()
        for client, rows in d.groupby("client"):
            fig.add_scatter(x=rows["t"], y=rows["seq"], mode="markers", marker={"size": 3},
                            name=f"client {client} ({self.kinds[client]})", showlegend=client < 6)
        self._add_marks(fig)
        fig.update_layout(title=title, xaxis_title="seconds since the run began", yaxis_title="event (stream sequence)",
                          height=380)
        return fig

    def plot_publish_gaps(self, title: str = "") -> go.Figure:
        """Time between consecutive acknowledgements: flat at 1 / rate, a spike while the cluster cannot ack."""
        gaps = self.publish_gaps()
        fig = go.Figure(go.Scatter(x=gaps["t"], y=gaps["gap_s"], mode="lines+markers", marker={"size": 3},
                                   name="gap between acks"))
        self._add_marks(fig)
        fig.update_layout(title=title, xaxis_title="seconds since the run began", yaxis_title="seconds",
                          height=360, yaxis_type="log")
        return fig

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

    def plot_ladder(self, table: pd.DataFrame | None = None, title: str = "One event's trip") -> go.Figure:
        """A sequence diagram of a ladder table: one lane per party, time running down, one arrow per message."""
        table = self.ladder() if table is None else table
        lanes = list(dict.fromkeys([lane for pair in zip(table["from"], table["to"]) for lane in pair]))
        x = {lane: i for i, lane in enumerate(lanes)}
        fig = go.Figure()
        top, bottom = 1000 * table["sent"].min(), 1000 * table["arrived"].max()
        for lane in lanes:
            fig.add_scatter(x=[x[lane]] * 2, y=[top, bottom], mode="lines", line={"color": "#bbb"},
                            showlegend=False, hoverinfo="skip")
        for _, m in table.iterrows():
            if m["from"] == m["to"]:   # something that happened at one party
                fig.add_scatter(x=[x[m["to"]]], y=[1000 * m["sent"]], mode="markers+text", text=[m["label"]],
                                marker={"symbol": "x", "size": 12, "color": "#a11"}, textposition="middle right",
                                showlegend=False)
                continue
            fig.add_annotation(x=x[m["to"]], y=1000 * m["arrived"], ax=x[m["from"]], ay=1000 * m["sent"],
                               xref="x", yref="y", axref="x", ayref="y", showarrow=True, arrowhead=2, text="")
            fig.add_scatter(x=[(x[m["to"]] + x[m["from"]]) / 2], y=[500 * (m["arrived"] + m["sent"])], mode="text",
                            text=[m["label"]], textposition="top center", textfont={"size": 10}, showlegend=False,
                            hovertext=f"{m['from']} → {m['to']}: {1000 * (m['arrived'] - m['sent']):.2f} ms")
        fig.update_xaxes(tickvals=list(x.values()), ticktext=lanes, range=[-0.5, len(lanes) - 0.5])
        fig.update_yaxes(autorange="reversed", title_text="ms since the run began")
        fig.update_layout(title=title, height=420)
        return fig

    def _add_marks(self, fig: go.Figure) -> None:
        for t, label in self.marks:
            fig.add_vline(x=t - self.t0, line_dash="dot", line_color="#a11", annotation_text=label,
                          annotation_textangle=-90, annotation_font_size=10)


async def _usage(gateways: list[GatewayProcess]) -> list:
    return list(await asyncio.gather(*(g.usage() for g in gateways)))


async def _drain(recorders: list[GatewayRecorder], last_seq: int | None, timeout: float) -> None:
    """Wait until every client has seen ``last_seq`` (or the timeout passes)."""
    deadline = time.monotonic() + timeout
    while last_seq is not None and time.monotonic() < deadline:
        if all(r.seen and max(seq for seq, _ in r.seen[-20:]) >= last_seq for r in recorders):
            return
        await asyncio.sleep(0.05)


def _check(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}, not {value!r}.")


async def _run(*, gateways: int, clients: int, rate: float, duration: float | None, kind: str,
               scenario=None) -> ScalingRun:
    """The shape every run shares: stage up, clients in place, publish, (scenario), drain, measure.

    With ``duration=None`` the producer publishes until the scenario has finished, plus 0.5 s.
    """
    _check("gateways", gateways, 1, MAX_GATEWAYS)
    _check("clients", clients, 1, MAX_CLIENTS)
    _check("rate", rate, 0.5, MAX_RATE)
    if duration is not None:
        _check("duration", duration, 0.2, MAX_DURATION)
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

    try:
        await all_ready(recorders, tasks)
        before = await _usage(serving)
        run.t0 = time.monotonic()
        producing = asyncio.create_task(produce(s, rate, run.published, duration=duration, stop=stop))
        if scenario is not None:
            await asyncio.gather(producing, act())
        await producing
        acked = [p.seq for p in run.published if p.seq is not None]
        await _drain(recorders, max(acked) if acked else None, DRAIN_TIMEOUT)
        raise_client_failure(tasks)
        alive = [g for g in serving if g.process.returncode is None]
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
    return run


# -- 1. fan-out as gateways are added --------------------------------------------------------

def _expected(kwargs: dict) -> float:
    return kwargs.get("duration", 2.0) + 1.5


@on_lab_loop(expected=_expected)
async def run_fanout(*, gateways: int = 1, clients: int = 30, rate: float = 20.0, duration: float = 2.0,
                     kind: str = "sse") -> ScalingRun:
    """``clients`` clients spread round robin over ``gateways`` gateways; every event to every client."""
    run = await _run(gateways=gateways, clients=clients, rate=rate, duration=duration, kind=kind)
    usage, deliveries = run.usage, len(run.deliveries())
    busiest = usage.loc[usage["cpu_s"].idxmax()]
    run.facts.update({
        "busiest_gateway_cpu_s": float(busiest["cpu_s"]),
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

    CPU per delivered event is the per-delivery part from ``split_cpu``: with many clients per
    gateway, reading the stream (paid per gateway, not per client) is a rounding error. Bytes are
    the SSE framing of one event; memory per connection comes from ``gateway_memory``.
    """
    cpu = split_cpu(sweep)
    return pd.DataFrame({name: {"unit": "delivered event", "bytes_per_unit": float(framed_event_bytes(1000)),
                                "cpu_ms_per_unit": cpu["deliver_ms_per_delivery"], "setup_bytes_per_connection": 0.0,
                                "memory_kb_per_connection": memory_kb_per_connection}}).T


@on_lab_loop(expected=lambda kw: 3.0)
async def gateway_memory(*, counts: tuple[int, ...] = (0, 100, 200)) -> pd.DataFrame:
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
    table.attrs["kb_per_connection"] = 1000 * slope
    return table


# -- 2. a gateway dies -----------------------------------------------------------------------

@on_lab_loop(expected=lambda kw: kw.get("duration", 3.0) + 2.5)
async def run_gateway_failover(*, gateways: int = 3, clients: int = 12, rate: float = 20.0, duration: float = 3.0,
                               kill: int = 0, kill_at: float = 1.0, kind: str = "mixed") -> ScalingRun:
    """Kill gateway ``kill`` (SIGKILL) ``kill_at`` s into the run; its clients move on and resume."""
    if gateways < 2:
        raise ValueError("Failover needs at least 2 gateways: with one, its clients have nowhere to go.")
    _check("kill", kill, 0, gateways - 1)
    _check("kill_at", kill_at, 0.0, duration)

    async def scenario(s: Stage, run: ScalingRun) -> None:
        await asyncio.sleep(max(0.0, run.t0 + kill_at - time.monotonic()))
        run.marks.append((s.gateways[kill].kill(), f"gateway {kill} killed"))

    run = await _run(gateways=gateways, clients=clients, rate=rate, duration=duration, kind=kind, scenario=scenario)
    killed_at = run.marks[0][0]
    recovery = []
    for r in run.recorders:
        before = [g for t, g in r.visits if t < killed_at]
        if before and before[-1] == kill:
            after = [t for t, _ in r.visits if t >= killed_at]
            recovery.append(after[0] - killed_at if after else float("inf"))
    run.facts.update({"moved_clients": len(recovery),
                      "recovery_max_s": max(recovery) if recovery else float("nan"),
                      "recovery_median_s": float(np.median(recovery)) if recovery else float("nan")})
    return run


# -- 3. a broker node dies, then the stream's leader -----------------------------------------

@on_lab_loop(expected=lambda kw: 12.0)
async def run_broker_faults(*, clients: int = 6, gateways: int = 3, rate: float = 20.0,
                            follower_down: float = 1.0, settle: float = 1.0) -> ScalingRun:
    """Kill a follower node, bring it back, then kill the stream's leader, bring it back.

    Publishing goes on all the while; the run measures each pause, checks every acknowledged
    event reached every client, and how long each restarted node took to catch up.
    """
    facts: dict[str, Any] = {}

    async def caught_up(s: Stage, name: str) -> float:
        began = time.monotonic()
        while time.monotonic() - began < RECOVERY_TIMEOUT:
            try:
                state = (await s.replicas()).get(name)
            except Exception:   # the API may not answer during an election
                state = None
            if state and state["current"] and state["lag"] == 0:
                return time.monotonic() - began
            await asyncio.sleep(0.05)
        raise LabError(f"Node {name} did not catch up within {RECOVERY_TIMEOUT:.0f} s.")

    async def scenario(s: Stage, run: ScalingRun) -> None:
        await asyncio.sleep(0.5)
        leader = await s.stream_leader()
        follower = next(n.name for n in s.cluster.nodes if n.name != leader)
        facts.update(first_leader=leader, follower=follower)
        run.marks.append((await s.cluster.kill(follower), f"{follower} killed"))
        await asyncio.sleep(follower_down)
        run.marks.append((await s.cluster.restart(follower), f"{follower} back"))
        facts["follower_catch_up_s"] = await caught_up(s, follower)
        await asyncio.sleep(settle)
        leader = await s.stream_leader()
        run.marks.append((await s.cluster.kill(leader), f"leader {leader} killed"))
        facts["killed_leader"] = leader
        while (new := await _leader_or_none(s)) in (None, leader):
            await asyncio.sleep(0.05)
        facts["new_leader"] = new
        await asyncio.sleep(0.3)
        run.marks.append((await s.cluster.restart(leader), f"{leader} back"))
        facts["leader_catch_up_s"] = await caught_up(s, leader)

    run = await _run(gateways=gateways, clients=clients, rate=rate, duration=None, kind="mixed", scenario=scenario)
    run.facts.update(facts)
    run.facts["follower_pause_s"] = run.pause_after(f"{facts['follower']} killed", within=follower_down + 1.0)
    run.facts["leader_pause_s"] = run.pause_after(f"leader {facts['killed_leader']} killed")
    run.facts["acked_missing_from_stream"] = len(await _missing_from_stream(_stage, run))
    return run


async def _leader_or_none(s: Stage) -> str | None:
    try:
        return await s.stream_leader()
    except Exception:   # no leader to answer yet
        return None


async def _missing_from_stream(s: Stage, run: ScalingRun) -> list[int]:
    """Acknowledged events the stream does not hold under their id, read back from the cluster one by one."""
    js, missing = s.client.jetstream(timeout=2), []
    for seq, p in run.acked.items():
        for attempt in range(3):   # the API may be briefly busy right after an election
            try:
                message = await js.get_msg(s.stream, seq)
                break
            except Exception:
                message = None
                await asyncio.sleep(0.2)
        if message is None or (message.headers or {}).get("Nats-Msg-Id", "").rsplit("-", 1)[-1] != str(p.n):
            missing.append(seq)
    return missing


# -- 4. two of three down: no quorum -----------------------------------------------------------

@on_lab_loop(expected=lambda kw: kw.get("attempts", 3) * PUBLISH_TIMEOUT + 2.0)
async def run_quorum_loss(*, attempts: int = 3) -> dict[str, Any]:
    """Kill both followers of the stream's leader; try to publish; bring them back; publish again."""
    s = await stage.coro(1)
    leader = await s.stream_leader()
    followers = [n.name for n in s.cluster.nodes if n.name != leader]
    subject, run = s.subject.replace(">", "quorum"), next(_run_ids)
    for name in followers:
        await s.cluster.kill(name)
    refused: list[str] = []
    acked_while_down = 0
    try:
        for i in range(attempts):
            try:
                await publish_event(s.js, subject, f"q{run}-{i}", event_body(time.monotonic(), 0.0))
                acked_while_down += 1
            except PublishRefused as error:
                refused.append(str(error))
    finally:
        restarted = time.monotonic()
        for name in followers:
            await s.cluster.restart(name)
    while True:
        try:
            await publish_event(s.js, subject, f"q{run}-back", event_body(time.monotonic(), 0.0))
            break
        except PublishRefused:
            if time.monotonic() - restarted > RECOVERY_TIMEOUT:
                raise
            await asyncio.sleep(0.05)
    first_ack = time.monotonic() - restarted
    return {"leader": leader, "killed": followers, "attempts": attempts, "acked_while_down": acked_while_down,
            "refused": len(refused), "error": refused[0] if refused else "", "first_ack_after_restart_s": first_ack,
            "whole_again_s": first_ack + await s.wait_healthy()}


# -- the control panel's experiment ----------------------------------------------------------

FAULTS = ("nothing", "gateway 0", "gateway 1", "gateway 2", "a broker node, then the stream leader")


def _expected_panel(kwargs: dict) -> float:
    return 12.0 if kwargs.get("kill", "").startswith("a broker") else kwargs.get("duration", 3.0) + 2.0


@on_lab_loop(expected=_expected_panel)
async def run_panel(*, gateways: int = 3, clients: int = 12, rate: float = 20.0, duration: float = 3.0,
                    kill: str = "gateway 0") -> ScalingRun:
    """One run with a fault of your choice: K gateways, N clients, an event rate, and what to kill."""
    if kill not in FAULTS:
        raise ValueError(f"kill must be one of {FAULTS}, not {kill!r}.")
    if kill == "nothing":
        return await run_fanout.coro(gateways=gateways, clients=clients, rate=rate, duration=duration, kind="mixed")
    if kill.startswith("gateway"):
        target = int(kill.split()[1])
        if target >= gateways:
            raise ValueError(f"There is no {kill} with {gateways} gateway(s); they are numbered from 0.")
        return await run_gateway_failover.coro(gateways=gateways, clients=clients, rate=rate, duration=duration,
                                               kill=target, kill_at=duration / 3)
    return await run_broker_faults.coro(gateways=gateways, clients=clients, rate=rate)


# -- going past one machine --------------------------------------------------------------------

def machine_plan(hosts: list[str], *, client_port: int = 4222, cluster_port: int = 6222,
                 store: str = "/var/lib/nats") -> pd.DataFrame:
    """The command each machine runs for a cluster on ``hosts``: the same options the lab uses on loopback."""
    routes = [f"nats://{h}:{cluster_port}" for h in hosts]
    rows = []
    for i, host in enumerate(hosts, start=1):
        args = node_arguments(f"n{i}", host=host, port=client_port, cluster_port=cluster_port, routes=routes,
                              store=store, monitor_port=8222)
        rows.append({"node": f"n{i}", "host": host, "command": "nats-server " + " ".join(args)})
    return pd.DataFrame(rows)


__all__ = ["FAULTS", "cluster_state", "split_cpu", "PublishRefused", "gateway_memory", "run_panel", "ScalingRun", "Stage", "close_stage", "machine_plan", "produce", "project",
           "publish_event", "run_broker_faults", "run_fanout", "run_gateway_failover", "run_quorum_loss", "stage",
           "sweep_gateways", "unit_costs"]
