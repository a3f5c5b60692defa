"""Push, over one held HTTP response: the server writes each update the moment it exists.

Server side: ``GET /stream`` never finishes. Tornado sends the response with chunked
transfer encoding, and the handler writes one JSON line per event and flushes it at once
(``application/x-ndjson``). The connection stays open for as long as the client listens,
which is the cost of push: one held connection per client on the server.

Client side: ``listen`` opens the stream and reads it line by line, recording each event
as it arrives. It makes exactly one request however many events flow.

Later chapters refine this idea: Server-Sent Events add a standard framing, event ids and
automatic reconnection; WebSockets make the connection two-way.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import tornado.iostream
import tornado.web

from ..feed import Feed
from ..record import Recorder
from ._input import SizeLimits
from .pattern import Pattern


class StreamHandler(SizeLimits, tornado.web.RequestHandler):
    """Holds the response open and writes every new event as one JSON line."""

    def initialize(self, feed: Feed) -> None:
        self.feed = feed
        self.waiting: asyncio.Task | None = None

    async def get(self) -> None:
        self.waiting = asyncio.current_task()
        self.set_header("Content-Type", "application/x-ndjson")
        self.set_header("Cache-Control", "no-cache")
        cursor = self.feed.last_seq  # a new listener starts with the next update
        try:
            await self.flush()  # send the headers now: the client knows the stream is open
            while True:
                for event in await self.feed.wait_after(cursor):
                    self.write(json.dumps(event.to_json()) + "\n")
                    cursor = event.seq
                await self.flush()
        except (tornado.iostream.StreamClosedError, asyncio.CancelledError):
            pass  # the client went away, or the server is stopping

    def on_connection_close(self) -> None:
        if self.waiting is not None:
            self.waiting.cancel()  # stop waiting for news nobody will read


def handlers(feed: Feed) -> list:
    return [(r"/stream", StreamHandler, {"feed": feed})]


async def listen(base_url: str, recorder: Recorder) -> None:
    """Open the stream and record every event until cancelled."""
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        sent, events = time.monotonic(), 0
        async with session.get(f"{base_url}/stream") as response:
            recorder.ready.set()  # the stream is open: events follow
            try:
                async for line in response.content:
                    recorder.saw(json.loads(line)["seq"], time.monotonic())
                    events += 1
            finally:  # the one request is answered when the stream ends
                recorder.request(sent, response.status, events)


# How the lab runs this pattern by name (see pattern.py and registry.py).
PATTERN = Pattern("push", __name__, "/stream")
