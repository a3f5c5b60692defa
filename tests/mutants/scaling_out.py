"""Chapter 9 (scaling out): bugs in the stream's replication, the gateways and their clients.

The stream's replica count is chosen where the stage creates it; the gateway and its clients are
each one edit of their own source (``patterns/gateway.py``, ``patterns/sse.py``), as a developer
would make it. Mutants of the gateway run inside its child processes (``boot/sitecustomize.py``).
"""

from mutants import Mutant, edit, swap

NOTEBOOK = "09_scaling_out"
STAGE_STREAM = "labsupport.experiments.scaling_stage:connect_with_stream"
SSE_HANDLER = "labsupport.patterns.sse:EventStreamHandler.get"
SSE_CLIENT = "labsupport.patterns.sse:listen"


def _default_replicas(add_stream):
    async def add_stream_without_replicas(client, **config):
        config.pop("num_replicas", None)   # the bug: the replica count is not passed on; JetStream keeps one copy
        return await add_stream(client, **config)
    return add_stream_without_replicas


def _replicas(count: int):
    """The stage's stream is made with ``count`` replicas instead of three."""
    def make(connect_with_stream):
        async def connect_with_fewer_replicas(cluster, client_name, **config):
            return await connect_with_stream(cluster, client_name, **{**config, "num_replicas": count})
        return connect_with_fewer_replicas
    return make


MUTANTS = [
    Mutant("stream-with-one-replica", "streams are created without num_replicas, so JetStream keeps one copy",
           NOTEBOOK, ("X3 three replicas", "X3 copies keep acknowledged events", "X3 no quorum"),
           swap("labsupport.cluster:add_stream", _default_replicas), group=1),
    Mutant("sse-client-starts-at-first-server", "the SSE client ignores first= and always starts at the first gateway",
           NOTEBOOK, ("X1 even split", "X2 moved clients"),
           swap(SSE_CLIENT, edit(('last_id, delay, at = "", retry, first', 'last_id, delay, at = "", retry, 0'))), group=1),
    Mutant("sse-handler-polls-its-feed", "the SSE handler looks for news ten times a second instead of being woken",
           NOTEBOOK, ("X1 median latency",),
           swap(SSE_HANDLER, edit(("news = await self.feed.wait_after(cursor, timeout=self.heartbeat)",
                                   "await asyncio.sleep(0.1)\nnews = self.feed.after(cursor)"))), group=1),
    Mutant("sse-client-reconnects-at-once", "the SSE client reconnects without waiting the retry delay",
           NOTEBOOK, ("X2 back after the retry delay",),
           swap(SSE_CLIENT, edit(("await asyncio.sleep(delay)", "pass  # reconnect at once"))), group=1),
    Mutant("gateway-in-asyncio-debug-mode", "the gateway's event loop is left in asyncio's debug mode",
           NOTEBOOK, ("X4 same cost per client",),
           swap("labsupport.patterns.gateway:main",
                edit(("args.subject, args.retry))", "args.subject, args.retry), debug=True)"))), group=2),
    Mutant("stream-with-two-replicas", "the stream is created with two replicas, which is no majority after one loss",
           NOTEBOOK, ("X3 follower pause", "X3 leader pause", "X3 majority rule"),
           swap(STAGE_STREAM, _replicas(2)), group=2),
    Mutant("sse-handler-skips-one", "the SSE handler waits for events after cursor + 1: an off-by-one that skips one",
           NOTEBOOK, ("X1 every event once", "X2 every event once", "X3 every event once", "X2 panel every event once"),
           swap(SSE_HANDLER, edit(("wait_after(cursor, timeout", "wait_after(cursor + 1, timeout"))), group=2),
    Mutant("sse-client-forgets-cursor-on-switch", "the SSE client starts afresh, with no Last-Event-ID, on the next gateway",
           NOTEBOOK, ("X2 every event once", "X2 panel every event once"),
           swap(SSE_CLIENT, edit(("at = (at + 1) % len(servers)",
                                  'at, last_id = (at + 1) % len(servers), ""  # a new server: a fresh start'))),
           group=2),
    Mutant("freeze-kills", "the node is frozen with SIGKILL where SIGSTOP was meant", NOTEBOOK,
           ("X3 frozen node unnoticed", "X3 frozen node found by pings"),
           swap("labsupport.broker:Broker.freeze", edit(("signal.SIGSTOP", "signal.SIGKILL"))), group=1),
    Mutant("ping-options-dropped", "the clients are connected without the ping settings they were given", NOTEBOOK,
           ("X3 frozen node found by pings",),
           swap("labsupport.experiments.scaling_faults:_client_of", edit(("error_cb=quietly, **pings)", "error_cb=quietly)"))),
           group=2),
]
