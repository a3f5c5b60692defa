"""Server-Sent Events: one request opens a stream, the server pushes framed events down it.

It is push over a held HTTP response (like ``push.py``) with three things standardised:
a framing (``data:`` lines, see ``sse_codec.py``), event ids, and reconnection. A browser's
``EventSource`` does the client side for free; ``listen`` below does the same in Python.

Server side, ``GET /events``:

* answers ``text/event-stream`` with chunked encoding and flushes every event at once;
  ``X-Accel-Buffering: no`` asks a proxy in between (nginx) not to hold events back;
* starts with ``retry:``, the reconnection delay it wants clients to use;
* sends a comment as a heartbeat when nothing happened for a while, so idle proxies and
  clients can tell a quiet stream from a dead one;
* gives every event an ``id``: this life of the stream and the event's sequence number in it
  (``5f0c9e21-12``), and keeps the last ``history`` events. A client that reconnects with
  ``Last-Event-ID: 5f0c9e21-12`` gets every event after 12; if 12 is older than the history, it
  first gets an explicit ``missed`` event naming the gap, never silence. A ``Last-Event-ID``
  that is not one of this stream's ids gets a ``reset`` event, then every event the server
  still keeps: a server that restarted with a fresh feed numbers its events from 1 again, so
  the number alone could name an event of the new life the client never saw (the ``5f0c9e21``
  part tells the two lives apart), and a damaged id names nothing.

Every ``Last-Event-ID`` gets a 200: under the HTML standard any other status, or another
Content-Type, *fails* the connection and ``EventSource`` never reconnects, while a network
error makes it retry. So a 4xx here would silence a browser for good after a server restart.
Only 204 No Content is the deliberate way to tell a client to stop.

The stream goes one way only. ``POST /events`` is how a client talks back: an ordinary
request that publishes a value, which then comes down the stream to every listener. Any
web page can make a browser send a POST, so it checks three things before it publishes:
the ``Origin`` (another site's page gets 403), the size (over ``max_body`` bytes gets 413,
before the body is read), and the JSON (``{"value": <finite number>}`` only, else 400 with
the reason).

Client side, ``listen`` reconnects by itself after the server's ``retry`` delay and sends
``Last-Event-ID``, so a network blip costs a pause, not events.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Callable

import aiohttp
import tornado.iostream
import tornado.web

from ..feed import Feed
from ..record import Recorder
from ._input import SizeLimits, cursor as read_cursor, strict_json
from .pattern import Pattern
from .sse_codec import EventStreamParser, ServerSentEvent, encode_comment, encode_event, encode_retry

HISTORY = 1000       # events kept for clients that reconnect
HEARTBEAT = 10.0     # seconds of silence before a heartbeat comment
RETRY_MS = 1000      # reconnection delay the server asks for
MAX_BODY = 1024      # bytes: a talk-back POST carries one small JSON object


def event_id(feed: Feed, seq: int) -> str:
    """The id of event ``seq`` of ``feed``: the stream's life, a dash, the number (``5f0c9e21-12``)."""
    return f"{feed.stream}-{seq}"


def read_event_id(text: str) -> tuple[str, int] | None:
    """``(stream, seq)`` from an id ``event_id`` wrote, or None if ``text`` is not one."""
    stream, dash, number = text.rpartition("-")
    seq = read_cursor(number) if dash and stream else None
    return None if seq is None else (stream, seq)


@tornado.web.stream_request_body  # so a POST's size is judged before its body is read
class EventStreamHandler(SizeLimits, tornado.web.RequestHandler):
    """``GET /events``: the stream. ``POST /events``: publish a value (the way back up)."""

    def initialize(self, feed: Feed, history: int = HISTORY, heartbeat: float = HEARTBEAT,
                   retry: int = RETRY_MS, max_body: int = MAX_BODY, origins: tuple[str, ...] = ()) -> None:
        self.feed, self.history, self.heartbeat, self.retry = feed, history, heartbeat, retry
        self.max_body, self.origins = max_body, origins
        self.waiting: asyncio.Task | None = None
        self.body, self.body_too_big = bytearray(), False

    async def get(self) -> None:
        self.waiting = asyncio.current_task()
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        try:
            self.write(encode_retry(self.retry))
            oldest_kept = max(0, self.feed.last_seq - self.history)  # resuming after this loses nothing
            cursor = self._resume_point(oldest_kept)
            if cursor < oldest_kept:
                gap = json.dumps({"first": cursor + 1, "last": oldest_kept})
                self.write(encode_event(gap, event="missed", id=event_id(self.feed, oldest_kept)))
                cursor = oldest_kept
            await self.flush()
            while True:
                news = await self.feed.wait_after(cursor, timeout=self.heartbeat)
                if not news:
                    self.write(encode_comment("heartbeat"))
                    await self.flush()
                for event in news:
                    self.write(encode_event(json.dumps(event.to_json()), id=event_id(self.feed, event.seq)))
                    await self.flush()  # one event, one chunk, sent now
                    cursor = event.seq
        except (tornado.iostream.StreamClosedError, asyncio.CancelledError):
            pass  # the client went away, or the server is stopping

    def _resume_point(self, oldest_kept: int) -> int:
        """The id to resume after: ``Last-Event-ID`` if it is one of ours, else "now" or a reset."""
        last_id = self.request.headers.get("Last-Event-ID", "")
        if not last_id:
            return self.feed.last_seq  # a new listener starts with the next event
        resume = read_event_id(last_id)
        if resume is not None and resume[0] == self.feed.stream and resume[1] <= self.feed.last_seq:
            return resume[1]
        # Not an id of this stream: most likely the server restarted and its ids began again.
        # Say so, give the client a valid id, and send everything still kept.
        why = {"reason": f"Last-Event-ID {last_id[:40]!r} is not an id of this stream ({event_id(self.feed, 1)} "
                         f"to {event_id(self.feed, self.feed.last_seq)}): the server restarted, or the id is damaged",
               "from": oldest_kept + 1}
        self.write(encode_event(json.dumps(why), event="reset", id=event_id(self.feed, oldest_kept)))
        return oldest_kept

    def prepare(self) -> None:
        """Before a POST's body is read: refuse another site's page (403) and an oversized body (413)."""
        super().prepare()  # 414, 431
        if self.request.method != "POST":
            return
        self.set_header("Connection", "close")  # refused now, its body unread: this connection ends (RFC 9112 9.6)
        origin = self.request.headers.get("Origin")
        own = f"{self.request.protocol}://{self.request.host}"
        if origin is not None and origin != own and origin not in self.origins:
            self._refuse(403, f"Origin {origin[:80]!r} may not publish here: only pages from {own} may.")
            return
        declared = self.request.headers.get("Content-Length")
        if declared is not None and int(declared) > self.max_body:  # Tornado has checked it is a number
            self._refuse(413, f"The body is {declared} bytes; at most {self.max_body} are accepted.")
            return
        self.clear_header("Connection")  # accepted: keep-alive as usual

    def data_received(self, chunk: bytes) -> None:
        if len(self.body) + len(chunk) > self.max_body:  # a chunked body, growing past the limit
            self.body_too_big = True
            self.body.clear()  # keep nothing of it
        elif not self.body_too_big:
            self.body += chunk

    async def post(self) -> None:
        if self.body_too_big:
            self._refuse(413, f"The body is over {self.max_body} bytes, the most accepted.")
            return
        try:
            value = _published_value(bytes(self.body))
        except ValueError as error:
            self._refuse(400, f'{error}. Send a JSON body like {{"value": 101.5}}.')
            return
        self.set_status(202)
        self.write({"seq": await self.publish(value)})

    async def publish(self, value: float) -> int:
        """Where a talked-back value goes: this server's own feed. Returns the event's id."""
        return self.feed.publish(value).seq

    def _refuse(self, status: int, why: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(why)

    def on_connection_close(self) -> None:
        if self.waiting is not None:
            self.waiting.cancel()  # stop waiting for news nobody will read


def _published_value(body: bytes) -> float:
    """The value a talk-back POST publishes: ``{"value": <finite number>}`` and nothing else."""
    message = strict_json(body)
    if not isinstance(message, dict) or "value" not in message:
        raise ValueError("the JSON must be an object with a \"value\"")
    value = message["value"]
    if type(value) not in (int, float) or not math.isfinite(value):
        raise ValueError(f"value must be a finite number, not {json.dumps(value)[:40]}")
    return float(value)


def handlers(feed: Feed, **options) -> list:
    """Routes for a server; ``options`` are ``history``, ``heartbeat`` (s), ``retry`` (ms),
    ``max_body`` (bytes a POST may carry) and ``origins`` (other origins whose pages may POST)."""
    return [(r"/events", EventStreamHandler, {"feed": feed, **options})]


class StreamRefused(RuntimeError):
    """The server answered, but not with an event stream; like EventSource, give up."""


async def listen(servers: str | list[str], recorder: Recorder, *,
                 on_event: Callable[[ServerSentEvent], None] | None = None,
                 retry: float = RETRY_MS / 1000, idle_timeout: float | None = None,
                 first: int = 0, visits: list | None = None, connect_timeout: float | None = None) -> None:
    """Follow ``/events`` until cancelled, reconnecting after every break, as EventSource does.

    Each ``message`` event's sequence number goes into ``recorder``; ``on_event`` sees every
    event (``missed`` too). ``retry`` (s) is the reconnection delay until the server sets
    one; ``idle_timeout`` (s) treats a stream silent for that long (no event, no heartbeat)
    as dead. ``servers`` is one base URL, or several interchangeable ones (chapter 9's gateways,
    starting at ``first``): after a break the client goes on to the next with ``Last-Event-ID``,
    and notes ``(when, which)`` of each stream it opens in ``visits``.
    """
    servers = [servers] if isinstance(servers, str) else servers
    last_id, delay, at = "", retry, first
    timeout = aiohttp.ClientTimeout(total=None, sock_read=idle_timeout, sock_connect=connect_timeout)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
            if last_id:
                headers["Last-Event-ID"] = last_id
            sent = time.monotonic()
            try:
                async with session.get(f"{servers[at]}/events", headers=headers) as response:
                    recorder.request(sent, response.status, 0)
                    if response.status != 200 or response.content_type != "text/event-stream":
                        raise StreamRefused(f"{response.status} {response.reason}: {await response.text()}")
                    if visits is not None:
                        visits.append((time.monotonic(), at))
                    parser = EventStreamParser(last_id)
                    async for chunk in response.content.iter_any():
                        for event in parser.feed(chunk):
                            if event.event == "message":
                                recorder.saw(json.loads(event.data)["seq"])
                            if on_event is not None:
                                on_event(event)
                        last_id = parser.last_event_id
                        delay = delay if parser.retry is None else parser.retry / 1000
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                recorder.errors.append(f"{servers[at]}: stream broke ({type(error).__name__}), reconnecting")
            at = (at + 1) % len(servers)
            await asyncio.sleep(delay)


async def publish(base_url: str, value: float, session: aiohttp.ClientSession) -> int:
    """Talk back: an ordinary POST that publishes ``value``; returns the new event's id."""
    async with session.post(f"{base_url}/events", json={"value": value}) as response:
        if response.status != 202:
            raise StreamRefused(f"{response.status}: {await response.text()}")
        return (await response.json())["seq"]


# How the lab runs this pattern by name (see pattern.py and registry.py).
PATTERN = Pattern("sse", __name__, "/events")
