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
from ._input import GetOnly, error_reason
from .pattern import Pattern


class LatestHandler(GetOnly, tornado.web.RequestHandler):
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
        self.finish({"error": error_reason(status_code, **kwargs)})


def handlers(feed: Feed, *, cache_control: str | None = "no-cache", answers: list | None = None) -> list:
    return [(r"/latest", LatestHandler, {"feed": feed, "cache_control": cache_control, "answers": answers})]


def next_poll(tick: float, interval: float, now: float) -> tuple[float, float]:
    """When to poll next, and the tick of the client's own schedule that poll stands for.

    A fixed schedule, like ``setInterval``: on time, the next tick. A client that fell behind
    (its answer came late, or the lab paused) asks at once, as a late timer fires at once, and
    then goes back to its own ticks. The lab runs every client in one process: were they to
    carry on from "now" after a pause of that process, they would all poll in step from then
    on, as separate browsers never do, and every update would wait the same time, not about T / 2.
    """
    due = tick + interval
    if due >= now:
        return due, due
    return now, tick + interval * math.floor((now - tick) / interval)  # the last tick it missed


async def poll(base_url: str, recorder: Recorder, *, interval: float, keep_alive: bool = True,
               conditional: bool = False, idle_timeout: float = 15.0) -> None:
    """Poll ``/latest`` every ``interval`` seconds until cancelled, recording what comes back."""
    connector = (aiohttp.TCPConnector(limit=1, keepalive_timeout=idle_timeout) if keep_alive
                 else aiohttp.TCPConnector(limit=1, force_close=True))
    async with aiohttp.ClientSession(connector=connector) as session:
        held_seq, etag = 0, None
        tick = time.monotonic() + random.uniform(0, interval)  # each client at its own phase
        wake = tick
        while True:
            await asyncio.sleep(max(0.0, wake - time.monotonic()))
            headers = {"If-None-Match": etag} if conditional and etag else {}
            sent = time.monotonic()
            try:
                async with session.get(f"{base_url}/latest", headers=headers) as response:
                    body = await response.read()
            except aiohttp.ClientError as error:
                recorder.errors.append(f"{type(error).__name__}: {error}")
                wake, tick = next_poll(tick, interval, time.monotonic())
                continue
            answered, new = time.monotonic(), 0
            if response.status == 200:
                event = json.loads(body)
                etag = response.headers.get("ETag")
                if event["seq"] > held_seq:
                    held_seq, new = event["seq"], 1
                    recorder.saw(held_seq, answered)
            recorder.request(sent, response.status, new, answered)
            wake, tick = next_poll(tick, interval, time.monotonic())


# How the lab runs this pattern by name (see pattern.py and registry.py).
PATTERN = Pattern("polling", __name__, "/latest", client_function="poll")
