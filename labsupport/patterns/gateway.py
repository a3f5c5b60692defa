"""Gateways: many processes hold the clients' connections; a JetStream stream feeds them all.

One server can hold only so many SSE streams and WebSockets. Past that, systems that push to
many clients put **gateways** in front: identical processes that each hold some of the
connections and serve the same patterns as chapters 4 and 5. None of them makes events.
Producers publish to the broker cluster; every gateway follows the stream and passes each
event to its own clients.

The trick that makes gateways interchangeable is the event id. A JetStream stream numbers
its messages 1, 2, 3, ... and that *stream sequence* is the same whichever node or gateway
reads it. Each gateway mirrors the stream into a local ``Feed`` whose sequence numbers are the
stream's, and whose life is the stream's too (named from its creation time, so every gateway
names it alike and a stream made again gets a new name). So the SSE ``id:`` and the WebSocket
``seq`` mean the same on every gateway, and a client cut off from one gateway resumes on any
other with ``Last-Event-ID`` (or ``?after=``).

Server side (a child process; ``GatewayProcess`` starts it from the lab):

* an ordered JetStream consumer reads the stream from its first message and appends each one
  to the mirror, in order, with no gaps (``nats-py`` recreates the consumer after a broker
  node is lost, from the next sequence it needs);
* ``/events`` is chapter 4's SSE handler and ``/feed`` chapter 5's WebSocket handler on that
  mirror. One change: a gateway may be a few milliseconds behind another, so an id it has not
  seen yet is waited for (up to ``CATCH_UP`` s) before it is judged;
* ``POST /events`` publishes to the cluster, never to the gateway's own mirror.

Client side: ``follow_stream`` (SSE) and ``follow_socket`` (WebSocket) take the list of
gateway addresses. After a break they go to the next gateway, carrying their cursor.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field

import aiohttp

from ..feed import MAX_RATE, STREAM_BYTES, Event, Feed
from ..lab import LOOPBACK
from ..record import Recorder
from ..server_process import ChildServer, serve_commands
from . import sse
from ._input import cursor as read_cursor
from . import websocket as ws

CATCH_UP = 2.0        # seconds a gateway waits to reach an id another gateway already sent
RETRY_MS = 200        # reconnection delay the gateways ask for (EventSource's default is ~3 s)
HEARTBEAT = 1.0       # the consumer's idle heartbeat (s): two missed ones and it is recreated
SUBSCRIBE_ATTEMPTS = 5


class StreamMirror(Feed):
    """The stream's events, in stream order, as a ``Feed`` the chapter 4 and 5 handlers can serve."""

    def __init__(self) -> None:
        super().__init__(MAX_RATE)   # never started: events arrive from the stream
        self.gaps: list[tuple[int, int]] = []
        self.received: list[float] = []   # when each event reached this gateway (monotonic), for ladders

    def add(self, seq: int, created: float, value: float | None) -> None:
        """Append the stream's message ``seq``; a repeat is ignored, a gap is noted (it must not happen)."""
        if seq <= self.last_seq:
            return
        if seq != self.last_seq + 1:
            self.gaps.append((self.last_seq + 1, seq - 1))
            return
        self.events.append(Event(seq, created, value))
        self.received.append(time.monotonic())
        self._wake_readers()

    async def reach(self, seq: int, timeout: float = CATCH_UP) -> bool:
        """Wait until the mirror holds ``seq`` (another gateway may already have sent it)."""
        deadline = time.monotonic() + timeout
        while self.last_seq < seq and time.monotonic() < deadline:
            await self.wait_after(self.last_seq, timeout=deadline - time.monotonic())
        return self.last_seq >= seq


def stream_life(name: str, created: object) -> str:
    """The name of one life of a JetStream stream, alike on every gateway: from its name and ``created`` time."""
    return hashlib.sha256(f"{name}@{created}".encode()).hexdigest()[:2 * STREAM_BYTES]


def _ahead(seq: int | None, mirror: StreamMirror) -> int | None:
    """A sequence number this gateway has not reached yet, or None."""
    return seq if seq is not None and seq > mirror.last_seq else None


class GatewayStream(sse.EventStreamHandler):
    """Chapter 4's ``/events``, resuming from ids other gateways sent; ``POST`` goes to the cluster."""

    def initialize(self, feed: StreamMirror, publish, **options) -> None:
        super().initialize(feed, **options)
        self.publish_to_cluster = publish

    async def get(self) -> None:
        last_id = sse.read_event_id(self.request.headers.get("Last-Event-ID", "").strip())
        wanted = _ahead(last_id[1] if last_id and last_id[0] == self.feed.stream else None, self.feed)
        if wanted is not None:
            await self.feed.reach(wanted)   # if it never comes, the usual reset event follows
        await super().get()

    async def publish(self, value: float) -> int:
        return await self.publish_to_cluster(value)


class GatewaySocket(ws.FeedSocket):
    """Chapter 5's ``/feed``, resuming ``?after=n`` from a sequence another gateway sent."""

    async def open(self) -> None:
        wanted = _ahead(read_cursor(self.get_query_argument("after", "").strip()), self.hub.feed)
        if wanted is not None:
            await self.hub.feed.reach(wanted)
        super().open()


def handlers(mirror: StreamMirror, publish, *, retry: int = RETRY_MS) -> list:
    """A gateway's routes: SSE on ``/events``, WebSocket on ``/feed``, both on the stream's mirror."""
    return [(r"/events", GatewayStream, {"feed": mirror, "publish": publish, "retry": retry}),
            (r"/feed", GatewaySocket, {"hub": ws.Hub(mirror)})]


def event_body(created: float, value: float) -> bytes:
    """What a producer publishes: the event's creation time (monotonic, one clock per machine) and value."""
    return json.dumps({"created": created, "value": value}).encode()


# -- the gateway process ---------------------------------------------------------------------

async def serve(servers: list[str], stream: str, subject: str, retry: int) -> None:
    """The child's main: follow the stream, serve the patterns, answer the parent's questions."""
    import nats
    import nats.errors
    from nats.js.api import DeliverPolicy

    mirror = StreamMirror()
    problems: list[str] = []

    async def note(error: Exception) -> None:
        problems.append(f"{type(error).__name__}: {error}")

    client = await nats.connect(servers, name=f"gateway-{os.getpid()}", reconnect_time_wait=0.05,
                                max_reconnect_attempts=-1, error_cb=note)
    js = client.jetstream(timeout=5.0)

    async def on_message(msg) -> None:
        try:
            body = json.loads(msg.data)
            created, value = float(body["created"]), body["value"]
        except (ValueError, TypeError, KeyError):   # not an event: pass it on empty, so no id goes missing
            problems.append(f"message {msg.metadata.sequence.stream} is not an event: {msg.data[:60]!r}")
            created, value = time.monotonic(), None
        mirror.add(msg.metadata.sequence.stream, created, value)

    for attempt in range(1, SUBSCRIBE_ATTEMPTS + 1):   # a busy or electing cluster may not answer at once
        try:
            mirror.stream = stream_life(stream, (await js.stream_info(stream)).created)
            await js.subscribe(subject, stream=stream, cb=on_message, ordered_consumer=True,
                               idle_heartbeat=HEARTBEAT, deliver_policy=DeliverPolicy.ALL)
            break
        except nats.errors.Error as error:
            if attempt == SUBSCRIBE_ATTEMPTS:
                raise
            await note(error)
            await asyncio.sleep(0.5)

    async def publish(value: float) -> int:
        return (await js.publish(subject.replace(">", "post"), event_body(time.monotonic(), value))).seq

    async def answer(word: str, rest: list[str]) -> dict:
        if word == "received":   # "received first last": when those events arrived here
            first, last = int(rest[0]), int(rest[1])
            return {"received": mirror.received[max(first - 1, 0):last]}
        return {"last_seq": mirror.last_seq, "gaps": mirror.gaps, "problems": problems[-5:]}   # "state"

    await serve_commands(handlers(mirror, publish, retry=retry), answer)


class GatewayProcess(ChildServer):
    """One gateway in a child process; the lab reads its CPU and memory from the outside."""

    def __init__(self, servers: list[str], stream: str, subject: str, *, retry: int = RETRY_MS) -> None:
        super().__init__("gateway")
        self.servers, self.stream, self.subject, self.retry = list(servers), stream, subject, retry

    def command(self) -> list[str]:
        # main() from the imported module, not the file run as __main__: one copy of each class in
        # the child, the one that code patching this module (the mutation suite) sees
        return [sys.executable, "-c", "from labsupport.patterns.gateway import main; main()",
                "--servers", ",".join(self.servers), "--stream", self.stream, "--subject", self.subject,
                "--retry", str(self.retry)]

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def state(self) -> dict:
        """The last stream sequence the gateway holds, any gap in it, its broker client's last problems."""
        return await self._ask("state")

    async def received(self, first: int, last: int) -> dict[int, float]:
        """When events ``first`` to ``last`` reached this gateway (monotonic, the lab's clock too)."""
        times = (await self._ask(f"received {first} {last}"))["received"]
        return dict(zip(range(first, first + len(times)), times))

    def kill(self) -> float:
        """SIGKILL, as a crash would: its clients' connections break at once. Returns when."""
        self.process.kill()
        return time.monotonic()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A gateway: serve SSE and WebSocket clients from a JetStream stream.")
    parser.add_argument("--servers", required=True, help="broker URLs, comma separated")
    parser.add_argument("--stream", required=True)
    parser.add_argument("--subject", required=True)
    parser.add_argument("--retry", type=int, default=RETRY_MS)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.servers.split(","), args.stream, args.subject, args.retry))


# -- clients ---------------------------------------------------------------------------------

@dataclass
class GatewayRecorder(Recorder):
    """A client's log, plus which gateway each of its connections went to and when it opened."""

    visits: list[tuple[float, int]] = field(default_factory=list)


async def follow_stream(gateways: list[str], recorder: GatewayRecorder, *, first: int = 0,
                        retry: float = RETRY_MS / 1000) -> None:
    """SSE through any gateway: chapter 4's client; on a break, the next gateway, with ``Last-Event-ID``."""
    await sse.listen(gateways, recorder, retry=retry, first=first, visits=recorder.visits, connect_timeout=2)


async def follow_socket(gateways: list[str], recorder: GatewayRecorder, *, first: int = 0,
                        retry: float = RETRY_MS / 1000) -> None:
    """The same over WebSockets: chapter 5's client, which keeps the cursor and sends it as ``?after=``."""
    await ws.follow(gateways, recorder, retry=retry, first=first, visits=recorder.visits, connect_timeout=2)


CLIENTS = {"sse": follow_stream, "websocket": follow_socket}

if __name__ == "__main__":
    main()
