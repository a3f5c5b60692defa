"""Long polling: the client asks, and the server holds the answer until there is news.

Server side: ``GET /events?after=<seq>&stream=<id>`` answers at once with every event newer
than ``seq`` when there is one. When there is none it *holds* the request: no answer until news
arrives or ``hold`` seconds pass. The answer is ``{"stream": id, "events": [...]}``, oldest
first, with an empty list when the hold ran out (proxies and load balancers cut requests that
stay silent too long, so the server answers first). With ``batch`` the server waits that long
after the first news so one answer can carry several events. A cursor that is not a whole
number in ASCII digits gets ``400`` and a JSON explanation.

A cursor from another life of the feed is not an error. A server that crashed lost its events
with it, and its successor numbers them from 1 again; its ``stream`` id differs. So a cursor
whose ``stream`` is not this one, or whose number is past the newest event, gets a prompt
``200`` with a ``reset`` (why) and every event of this life: the client starts again from there.
Judged by the number alone, a client that comes back after the new server has passed its old
cursor would skip the new life's first events without a word.

Client side: ``long_poll`` asks again the moment an answer arrives. With ``use_cursor=True``
it sends the seq of the last event it saw (and the stream it came from), so events that arrive while no request of its
is waiting (between an answer and the next request, or while the server restarts) come in
the next answer. With ``use_cursor=False`` it sends no ``after``: the server then answers
only with events that arrive while the request is held, and whatever falls in the gaps is
lost. After a failure (refused, cut, timed out, a 5xx) the client waits
``retry_delay(failures)`` seconds and asks again with the same cursor. A ``reset`` makes it
start again from the events the answer carries.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Callable

import aiohttp
import tornado.web

from ..feed import Feed
from ..record import Recorder
from ._input import GetOnly, cursor, error_reason
from .pattern import Pattern


@dataclass
class Held:
    """How many requests the server is holding right now, and the most at once."""

    now: int = 0
    peak: int = 0

    def add(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    def remove(self) -> None:
        self.now -= 1


class EventsHandler(GetOnly, tornado.web.RequestHandler):
    """Answers with the events after the client's cursor, holding the request until there are some."""

    def initialize(self, feed: Feed, hold: float, batch: float, held: Held) -> None:
        self.feed, self.hold, self.batch, self.held = feed, hold, batch, held
        self.waiting: asyncio.Task | None = None

    async def get(self) -> None:
        raw = self.get_query_argument("after", None)
        after = self.feed.last_seq if raw is None else cursor(raw)  # no cursor: news from now on
        if after is None:
            self.set_status(400)
            self.write({"error": f"after={raw!r} is not a valid cursor: send the seq of the last event "
                                 f"you saw, a whole number from 0 to {self.feed.last_seq}."})
            return
        self.set_header("Cache-Control", "no-cache")
        reset = self.another_life(after, self.get_query_argument("stream", None))
        if reset:
            self.write({"stream": self.feed.stream, "reset": reset,
                        "events": [event.to_json() for event in self.feed.after(0)]})
            return
        self.waiting = asyncio.current_task()
        self.held.add()
        try:
            news = await self.feed.wait_after(after, timeout=self.hold)
            if news and self.batch:
                await asyncio.sleep(self.batch)  # let more news gather into this answer
                news = self.feed.after(after)
        except asyncio.CancelledError:
            return  # the client went away, or the server is stopping
        finally:
            self.held.remove()
        self.write({"stream": self.feed.stream, "events": [event.to_json() for event in news]})

    def another_life(self, after: int, stream: str | None) -> str:
        """Why the cursor belongs to another life of the feed (the server restarted), or ""."""
        if stream is not None and stream != self.feed.stream:
            return (f"stream {stream[:40]!r} is not this server's ({self.feed.stream!r}): it restarted "
                    "and numbers its events from 1 again")
        if after > self.feed.last_seq:
            return (f"after={after} is past the newest event ({self.feed.last_seq}): the server restarted "
                    "and numbers its events from 1 again")
        return ""

    def on_connection_close(self) -> None:
        if self.waiting is not None:
            self.waiting.cancel()  # stop holding a request nobody will read

    def write_error(self, status_code: int, **kwargs) -> None:
        self.finish({"error": error_reason(status_code, **kwargs)})  # a JSON error, like every other answer


def handlers(feed: Feed, *, hold: float = 20.0, batch: float = 0.0, held: Held | None = None) -> list:
    """Routes for a long-polling server; ``held`` (if given) counts the requests it holds."""
    options = {"feed": feed, "hold": hold, "batch": batch, "held": held or Held()}
    return [(r"/events", EventsHandler, options)]


def doubling_delay(failures: int) -> float:
    """Seconds to wait after ``failures`` failures in a row: doubling from 50 ms, at most 2 s."""
    return min(0.05 * 2 ** (failures - 1), 2.0)


class RequestRejected(RuntimeError):
    """The server said the request was wrong (a 4xx): asking again the same way cannot help."""


async def long_poll(base_url: str, recorder: Recorder, *, use_cursor: bool = True,
                    give_up_after: float = 30.0,
                    retry_delay: Callable[[int], float] = doubling_delay) -> None:
    """Long-poll ``/events`` until cancelled, recording every event that comes back.

    ``give_up_after`` is how long the client waits for an answer; it must be longer than
    the server's hold, or the client (like a proxy in the path) cuts the held request itself.
    """
    timeout = aiohttp.ClientTimeout(total=None, sock_read=give_up_after)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        cursor, stream, failures = 0, None, 0
        while True:
            params = {"after": cursor, **({"stream": stream} if stream else {})} if use_cursor else {}
            sent = time.monotonic()
            try:
                async with session.get(f"{base_url}/events", params=params) as response:
                    status, body = response.status, await response.read()
                if 400 <= status < 500:
                    raise RequestRejected(f"{status}: {body.decode(errors='replace')}")
                if status != 200:
                    raise aiohttp.ClientError(f"HTTP {status}")
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                failures += 1
                recorder.errors.append(f"{type(error).__name__}: {error}")
                await asyncio.sleep(retry_delay(failures))
                continue
            answered, failures = time.monotonic(), 0
            answer = json.loads(body)
            if answer.get("reset"):
                recorder.reset(answer["reset"], answered)
                cursor = 0  # the events below are this life's, from its start
            stream = answer.get("stream")
            for event in answer["events"]:
                recorder.saw(event["seq"], answered)
                cursor = event["seq"]
            recorder.request(sent, status, len(answer["events"]), answered)


# How the lab runs this pattern by name (see pattern.py and registry.py).
PATTERN = Pattern("long polling", __name__, "/events", client_function="long_poll", holds_requests=True)
