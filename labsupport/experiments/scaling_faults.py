"""Chapter 9's faults: a gateway killed, a broker node and then the stream's leader killed, two of
three nodes down (no quorum), a node's disk lost, a node frozen, and the control panel's run with a
fault of your choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from nats.js.api import StorageType

from ..cluster import add_stream, connect_with_stream
from ..lab import LabError, on_lab_loop
from ..patterns.gateway import event_body
from .guards import check_range
from .scaling import ScalingRun, run_fanout, run_on_gateways
from .scaling_stage import PUBLISH_TIMEOUT, RECOVERY_TIMEOUT, PublishRefused, Stage, publish_event, run_ids, stage

# the longest a stream's other copies take to elect a new leader: the largest election timeout
# (9 s, ``maxElectionTimeoutDefault`` in nats-server's server/raft.go) and a vote, with room for a busy machine
ELECTION_WAIT = 15.0

# -- 2. a gateway dies -----------------------------------------------------------------------

@on_lab_loop(expected=lambda kw: kw.get("duration", 3.0) + 2.5)
async def run_gateway_failover(*, gateways: int = 3, clients: int = 12, rate: float = 20.0, duration: float = 3.0,
                               kill: int = 0, kill_at: float = 1.0, kind: str = "mixed") -> ScalingRun:
    """Kill gateway ``kill`` (SIGKILL) ``kill_at`` s into the run; its clients move on and resume."""
    if gateways < 2:
        raise ValueError("Failover needs at least 2 gateways: with one, its clients have nowhere to go.")
    check_range("kill", kill, 0, gateways - 1)
    check_range("kill_at", kill_at, 0.0, duration)

    async def scenario(s: Stage, run: ScalingRun) -> None:
        await asyncio.sleep(max(0.0, run.t0 + kill_at - time.monotonic()))
        run.marks.append((s.gateways[kill].kill(), f"gateway {kill} killed"))

    run = await run_on_gateways(gateways=gateways, clients=clients, rate=rate, duration=duration, kind=kind,
                                scenario=scenario)
    killed_at = run.marks[0][0]
    recovery = []
    for r in run.recorders:
        before = [g for t, g in r.visits if t < killed_at]
        if before and before[-1] == kill:
            after = [t for t, _ in r.visits if t >= killed_at]
            recovery.append(after[0] - killed_at if after else float("inf"))
    run.facts.update({"moved_clients": len(recovery),
                      "recovery_min_s": min(recovery) if recovery else float("nan"),
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
    staged: list[Stage] = []   # the stage the run used, to read the stream back afterwards

    async def caught_up(s: Stage, name: str) -> float:
        began = time.monotonic()
        while time.monotonic() - began < RECOVERY_TIMEOUT:
            try:
                states = await s.replicas()
            except Exception:   # the API may not answer during an election
                states = {}
            state = states.get(name)
            if (state and state["current"] and state["lag"] == 0) or (states and name not in states):
                return time.monotonic() - began   # caught up, or it keeps no copy to catch up
            await asyncio.sleep(0.05)
        raise LabError(f"Node {name} did not catch up within {RECOVERY_TIMEOUT:.0f} s.")

    async def scenario(s: Stage, run: ScalingRun) -> None:
        staged.append(s)
        await asyncio.sleep(0.5)
        leader, others = await _leader_and_others(s)
        follower = others[0]
        facts.update(first_leader=leader, follower=follower)
        run.marks.append((await s.cluster.kill(follower), f"{follower} killed"))
        await asyncio.sleep(follower_down)
        run.marks.append((await s.cluster.restart(follower), f"{follower} back"))
        facts["follower_catch_up_s"] = await caught_up(s, follower)
        await asyncio.sleep(settle)
        leader = await s.stream_leader()
        run.marks.append((await s.cluster.kill(leader), f"leader {leader} killed"))
        facts["killed_leader"] = leader
        facts["new_leader"] = await _new_leader(s, leader, ELECTION_WAIT)
        await asyncio.sleep(0.3)
        run.marks.append((await s.cluster.restart(leader), f"{leader} back"))
        facts["leader_catch_up_s"] = await caught_up(s, leader)

    run = await run_on_gateways(gateways=gateways, clients=clients, rate=rate, duration=None, kind="mixed",
                                scenario=scenario)
    run.facts.update(facts)
    run.facts["follower_pause_s"] = run.pause_after(f"{facts['follower']} killed", within=follower_down + 1.0)
    run.facts["leader_pause_s"] = run.pause_after(f"leader {facts['killed_leader']} killed")
    run.facts["acked_missing_from_stream"] = len(await _missing_from_stream(staged[0], run))
    return run


async def _leader_or_none(s: Stage) -> str | None:
    return await _leader_or_none_of(s.js, s.stream)


async def _new_leader(s: Stage, old: str, wait: float) -> str | None:
    """The stream's new leader once one other than ``old`` is elected, or None after ``wait`` s
    (a stream whose other copies are no majority elects none)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if (new := await _leader_or_none(s)) not in (None, old):
            return new
        await asyncio.sleep(0.05)
    return None


async def _leader_and_others(s: Stage) -> tuple[str, list[str]]:
    """The stream's leader, and the other nodes: the stream's followers first, then nodes without a copy."""
    states = await s.replicas()
    leader = next(name for name, state in states.items() if state["role"] == "leader")
    others = [n.name for n in s.cluster.nodes if n.name != leader]
    return leader, sorted(others, key=lambda name: name not in states)


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
async def run_quorum_loss(*, attempts: int = 3, down: int = 2) -> dict[str, Any]:
    """Kill ``down`` followers of the stream's leader (both, by default); try to publish; bring them back;
    publish again."""
    s = await stage.coro(1)
    leader, others = await _leader_and_others(s)
    followers = others[:down]
    subject, run = s.subject.replace(">", "quorum"), next(run_ids)
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


# -- 5. a node's disk is lost: what the copies keep ----------------------------------------------

@on_lab_loop(expected=lambda kw: 6.0)
async def run_disk_loss(*, events: int = 20) -> dict[str, Any]:
    """The same ``events`` acknowledged in a stream with three replicas and in one with a single
    replica; then a node that keeps a copy of each is killed and comes back with an empty store,
    as a machine would with a new disk. What does each stream hold?

    The node is the single copy's home. If it leads the other stream, that stream's leader steps
    down first (so no election is needed); if it keeps no copy of the other stream, the other
    stream's leader loses its disk as well.
    """
    check_range("events", events, 1, 200)
    s = await stage.coro(0)
    run = next(run_ids)
    one, three = f"COPIES1_{run}", f"COPIES3_{run}"
    client = await connect_with_stream(s.cluster, "copies", name=three, subjects=[f"copies3-{run}"], num_replicas=3,
                                       storage=StorageType.FILE)
    js = client.jetstream(timeout=5)
    try:
        await add_stream(client, name=one, subjects=[f"copies1-{run}"], num_replicas=1, storage=StorageType.FILE)
        home = (await js.stream_info(one)).cluster.leader
        info = (await js.stream_info(three)).cluster
        if info.leader == home and info.replicas:
            await _step_down(client, js, three, home)
            info = (await js.stream_info(three)).cluster
        holders = {info.leader, *(r.name for r in info.replicas or [])}
        victims = [home] if home in holders else [home, info.leader]
        for stream, subject in ((three, f"copies3-{run}"), (one, f"copies1-{run}")):
            for n in range(1, events + 1):
                await publish_event(js, subject, f"{stream}-{n}", event_body(time.monotonic(), float(n)), timeout=5)
        for victim in victims:
            await s.cluster.replace_disk(victim)
        kept = {stream: await _messages_kept(js, stream) for stream in (three, one)}
        await s.wait_healthy()
    finally:
        for stream in (three, one):
            with contextlib.suppress(Exception):
                await js.delete_stream(stream)
        await client.close()
    return {"events": events, "nodes": victims, "kept_three": kept[three] or 0, "kept_one": kept[one] or 0,
            "single_copy": "never answered again" if kept[one] is None else "answered again"}


# -- 6. a node freezes: silence takes longer to notice than a crash -----------------------------

@dataclass
class FrozenNode:
    """How long clients of one broker node took to notice that it froze, and that it died."""

    node: str
    ping_interval: float          # s, the fast client's
    max_outstanding: int          # pings it sends unanswered before it calls the connection stale
    watched_s: float              # how long the frozen node was watched
    frozen_default_s: float | None   # the client with nats-py's default pings: None if it never noticed
    frozen_fast_s: float | None      # the client that pings every ping_interval s
    killed_s: float | None           # the default client again, when the node was killed instead

    def summary(self) -> dict:
        def shown(t: float | None) -> str:
            return f"not within {self.watched_s:g} s" if t is None else f"{t:.2f} s"
        return {"node": self.node,
                "frozen, default pings (every 120 s)": shown(self.frozen_default_s),
                f"frozen, a ping every {self.ping_interval:g} s": shown(self.frozen_fast_s),
                "killed, default pings": shown(self.killed_s)}


async def _client_of(node_url: str, others: list[str], noticed: list[float], **pings):
    """A client connected to ``node_url`` first; ``noticed`` gets the time it found the connection gone."""
    import nats

    async def disconnected() -> None:
        noticed.append(time.monotonic())

    async def quietly(error: Exception) -> None:   # the break is what is measured, not a problem to print
        pass

    return await nats.connect([node_url, *others], dont_randomize=True, reconnect_time_wait=0.1,
                              max_reconnect_attempts=-1, connect_timeout=1, disconnected_cb=disconnected,
                              error_cb=quietly, **pings)


async def _first_after(noticed: list[float], since: float, watch: float) -> float | None:
    """Seconds from ``since`` to the first time in ``noticed`` after it, waiting up to ``watch`` s."""
    deadline = since + watch
    while time.monotonic() < deadline:
        after = [t for t in noticed if t >= since]
        if after:
            return after[0] - since
        await asyncio.sleep(0.01)
    return None


@on_lab_loop(expected=lambda kw: kw.get("watch", 2.5) + 4.0)
async def run_frozen_node(*, watch: float = 2.5, ping_interval: float = 0.5, max_outstanding: int = 2) -> FrozenNode:
    """Two clients connect to one node: one with nats-py's default pings (every 120 s, two unanswered
    allowed), one pinging every ``ping_interval`` s. The node freezes (SIGSTOP) for ``watch`` s: who
    notices, and when? Then it runs on and is killed (SIGKILL): when does the default client notice?
    The node is a follower of the stream, not the meta-leader, so the cluster goes on working.
    """
    check_range("watch", watch, 0.5, 10.0, " s")
    check_range("ping_interval", ping_interval, 0.1, 2.0, " s")
    check_range("max_outstanding", max_outstanding, 1, 5)
    s = await stage.coro(0)
    busy = {await s.stream_leader(), await s.cluster.meta_leader()}
    name = next(n.name for n in s.cluster.nodes if n.name not in busy)
    node = s.cluster.node(name)
    others = [n.url for n in s.cluster.nodes if n.name != name]
    default_noticed: list[float] = []
    fast_noticed: list[float] = []
    default = await _client_of(node.url, others, default_noticed)
    fast = await _client_of(node.url, others, fast_noticed, ping_interval=ping_interval,
                            max_outstanding_pings=max_outstanding)
    try:
        await asyncio.sleep(ping_interval / 2)   # halfway between two ticks of the fast client's ping timer
        frozen = node.freeze()
        try:
            default_s, fast_s = await asyncio.gather(_first_after(default_noticed, frozen, watch),
                                                     _first_after(fast_noticed, frozen, watch))
        finally:
            node.thaw()
        await default.flush(timeout=5)   # the default client's connection works again
        killed = time.monotonic()
        await s.cluster.kill(name)
        killed_s = await _first_after(default_noticed, killed, watch)
    finally:
        await asyncio.gather(default.close(), fast.close(), return_exceptions=True)
        if not node.running:
            await s.cluster.restart(name)
        await s.wait_healthy()
    return FrozenNode(name, ping_interval, max_outstanding, watch, default_s, fast_s, killed_s)


async def _step_down(client, js, stream: str, leader: str, wait: float = RECOVERY_TIMEOUT) -> None:
    """Ask ``stream``'s leader to hand over to a follower, and wait until one has taken over."""
    await client.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"", timeout=5)
    deadline = time.monotonic() + wait
    while (await _leader_or_none_of(js, stream)) in (None, leader):
        if time.monotonic() > deadline:
            raise LabError(f"The leader of {stream} did not hand over within {wait:.0f} s.")
        await asyncio.sleep(0.05)


async def _leader_or_none_of(js, stream: str) -> str | None:
    try:
        return (await js.stream_info(stream)).cluster.leader
    except Exception:   # no leader to answer yet
        return None


async def _messages_kept(js, stream: str, wait: float = RECOVERY_TIMEOUT) -> int | None:
    """How many messages ``stream`` holds once it answers again (None if it does not within ``wait`` s)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            return (await js.stream_info(stream)).state.messages
        except Exception:   # not placed again yet, or electing
            await asyncio.sleep(0.1)
    return None


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


__all__ = ["FAULTS", "run_broker_faults", "run_disk_loss", "run_gateway_failover", "run_panel", "run_quorum_loss"]
