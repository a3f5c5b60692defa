"""Chapter 9's stage: gateways fed by a three-node JetStream cluster, and the producer that feeds it.

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
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from nats.js.api import StorageType

from ..broker import BrokerError
from ..cluster import Cluster, connect_with_stream, start_cluster
from ..lab import LabError, lab, on_lab_loop
from ..patterns.gateway import GatewayProcess, event_body

CLUSTER = "scaling"
PUBLISH_TIMEOUT = 0.5   # seconds to wait for an ack before publishing again (same id)
MAX_GATEWAYS, MAX_CLIENTS, MAX_RATE, MAX_DURATION = 6, 300, 200.0, 20.0
DRAIN_TIMEOUT = 5.0     # after the last ack, how long clients may take to see it
RECOVERY_TIMEOUT = 20.0 # an election (4-9 s) twice over, on a busy machine
_stream_ids = itertools.count(1)
run_ids = itertools.count(1)


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


@on_lab_loop(expected=lambda kw: 3.0, measures=False)
async def stage(gateways: int = 1) -> Stage:
    """The lab's stage, started if needed, with at least ``gateways`` gateways running."""
    global _stage
    cluster = await start_cluster.coro(CLUSTER)    # every node up (restarted if a run left one down)
    if _stage is None or _stage.cluster is not cluster:
        if _stage is not None:
            await _stage.close()
        n = next(_stream_ids)
        stream, subject = f"TICKS_{n}", f"ticks{n}.>"
        client = await connect_with_stream(cluster, "producer", name=stream, subjects=[subject], num_replicas=3,
                                           storage=StorageType.FILE, duplicate_window=120.0)
        _stage = Stage(cluster, client, stream, subject)
        lab.on_shutdown("scaling-stage", close_stage.coro)
    await _stage.ensure_gateways(gateways)
    await _stage.wait_healthy()
    return _stage


@on_lab_loop(measures=False)
async def close_stage() -> None:
    global _stage
    lab.forget("scaling-stage")
    if _stage is not None:
        await _stage.close()
        _stage = None


@on_lab_loop(measures=False)
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
    run = next(run_ids)
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


__all__ = ["PublishRefused", "Publish", "Stage", "cluster_state", "close_stage", "produce", "publish_event", "stage"]
