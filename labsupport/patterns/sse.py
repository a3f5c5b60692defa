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
* gives every event an ``id`` (the feed's sequence number) and keeps the last ``history``
  events. A client that reconnects with ``Last-Event-ID: n`` gets every event after ``n``;
  if ``n`` is older than the history, it first gets an explicit ``missed`` event naming the
  gap, never silence. A ``Last-Event-ID`` that is not one of this stream's ids gets a 400.

The stream goes one way only. ``POST /events`` is how a client talks back: an ordinary
request that publishes a value, which then comes down the stream to every listener.

Client side, ``listen`` reconnects by itself after the server's ``retry`` delay and sends
``Last-Event-ID``, so a network blip costs a pause, not events.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Callable

import aiohttp
import tornado.iostream
import tornado.web

from ..feed import Feed
from ..record import Recorder
from .sse_codec import EventStreamParser, ServerSentEvent, encode_comment, encode_event, encode_retry

HISTORY = 1000       # events kept for clients that reconnect
HEARTBEAT = 10.0     # seconds of silence before a heartbeat comment
RETRY_MS = 1000      # reconnection delay the server asks for
_EVENT_ID = re.compile(r"[0-9]{1,18}")


class EventStreamHandler(tornado.web.RequestHandler):
    """``GET /events``: the stream. ``POST /events``: publish a value (the way back up)."""

    def initialize(self, feed: Feed, history: int = HISTORY, heartbeat: float = HEARTBEAT,
                   retry: int = RETRY_MS) -> None:
        self.feed, self.history, self.heartbeat, self.retry = feed, history, heartbeat, retry
        self.waiting: asyncio.Task | None = None

    async def get(self) -> None:
        cursor = self._resume_point()
        if cursor is None:
            return  # answered with 400
        self.waiting = asyncio.current_task()
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        try:
            self.write(encode_retry(self.retry))
            oldest_kept = self.feed.last_seq - self.history  # resuming after this loses nothing
            if cursor < oldest_kept:
                gap = json.dumps({"first": cursor + 1, "last": oldest_kept})
                self.write(encode_event(gap, event="missed", id=str(oldest_kept)))
                cursor = oldest_kept
            await self.flush()
            while True:
                news = await self.feed.wait_after(cursor, timeout=self.heartbeat)
                if not news:
                    self.write(encode_comment("heartbeat"))
                    await self.flush()
                for event in news:
                    self.write(encode_event(json.dumps(event.to_json()), id=str(event.seq)))
                    await self.flush()  # one event, one chunk, sent now
                    cursor = event.seq
        except (tornado.iostream.StreamClosedError, asyncio.CancelledError):
            pass  # the client went away, or the server is stopping

    def _resume_point(self) -> int | None:
        """The id to resume after: ``Last-Event-ID`` if sent, else "now". None after a 400."""
        last_id = self.request.headers.get("Last-Event-ID", "").strip()
        if not last_id:
            return self.feed.last_seq  # a new listener starts with the next event
        if not _EVENT_ID.fullmatch(last_id) or int(last_id) > self.feed.last_seq:
            self._refuse(f"Last-Event-ID must be an id this stream sent (a whole number up to "
                         f"{self.feed.last_seq}), not {last_id[:40]!r}.")
            return None
        return int(last_id)

    def post(self) -> None:
        try:
            value = float(json.loads(self.request.body)["value"])
        except (ValueError, TypeError, KeyError):
            self._refuse('Send a JSON body like {"value": 101.5}.')
            return
        self.set_status(202)
        self.write({"seq": self.feed.publish(value).seq})

    def _refuse(self, why: str) -> None:
        self.set_status(400)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(why)

    def on_connection_close(self) -> None:
        if self.waiting is not None:
            self.waiting.cancel()  # stop waiting for news nobody will read


def handlers(feed: Feed, **options) -> list:
    """Routes for a server; ``options`` are ``history``, ``heartbeat`` (s) and ``retry`` (ms)."""
    return [(r"/events", EventStreamHandler, {"feed": feed, **options})]


class StreamRefused(RuntimeError):
    """The server answered, but not with an event stream; like EventSource, give up."""


async def listen(base_url: str, recorder: Recorder, *,
                 on_event: Callable[[ServerSentEvent], None] | None = None,
                 retry: float = RETRY_MS / 1000, idle_timeout: float | None = None) -> None:
    """Follow ``/events`` until cancelled, reconnecting after every break, as EventSource does.

    Each ``message`` event's sequence number goes into ``recorder``; ``on_event`` sees every
    event (``missed`` too). ``retry`` (s) is the reconnection delay until the server sets
    one; ``idle_timeout`` (s) treats a stream silent for that long (no event, no heartbeat)
    as dead.
    """
    last_id, delay = "", retry
    timeout = aiohttp.ClientTimeout(total=None, sock_read=idle_timeout)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
            if last_id:
                headers["Last-Event-ID"] = last_id
            sent = time.monotonic()
            try:
                async with session.get(f"{base_url}/events", headers=headers) as response:
                    recorder.request(sent, response.status, 0)
                    if response.status != 200 or response.content_type != "text/event-stream":
                        raise StreamRefused(f"{response.status} {response.reason}: {await response.text()}")
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
                recorder.errors.append(f"stream broke ({type(error).__name__}), reconnecting")
            await asyncio.sleep(delay)


async def publish(base_url: str, value: float, session: aiohttp.ClientSession) -> int:
    """Talk back: an ordinary POST that publishes ``value``; returns the new event's id."""
    async with session.post(f"{base_url}/events", json={"value": value}) as response:
        if response.status != 202:
            raise StreamRefused(f"{response.status}: {await response.text()}")
        return (await response.json())["seq"]
