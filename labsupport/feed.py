"""Event feeds: the "server-side news" every pattern in the course delivers.

A feed runs on the lab loop and creates events at a chosen rate, either evenly spaced
(``arrivals="fixed"``), at random like independent users (``"poisson"``), or in bursts of
several at once. Each event carries a sequence number and its creation time on the
monotonic clock that clients also use, so latency is ``seen - created`` on one clock and a
gap in sequence numbers is an update the client never saw.

Servers read the feed with a cursor (``after(seq)``) and wait for news with
``wait_after(seq)``; the feed keeps every event of a run so results can be checked against it.

A feed lives in memory: a server that crashes loses it, and its successor numbers its events
from 1 again. ``stream`` names this life of the numbering (a random token), so a client's cursor
from another life can be told from one of this life, whether it is behind or ahead.
"""

from __future__ import annotations

import asyncio
import math
import random
import secrets
import time
from dataclasses import dataclass

MAX_RATE = 10_000.0
STREAM_BYTES = 4  # random bytes naming a life of the numbering: 8 hex digits
ARRIVALS = ("fixed", "poisson")
VALUES = ("ticker", "weather")


@dataclass(frozen=True)
class Event:
    """One update: its sequence number (from 1), creation time (monotonic seconds), value."""

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
        self._readers: dict[asyncio.Future, None] = {}  # one per waiting reader, woken in the order they came
        self._task: asyncio.Task | None = None
        self.started: float | None = None
        self.stream = secrets.token_hex(STREAM_BYTES)  # this life of the sequence numbers

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
        """Events newer than ``seq``, waiting up to ``timeout`` seconds for one to exist.

        Each waiting reader has a future of its own that the next event completes: a thousand
        readers cost a thousand wake-ups per event and nothing more (no shared future to shield,
        no ``wait_for`` wrapped around it).
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not (news := self.after(seq)):
            if deadline is not None and deadline <= loop.time():
                return []
            woken = loop.create_future()
            self._readers[woken] = None
            timer = None if deadline is None else loop.call_at(deadline, _wake, woken)
            try:
                await woken
            finally:
                self._readers.pop(woken, None)
                if timer is not None:
                    timer.cancel()
        return news

    # -- writing --------------------------------------------------------------------------

    def publish(self, value: float | None = None) -> Event:
        """Create one event now (the running feed calls this; so can a test or a cell)."""
        event = Event(self.last_seq + 1, time.monotonic(), self._next_value() if value is None else value)
        self.events.append(event)
        self._wake_readers()
        return event

    def _wake_readers(self) -> None:
        """Tell every reader waiting in ``wait_after`` that there is news."""
        for woken in self._readers:
            _wake(woken)

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


def _wake(woken: asyncio.Future) -> None:
    if not woken.done():
        woken.set_result(None)
