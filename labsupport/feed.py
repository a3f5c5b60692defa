"""Event feeds: the "server-side news" every pattern in the course delivers.

A feed runs on the lab loop and creates events at a chosen rate, either evenly spaced
(``arrivals="fixed"``), at random like independent users (``"poisson"``), or in bursts of
several at once. Each event carries a sequence number and its creation time on the
monotonic clock that clients also use, so latency is ``seen - created`` on one clock and a
gap in sequence numbers is an update the client never saw.

Servers read the feed with a cursor (``after(seq)``) and wait for news with
``wait_after(seq)``; the feed keeps every event of a run so results can be checked against it.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass

MAX_RATE = 10_000.0
ARRIVALS = ("fixed", "poisson")
VALUES = ("ticker", "weather")


@dataclass(frozen=True)
class Event:
    """One update: its sequence number (from 1), creation time (monotonic seconds), value.

    How late the lab ran while a run lasted is measured once, by ``LoopWatch`` (``lab.py``), for
    every backend; an event does not carry it.
    """

    seq: int
    created: float
    value: float

    def to_json(self) -> dict:
        """What goes on the wire: the creation time stays on the server's side of the story."""
        return {"seq": self.seq, "value": self.value}


class Feed:
    """Creates events at ``rate`` per second; servers read them, results are checked against them."""

    def __init__(self, rate: float, *, arrivals: str = "fixed", burst: int = 1,
                 value: str = "ticker", seed: int | None = None) -> None:
        if not (0 < rate <= MAX_RATE):
            raise ValueError(f"The event rate must be above 0 and at most {MAX_RATE:.0f} events per second, not {rate!r}.")
        if arrivals not in ARRIVALS:
            raise ValueError(f"arrivals must be one of {ARRIVALS}, not {arrivals!r}.")
        if value not in VALUES:
            raise ValueError(f"value must be one of {VALUES}, not {value!r}.")
        if burst < 1:
            raise ValueError("burst must be 1 or more events at a time.")
        self.rate = rate
        self.arrivals = arrivals
        self.burst = burst
        self.value_kind = value
        self.events: list[Event] = []
        self._random = random.Random(seed)
        self._news: asyncio.Future | None = None
        self._task: asyncio.Task | None = None
        self.started: float | None = None

    # -- reading --------------------------------------------------------------------------

    @property
    def latest(self) -> Event | None:
        """The newest event: what a "latest value" view (a price, a reading) shows."""
        return self.events[-1] if self.events else None

    @property
    def last_seq(self) -> int:
        return self.events[-1].seq if self.events else 0

    def after(self, seq: int) -> list[Event]:
        """Every event newer than ``seq`` (a client's cursor), oldest first."""
        if seq < 0:
            raise ValueError("a cursor is a sequence number, 0 or more")
        return self.events[seq:]  # seq numbers run 1, 2, 3, ... so event n sits at index n-1

    async def wait_after(self, seq: int, timeout: float | None = None) -> list[Event]:
        """Events newer than ``seq``, waiting up to ``timeout`` seconds for one to exist."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (news := self.after(seq)):
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return []
            try:
                await asyncio.wait_for(asyncio.shield(self._next_news()), remaining)
            except asyncio.TimeoutError:
                return []
        return news

    def _next_news(self) -> asyncio.Future:
        if self._news is None or self._news.done():
            self._news = asyncio.get_running_loop().create_future()
        return self._news

    # -- writing --------------------------------------------------------------------------

    def publish(self, value: float | None = None) -> Event:
        """Create one event now (the running feed calls this; so can a test or a cell)."""
        event = Event(self.last_seq + 1, time.monotonic(), self._next_value() if value is None else value)
        self.events.append(event)
        if self._news is not None and not self._news.done():
            self._news.set_result(None)
        return event

    def _next_value(self) -> float:
        previous = self.latest.value if self.events else None
        if self.value_kind == "ticker":  # a price taking small random steps
            return round((previous or 100.0) + self._random.gauss(0, 0.05), 2)
        # a temperature drifting slowly through the day
        n = len(self.events)
        return round(18.0 + 4.0 * math.sin(n / 50.0) + self._random.gauss(0, 0.1), 1)

    # -- running --------------------------------------------------------------------------

    def start(self, duration: float | None = None) -> "Feed":
        """Start publishing on the running loop (the lab loop), for ``duration`` seconds or until stopped."""
        self._task = asyncio.get_running_loop().create_task(self._run(duration))
        return self

    async def _run(self, duration: float | None) -> None:
        self.started = start = time.monotonic()
        ticks_per_second = self.rate / self.burst
        offset, ticks = 0.0, 0  # seconds from the start to the next tick, and ticks so far
        while True:
            ticks += 1
            if self.arrivals == "fixed":
                offset = ticks / ticks_per_second  # computed afresh each time: no drift, no rounding creep
            else:
                offset += self._random.expovariate(ticks_per_second)
            if duration is not None and offset > duration + 1e-9:
                await asyncio.sleep(max(0.0, start + duration - time.monotonic()))  # run the full duration
                return
            await asyncio.sleep(max(0.0, start + offset - time.monotonic()))
            for _ in range(self.burst):
                self.publish()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def finished(self) -> None:
        """Wait until a feed started with a duration has published its last event."""
        if self._task is not None:
            await self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
