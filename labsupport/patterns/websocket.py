"""WebSockets: one HTTP request upgrades the connection, then both sides send whenever they like.

The client asks ``GET`` with ``Upgrade: websocket`` and a random ``Sec-WebSocket-Key``; the
server answers ``101 Switching Protocols`` and from then on the TCP connection carries
*frames* both ways, independently: a frame header of 2 to 14 bytes, then the message.

Server side (Tornado), four rooms on one server:

* ``/feed?after=n`` pushes the feed's events; a client that reconnects with the last
  sequence number it saw gets everything after it (WebSockets have no built-in resume);
* ``/echo`` answers every message with itself: round-trip time;
* ``/chat?name=...`` relays every message to everyone in the room, in one order;
* ``/game`` runs a game loop: the server sends the state at a fixed tick rate while the
  client sends its inputs whenever it likes. Neither waits for the other (full duplex).

Every message to a client passes through that client's ``Outbox``, drained by one writer
task that awaits each ``write_message``: its future resolves once the kernel has taken the frame. A slow reader therefore makes its
outbox grow, never the server's memory without limit: past ``limit`` messages or
``max_bytes`` bytes the policy either drops the oldest (right for state where only the
latest matters) or closes the connection with 1013, Try Again Later (right where every
message matters and the client can resume). Closing frees the outbox at once, and a closed
socket leaves the hub.

Keepalive: with the ``websocket_ping_interval`` and ``websocket_ping_timeout`` settings
(pass them to ``lab.serve``) Tornado pings each client and drops one that stops answering,
which finds dead peers a quiet TCP connection would hide for hours. Bad input gets a close
code, not silence (RFC 6455 7.4.1): 1002 for a frame that breaks the protocol (an unmasked
client frame, a reserved opcode or bit), 1009 for a message over ``websocket_max_message_size``,
1007 for data that does not fit (text that is not UTF-8, a game input that is not the JSON the
game expects), 1008 for a request the endpoint refuses (a feed cursor it never sent). Other
clients are not affected. ``rfc6455.py`` holds the frame checks Tornado leaves out; every lab
server reads its clients through them (``serving.py``).

Client side (aiohttp): ``follow`` (reconnecting feed reader), ``play`` (the game's two
concurrent loops), ``chat`` and ``round_trips``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import sys
import time
from dataclasses import dataclass, field

import aiohttp
import tornado.websocket

from ..feed import Feed
from ..record import Recorder
from ._input import GetOnly, cursor, strict_json
from .pattern import Pattern
from .rfc6455 import INVALID_DATA, close_reason

OUTBOX_LIMIT = 1000           # messages waiting for one client before the policy applies
OUTBOX_BYTES = 4 * 2**20      # bytes of memory those messages may hold
POLICIES = ("close", "drop-oldest")
POLICY_VIOLATION = 1008       # RFC 6455 7.4.1: a request the endpoint refuses
TRY_AGAIN_LATER = 1013        # IANA WebSocket close code registry: come back later (and resume)


class Outbox:
    """Messages waiting to be written to one client: at most ``limit`` of them holding ``max_bytes``.

    None lifts a bound. Sizes are the memory each message object holds (``sys.getsizeof``).
    A message arriving at an empty outbox is always taken, whatever its size: it is already in
    memory, and refusing it would stall the client for good.
    """

    def __init__(self, limit: int | None, policy: str, max_bytes: int | None = OUTBOX_BYTES) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
        self.limit, self.policy, self.max_bytes = limit, policy, max_bytes
        self.queue: collections.deque = collections.deque()
        self.bytes = self.dropped = self.peak = self.peak_bytes = 0
        self._nonempty = asyncio.Event()

    def put(self, message: str | bytes) -> bool:
        """Queue a message. False means the client is too slow and must be disconnected."""
        size = sys.getsizeof(message)
        if self._full(size):
            if self.policy == "close":
                return False
            while self._full(size):
                self.bytes -= sys.getsizeof(self.queue.popleft())
                self.dropped += 1
        self.queue.append(message)
        self.bytes += size
        self.peak, self.peak_bytes = max(self.peak, len(self.queue)), max(self.peak_bytes, self.bytes)
        self._nonempty.set()
        return True

    def _full(self, size: int) -> bool:
        return bool(self.queue) and (
            (self.limit is not None and len(self.queue) >= self.limit)
            or (self.max_bytes is not None and self.bytes + size > self.max_bytes))

    async def get(self) -> str | bytes:
        while not self.queue:
            self._nonempty.clear()
            await self._nonempty.wait()
        message = self.queue.popleft()
        self.bytes -= sys.getsizeof(message)
        return message

    def clear(self) -> None:
        """Let go of every waiting message (the client is gone or being closed)."""
        self.queue.clear()
        self.bytes = 0


@dataclass
class Hub:
    """What the server's sockets share: the feed, the rules, the chat room and a log."""

    feed: Feed | None = None
    outbox_limit: int | None = OUTBOX_LIMIT
    policy: str = "close"
    outbox_bytes: int | None = OUTBOX_BYTES
    tick_rate: float = 20.0
    room: set = field(default_factory=set)
    chat_seq: int = 0
    sockets: list = field(default_factory=list)   # the sockets open now, for experiments to inspect
    inputs: list = field(default_factory=list)    # game inputs: (n, sent, received)


class OutboxSocket(GetOnly, tornado.websocket.WebSocketHandler):
    """A WebSocket whose outgoing messages queue in a bounded outbox, written by one task."""

    def initialize(self, hub: Hub) -> None:
        self.hub = hub
        self.opened = self.closed = None
        self.tasks: list[asyncio.Task] = []

    def open(self) -> None:
        self.opened = time.monotonic()
        self.outbox = Outbox(self.hub.outbox_limit, self.hub.policy, self.hub.outbox_bytes)
        self.hub.sockets.append(self)
        self.start(self._write_outbox())

    def start(self, coro) -> None:
        self.tasks.append(asyncio.create_task(coro))

    def send(self, message: dict) -> None:
        self.deliver(json.dumps(message))

    def deliver(self, message: str | bytes) -> None:
        """Queue one message for this client; close it if its outbox is full (policy "close")."""
        if self.ws_connection is None or self.ws_connection.is_closing():
            return  # closing: nothing more goes out
        if not self.outbox.put(message):
            waiting = f"{len(self.outbox.queue)} messages, {self.outbox.bytes} bytes"
            self.outbox.clear()  # free the memory now, not when the close handshake ends
            self.close(TRY_AGAIN_LATER, f"reader too slow ({waiting} waiting): reconnect and resume")

    async def _write_outbox(self) -> None:
        try:
            while True:
                message = await self.outbox.get()
                await self.write_message(message, binary=isinstance(message, bytes))  # once the kernel has it
        except tornado.websocket.WebSocketClosedError:
            pass

    def on_close(self) -> None:
        self.closed = time.monotonic()
        for task in self.tasks:
            task.cancel()
        self.outbox.clear()
        if self in self.hub.sockets:
            self.hub.sockets.remove(self)


class FeedSocket(OutboxSocket):
    """``/feed?after=n``: every feed event after ``n`` (default: from now on)."""

    def open(self) -> None:
        super().open()
        after = self.get_query_argument("after", "")
        if after and not (cursor(after) is not None and int(after) <= self.hub.feed.last_seq):
            self.close(POLICY_VIOLATION, close_reason(f"after must be a sequence number this feed sent (0 to "
                                                      f"{self.hub.feed.last_seq}), not {after[:20]!r}"))
            return
        self.start(self._push(int(after) if after else self.hub.feed.last_seq))

    async def _push(self, cursor: int) -> None:
        while True:
            for event in await self.hub.feed.wait_after(cursor):
                self.send(event.to_json())
                cursor = event.seq


class EchoSocket(OutboxSocket):
    """``/echo``: every message comes straight back."""

    def on_message(self, message: str | bytes) -> None:
        self.deliver(message)


class ChatSocket(OutboxSocket):
    """``/chat?name=ada``: each message goes to everyone in the room, numbered in one order."""

    def open(self) -> None:
        super().open()
        self.name = self.get_query_argument("name", "anon")[:40]
        self.hub.room.add(self)

    def on_message(self, message: str | bytes) -> None:
        self.hub.chat_seq += 1
        said = json.dumps({"seq": self.hub.chat_seq, "from": self.name, "text": str(message)})
        for member in list(self.hub.room):
            member.deliver(said)  # one string shared by every outbox

    def on_close(self) -> None:
        self.hub.room.discard(self)
        super().on_close()


class GameSocket(OutboxSocket):
    """``/game``: state goes down at the tick rate; inputs come up whenever the player acts."""

    def open(self) -> None:
        super().open()
        self.last_input = 0
        self.start(self._tick())

    async def _tick(self) -> None:
        period, tick, due = 1.0 / self.hub.tick_rate, 0, time.monotonic()
        while True:
            due += period
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            tick += 1
            self.send({"tick": tick, "ack": self.last_input, "t": time.monotonic()})

    def on_message(self, message: str | bytes) -> None:
        move = game_input(message)
        if move is None:
            self.close(INVALID_DATA, 'an input is JSON like {"n": 1, "t": 12.5}: a whole number n, a time t')
            return
        self.last_input = move["n"]
        self.hub.inputs.append((move["n"], move["t"], time.monotonic()))


def game_input(message: str | bytes) -> dict | None:
    """The player's input if ``message`` is one (``{"n": int, "t": finite number}``), else None."""
    try:
        move = strict_json(message)
    except ValueError:
        return None
    if not (isinstance(move, dict) and type(move.get("n")) is int and type(move.get("t")) in (int, float)
            and math.isfinite(move["t"])):
        return None
    return move


def handlers(hub: Hub) -> list:
    """Routes for a server. Tornado settings (pings, size limit) go to ``lab.serve``."""
    return [(r"/feed", FeedSocket, {"hub": hub}), (r"/echo", EchoSocket, {"hub": hub}),
            (r"/chat", ChatSocket, {"hub": hub}), (r"/game", GameSocket, {"hub": hub})]


def feed_routes(feed: Feed) -> list:
    """The routes on ``feed`` alone, the other rules left at their defaults (how the lab runs it by name)."""
    return handlers(Hub(feed))


def ws_url(base_url: str, path: str) -> str:
    return base_url.replace("http://", "ws://", 1) + path


# -- clients ---------------------------------------------------------------------------------

async def follow(servers: str | list[str], recorder: Recorder, *, after: int | None = None, retry: float = 0.2,
                 first: int = 0, visits: list | None = None, connect_timeout: float | None = None) -> None:
    """Read ``/feed`` until cancelled; after any break, reconnect and resume after the last event.

    ``after`` is where to start (None: from now on). Unlike EventSource, nothing in the
    protocol does this for us: the client keeps the cursor and the server honours it.
    ``servers`` is one base URL, or several interchangeable ones (chapter 9's gateways, starting
    at ``first``): after a break the client goes on to the next, carrying its cursor, and notes
    ``(when, which)`` of each connection it opens in ``visits``.
    """
    servers = [servers] if isinstance(servers, str) else servers
    cursor, at = after, first
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            sent = time.monotonic()
            url = ws_url(servers[at], "/feed" + ("" if cursor is None else f"?after={cursor}"))
            try:
                async with session.ws_connect(url) as ws:
                    recorder.request(sent, 101, 0)
                    if visits is not None:
                        visits.append((time.monotonic(), at))
                    async for message in ws:
                        if message.type is aiohttp.WSMsgType.TEXT:
                            cursor = json.loads(message.data)["seq"]
                            recorder.saw(cursor)
                    recorder.errors.append(f"{servers[at]}: closed by the server ({ws.close_code}), reconnecting")
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                recorder.errors.append(f"{servers[at]}: connection broke ({type(error).__name__}), reconnecting")
            at = (at + 1) % len(servers)
            await asyncio.sleep(retry)


@dataclass(frozen=True)
class Message:
    """One message seen by its receiver: which way, its number, when it was sent and received."""

    direction: str   # "up" (client to server) or "down"
    n: int
    sent: float
    received: float


async def play(base_url: str, *, inputs_per_s: float, duration: float, log: list[Message]) -> None:
    """A game client: one loop sends inputs on its own clock while another reads the ticks."""
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(ws_url(base_url, "/game")) as ws:

            async def send_inputs() -> None:
                period, due = 1.0 / inputs_per_s, time.monotonic()
                for n in range(1, int(inputs_per_s * duration) + 1):
                    due += period  # its own clock: a late wake-up does not push back the inputs after it
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    await ws.send_str(json.dumps({"n": n, "t": time.monotonic()}))

            async def read_ticks() -> None:
                async for message in ws:
                    tick = json.loads(message.data)
                    log.append(Message("down", tick["tick"], tick["t"], time.monotonic()))

            reader = asyncio.create_task(read_ticks())
            await send_inputs()
            await asyncio.sleep(0.05)  # the last ticks
            reader.cancel()


async def chat(base_url: str, name: str, lines: list[str], *, every: float, heard: list[dict],
               linger: float = 0.2, until: int | None = None, begin: asyncio.Event | None = None) -> None:
    """Join the room as ``name``, say ``lines`` every ``every`` seconds, and keep listening.

    With ``begin``, speak only once it is set (when everyone is in the room). After the last line,
    listen ``linger`` seconds more, or less once ``until`` messages are heard.
    """
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(ws_url(base_url, f"/chat?name={name}")) as ws:
            everything = asyncio.Event()

            async def listen() -> None:
                async for message in ws:
                    heard.append(json.loads(message.data))
                    if until is not None and len(heard) >= until:
                        everything.set()

            listener = asyncio.create_task(listen())
            if begin is not None:
                await begin.wait()
            for line in lines:
                await asyncio.sleep(every)
                await ws.send_str(line)
            try:
                await asyncio.wait_for(everything.wait(), linger)
            except asyncio.TimeoutError:
                pass  # what was heard by then is the answer
            listener.cancel()


async def round_trips(base_url: str, count: int, size: int = 32) -> list[float]:
    """Send ``count`` messages to ``/echo`` one at a time; the seconds each took to come back."""
    payload = "x" * size
    times = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(ws_url(base_url, "/echo")) as ws:
            for _ in range(count):
                sent = time.monotonic()
                await ws.send_str(payload)
                await ws.receive_str()
                times.append(time.monotonic() - sent)
    return times


# How the lab runs this pattern by name (see pattern.py and registry.py).
PATTERN = Pattern("websocket", __name__, "/feed", server_function="feed_routes", client_function="follow", upgrade=True)
