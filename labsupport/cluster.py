"""A NATS cluster with JetStream: three ``nats-server`` processes that keep every message three times.

One broker (``broker.py``) is one machine's worth of trouble: if it stops, nobody can publish.
A *cluster* runs several servers that connect to each other (the *routes*) and share the work.
With JetStream on, they also agree, by the Raft consensus protocol, on what is stored:

* the servers elect a **meta-leader**, which decides where each stream lives;
* a stream with ``num_replicas=3`` is kept by three servers. One of them is the stream's
  **leader**: a publish is acknowledged only once a *majority* (2 of 3) has stored it, so an
  acknowledged message survives the loss of any one server;
* when the leader is lost, the others elect a new one after an election timeout (4 to 9 s in
  nats-server's ``server/raft.go``); when two of three are lost, there is no majority and
  nothing can be acknowledged.

Here each node is the lab's ``Broker`` (its own process, store, client port, watchdog; see
``broker.py``) with cluster options added. The options are the same on one machine or three:
``node_arguments`` writes them from host names and ports, and ``Cluster`` passes loopback
(NATS docs: "JetStream Clustering", https://docs.nats.io/running-a-nats-service/configuration/clustering/jetstream_clustering).

Every node also serves NATS's HTTP monitoring on a port of its own choosing; ``/jsz`` there
says who the meta-leader is.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import time
from pathlib import Path

import aiohttp
import nats.errors
import nats.js.errors

from .broker import Broker, BrokerError, PortTaken, connect
from .lab import LOOPBACK, on_lab_loop
from .named_processes import NamedProcesses

CLUSTER_NAME = "course"
LEADER_TIMEOUT = 30.0   # the first election takes well under a second; a busy machine is slower
PORT_ATTEMPTS = 3       # sets of cluster ports tried before a start gives up
STREAM_TIMEOUT = 30.0   # creating a replicated stream is a vote; a busy machine can take a while


def node_arguments(name: str, *, host: str, port: int, cluster_port: int, routes: list[str], store: str | Path,
                   cluster_name: str = CLUSTER_NAME, monitor_port: int = -1) -> list[str]:
    """``nats-server`` options for one node of a JetStream cluster (the same on loopback or a LAN).

    ``routes`` lists every node's cluster address (``nats://host:port``), this one's included:
    nats-server skips the route to itself, and JetStream counts the routes to know how many
    nodes make the first majority. A port of -1 lets the server pick one and report it.
    """
    return ["-a", host, "-p", str(port), "-m", str(monitor_port), "-n", name, "-js", "-sd", str(store),
            "--cluster_name", cluster_name, "--cluster", f"nats://{host}:{cluster_port}",
            "--routes", ",".join(routes)]


def free_ports(count: int) -> list[int]:
    """Ports the OS picked for us just now. The nodes must know each other's cluster port before
    any of them starts, so here (unlike everywhere else in the course) we ask for them first;
    ``Cluster.start`` asks again if another program binds one before its node does."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((LOOPBACK, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class ClusterNode(Broker):
    """One node: a lab broker whose command line carries the cluster options (its ``Cluster``
    gives it its cluster port and every node's route)."""

    def __init__(self, name: str, *, binary: str | Path | None = None) -> None:
        super().__init__(binary, name=name)
        self.cluster_port: int | None = None
        self.routes: list[str] = []
        self.monitor_port: int | None = None

    def _command(self, port: int, ports_dir: Path) -> list[str]:
        return [str(self.binary), "--ports_file_dir", str(ports_dir),
                *node_arguments(self.name, host=LOOPBACK, port=port, cluster_port=self.cluster_port,
                                routes=self.routes, store=self.store)]

    async def _wait_ready(self, ports_dir: Path) -> int:
        port = await super()._wait_ready(ports_dir)
        ports = json.loads(next(ports_dir.glob(f"*_{self.process.pid}.ports")).read_text())
        self.monitor_port = int(ports["monitoring"][0].rsplit(":", 1)[1])
        return port

    async def jsz(self) -> dict:
        """The node's JetStream report (``GET /jsz`` on its monitoring port)."""
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(f"http://{LOOPBACK}:{self.monitor_port}/jsz") as response:
                return await response.json()

    def __repr__(self) -> str:
        state = f"running, client port {self.port}, cluster port {self.cluster_port}" if self.running else "down"
        return f"<node {self.name} {state}>"


class Cluster:
    """``size`` JetStream nodes on loopback, all routed to each other."""

    def __init__(self, size: int = 3, *, binary: str | Path | None = None) -> None:
        if not 1 <= size <= 7:
            raise ValueError(f"A cluster here has 1 to 7 nodes (3 or 5 in practice), not {size!r}.")
        self.nodes: list[ClusterNode] = []
        try:
            for i in range(1, size + 1):
                self.nodes.append(ClusterNode(f"n{i}", binary=binary))
        except BaseException:
            self.close_now()
            raise
        self._route(free_ports(size))
        self.start_seconds: float | None = None   # launch to an elected meta-leader

    @property
    def urls(self) -> list[str]:
        """Every node's client address: a client given all of them fails over between them."""
        return [node.url for node in self.nodes]

    @property
    def running(self) -> bool:
        return any(node.running for node in self.nodes)

    def node(self, name: str) -> ClusterNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise ValueError(f"There is no node {name!r}; the nodes are {[n.name for n in self.nodes]}.")

    def __repr__(self) -> str:
        return f"<Cluster of {len(self.nodes)}: {', '.join(repr(n) for n in self.nodes)}>"

    def _route(self, cluster_ports: list[int]) -> None:
        routes = [f"nats://{LOOPBACK}:{p}" for p in cluster_ports]
        for node, port in zip(self.nodes, cluster_ports):
            node.cluster_port, node.routes = port, routes

    async def start(self) -> "Cluster":
        """Start every node at once, then wait until they have elected a meta-leader."""
        began = time.monotonic()
        for attempt in range(1, PORT_ATTEMPTS + 1):
            results = await asyncio.gather(*(node.start() for node in self.nodes), return_exceptions=True)
            failures = [r for r in results if isinstance(r, BaseException)]
            if not failures:
                break
            await asyncio.gather(*(node.stop() for node in self.nodes))
            # The cluster ports were free when free_ports() asked, but another program may bind
            # one before its node does; the routes name them all, so every node takes new ones
            # and starts again from an empty store.
            if attempt == PORT_ATTEMPTS or not all(isinstance(f, PortTaken) for f in failures):
                raise failures[0]
            for node in self.nodes:
                shutil.rmtree(node.store, ignore_errors=True)
            self._route(free_ports(len(self.nodes)))
        await self.meta_leader()
        self.start_seconds = time.monotonic() - began
        return self

    async def meta_leader(self, timeout: float = LEADER_TIMEOUT) -> str:
        """The meta-leader's name, once every running node agrees on one that is running."""
        deadline = time.monotonic() + timeout
        while True:
            running = [node for node in self.nodes if node.running]
            try:
                leaders = {(await node.jsz()).get("meta_cluster", {}).get("leader") for node in running}
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                leaders = set()
            if len(leaders) == 1 and (leader := leaders.pop()) in {n.name for n in running}:
                return leader
            if time.monotonic() > deadline:
                raise BrokerError(f"The cluster elected no meta-leader within {timeout:.0f} s: "
                                  f"{sum(n.running for n in self.nodes)} of {len(self.nodes)} nodes run, and "
                                  f"a majority ({len(self.nodes) // 2 + 1}) must run to elect one.")
            await asyncio.sleep(0.05)

    async def kill(self, name: str) -> float:
        """Kill one node as a crash would (SIGKILL); returns when (monotonic)."""
        node = self.node(name)
        await node.stop(hard=True)
        return time.monotonic()

    async def restart(self, name: str) -> float:
        """Start a stopped node again on its store and ports; returns when it was ready."""
        await self.node(name).start()
        return time.monotonic()

    async def replace_disk(self, name: str) -> float:
        """Kill one node, delete its store, start it again empty: a machine back with a new disk.
        Returns when it was ready (monotonic)."""
        node = self.node(name)
        await node.stop(hard=True)
        shutil.rmtree(node.store, ignore_errors=True)
        return await self.restart(name)

    async def close(self) -> None:
        """Stop every node and delete every store."""
        await asyncio.gather(*(node.close() for node in self.nodes))

    def close_now(self) -> None:
        for node in self.nodes:
            node.close_now()


# -- the lab's clusters -----------------------------------------------------------------------

_clusters: NamedProcesses[Cluster] = NamedProcesses("cluster")


@on_lab_loop(measures=False)
async def start_cluster(name: str = "cluster", *, size: int = 3, fresh: bool = False,
                        binary: str | Path | None = None) -> Cluster:
    """The lab's cluster of that name, started if needed (every node up); ``fresh=True`` starts an empty one."""
    cluster = _clusters.running.get(name)
    if cluster is not None and not fresh and binary is None and len(cluster.nodes) == size:
        await asyncio.gather(*(node.start() for node in cluster.nodes if not node.running))
        await cluster.meta_leader()
        return cluster
    return await _clusters.replace(name, lambda: Cluster(size, binary=binary))


@on_lab_loop(measures=False)
async def stop_cluster(name: str = "cluster") -> None:
    """Stop the named cluster's nodes and delete their stores."""
    await _clusters.stop(name)


async def connect_cluster(cluster: Cluster | list[str], name: str, **options):
    """A nats-py client that knows every node, so it moves to another when its node goes."""
    urls = cluster.urls if isinstance(cluster, Cluster) else list(cluster)
    return await connect(urls, name, **options)


async def connect_with_stream(cluster: Cluster, client_name: str, *, timeout: float = STREAM_TIMEOUT, **config):
    """A client of ``cluster`` with the stream ``config`` (``name``, ``num_replicas=3`` and the rest)
    in place; if the stream cannot be made, the client is closed and ``BrokerError`` says why."""
    client = await connect_cluster(cluster, client_name)
    try:
        await add_stream(client, timeout=timeout, **config)
    except BaseException:
        await client.close()
        raise
    return client


async def add_stream(client, *, timeout: float = STREAM_TIMEOUT, **config) -> None:
    """Create the stream ``config`` describes, asking again until it exists or ``timeout`` (s) has passed.

    The meta-leader places a replicated stream by a Raft vote. Just after an election, or on a
    busy machine, that vote can outlast the client's request, or find the peers not yet caught
    up ("no suitable peers for placement"). Asking again with the same config is safe: a stream
    that already exists with it is simply returned.
    """
    js = client.jetstream(timeout=5)
    deadline = time.monotonic() + timeout
    while True:
        try:
            await js.add_stream(**config)
            return
        except (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError) as error:
            problem = error
        except nats.js.errors.APIError as error:
            if "peers" not in (error.description or ""):
                raise
            problem = error
        if time.monotonic() > deadline:
            raise BrokerError(f"The cluster did not create the stream {config.get('name')!r} within "
                              f"{timeout:.0f} s ({problem!r}). The machine may be very busy: run the cell "
                              "again; if it persists, restart the kernel.")
        await asyncio.sleep(0.2)
