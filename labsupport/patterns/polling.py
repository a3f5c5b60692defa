"""Pull, by periodic polling: the client asks "what is the latest?" every few seconds.

Server side: ``GET /latest`` answers at once with the newest event as JSON, news or not.
Tornado adds an ``ETag`` (a hash of the body) to every 200 answer and, when the request
carries a matching ``If-None-Match``, answers ``304 Not Modified`` with no body instead.

Client side: ``poll`` asks on a fixed schedule, starting at a random moment within the first
interval (many real clients never poll in lockstep). An answer is *empty* when it carries
nothing the client did not already have: the same event again, or a 304.

Two knobs show what the wire costs:

* ``keep_alive=False`` makes the client close its connection after every answer, so each poll
  pays a new TCP connection (what the classic description of polling assumes);
* ``conditional=True`` sends ``If-None-Match``, so an unchanged answer shrinks to a 304;
* ``idle_timeout`` is how long an idle kept-alive connection may wait for the next poll
  before the client drops it (aiohttp's default is 15 s; servers have their own, such as
  Apache's 5 s): poll less often than that and every poll opens a new connection anyway.

Server side, ``cache_control`` is what the answer says about caching (RFC 9111 section 5.2):
``"no-cache"`` (the default) lets a cache keep the answer but makes it ask again, with
``If-None-Match``, before every reuse; ``"max-age=2"`` lets it reuse the answer for 2 s without
asking; ``None`` says nothing, and a cache may then guess a freshness lifetime (section 4.2.2).
A browser's own HTTP cache follows these rules by itself: the page's code never sends
``If-None-Match``, yet the server sees it. ``answers``, if given, collects
``(status, request)`` for every answer, so a chapter can count what reached the server.

A request the server cannot serve (a wrong method, say) gets a JSON error, not an HTML page.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time

import aiohttp
import tornado.web

from ..feed import Feed
from ..record import Recorder


class LatestHandler(tornado.web.RequestHandler):
    """Answers every poll at once with the newest event."""

    def initialize(self, feed: Feed, cache_control: str | None = "no-cache", answers: list | None = None) -> None:
        self.feed, self.cache_control, self.answers = feed, cache_control, answers

    def get(self) -> None:
        latest = self.feed.latest
        if self.cache_control is not None:
            self.set_header("Cache-Control", self.cache_control)
        self.write({"seq": 0, "value": None} if latest is None else latest.to_json())

    def on_finish(self) -> None:
        if self.answers is not None:
            self.answers.append((self.get_status(), self.request))

    def write_error(self, status_code: int, **kwargs) -> None:
        self.finish({"error": self._reason})


def handlers(feed: Feed, *, cache_control: str | None = "no-cache", answers: list | None = None) -> list:
    return [(r"/latest", LatestHandler, {"feed": feed, "cache_control": cache_control, "answers": answers})]


def next_tick(tick: float, interval: float, now: float) -> float:
    """The client's next poll: the first of ``tick + k × interval`` (k ≥ 1) that is not past.

    A fixed schedule, like ``setInterval``. A client that fell behind skips the polls it missed
    and keeps its own phase. The lab runs every client in one process: were they to catch up
    "now" after a pause of that process, they would all poll in step from then on, as separate
    browsers never do, and their updates would all wait the same time instead of about T / 2.
    """
    return tick + interval * max(1, math.ceil((now - tick) / interval))


async def poll(base_url: str, recorder: Recorder, *, interval: float, keep_alive: bool = True,
               conditional: bool = False, idle_timeout: float = 15.0) -> None:
    """Poll ``/latest`` every ``interval`` seconds until cancelled, recording what comes back."""
    connector = (aiohttp.TCPConnector(limit=1, keepalive_timeout=idle_timeout) if keep_alive
                 else aiohttp.TCPConnector(limit=1, force_close=True))
    async with aiohttp.ClientSession(connector=connector) as session:
        held_seq, etag = 0, None
        next_poll = time.monotonic() + random.uniform(0, interval)
        while True:
            await asyncio.sleep(max(0.0, next_poll - time.monotonic()))
            headers = {"If-None-Match": etag} if conditional and etag else {}
            sent = time.monotonic()
            try:
                async with session.get(f"{base_url}/latest", headers=headers) as response:
                    body = await response.read()
            except aiohttp.ClientError as error:
                recorder.errors.append(f"{type(error).__name__}: {error}")
                next_poll = next_tick(next_poll, interval, time.monotonic())
                continue
            answered, new = time.monotonic(), 0
            if response.status == 200:
                event = json.loads(body)
                etag = response.headers.get("ETag")
                if event["seq"] > held_seq:
                    held_seq, new = event["seq"], 1
                    recorder.saw(held_seq, answered)
            recorder.request(sent, response.status, new, answered)
            next_poll = next_tick(next_poll, interval, time.monotonic())
