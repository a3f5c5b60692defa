"""Chapter 7's stage: each pattern's own client, and its server in a process of its own (or the broker).

``run_all_patterns`` and ``measure_connection_memory`` (in ``choosing``) measure every pattern's
server apart from the lab, so its CPU time and memory are its own: ``ServerProcess`` for the HTTP
patterns, and for core NATS publish/subscribe the broker process with a publisher on the lab loop.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import random
import time
from typing import Awaitable, Callable

import aiohttp
import psutil

from ..feed import Event, Feed
from ..lab import cancel_all
from ..patterns import polling
from ..patterns.registry import named
from ..record import Recorder
from ..server_process import ServerProcess, Usage
from .core import Workload

ARRIVAL_SPREAD = 0.002               # seconds per client over which clients first connect
CLOSE_TIMEOUT = 2.0                  # seconds a NATS client may take to close
_subjects = itertools.count(1)


# -- the clients, one per pattern (the chapters' own clients) ------------------------------------

def client_for(pattern: str, *, interval: float = 1.0, subject: str = "") -> Callable[[str, Recorder], Awaitable[None]]:
    """The pattern's own client (the one its chapter shows), with this run's settings."""
    if pattern == "pub/sub":
        return functools.partial(subscribe, subject=subject)
    settings = {"interval": interval} if pattern == "polling" else {}  # the one client with a clock of its own
    return functools.partial(named(pattern).client, **settings)


async def poll_after(base_url: str, recorder: Recorder, *, interval: float) -> None:
    """A poll with a cursor, on a clock: every ``interval`` s, ``/events?after=<last seq seen>``, chapter 3's
    cursor, on a server that answers at once (``longpolling.handlers(feed, hold=0)``). Each answer carries
    every event since the last poll, so none is skipped whatever the interval."""
    async with aiohttp.ClientSession() as session:
        cursor = 0
        tick = time.monotonic() + random.uniform(0, interval)  # each client at its own phase
        wake = tick
        while True:
            await asyncio.sleep(max(0.0, wake - time.monotonic()))
            sent = time.monotonic()
            try:
                async with session.get(f"{base_url}/events", params={"after": cursor}) as response:
                    status, answer = response.status, await response.json()
            except (aiohttp.ClientError, ValueError) as error:
                recorder.errors.append(f"{type(error).__name__}: {error}")
                wake, tick = polling.next_poll(tick, interval, time.monotonic())
                continue
            answered = time.monotonic()
            for event in answer.get("events", []):
                recorder.saw(event["seq"], answered)
                cursor = event["seq"]
            recorder.request(sent, status, len(answer.get("events", [])), answered)
            wake, tick = polling.next_poll(tick, interval, time.monotonic())


def arriving(client, clients: int) -> Callable[[str, Recorder], Awaitable[None]]:
    """``client``, started after a random pause: clients arrive spread out, as page loads do, so a
    burst of connects does not overflow the server's listen backlog (see chapter 3)."""
    async def arrive(url: str, recorder: Recorder) -> None:
        await asyncio.sleep(random.uniform(0, ARRIVAL_SPREAD * clients))
        await client(url, recorder)
    return arrive


async def subscribe(base_url: str, recorder: Recorder, subject: str) -> None:
    """A NATS subscriber: one connection to the broker, every event on ``subject`` recorded."""
    from ..broker import connect

    sent = time.monotonic()
    client = await connect(base_url.replace("http://", "nats://"), f"client-{recorder.client}")
    try:
        subscription = await client.subscribe(subject)
        await client.flush()  # the broker has the subscription: from now on nothing passes us by
        recorder.request(sent, 0, 0)  # not an HTTP request: status 0 marks the subscription
        async for message in subscription.messages:
            recorder.saw(json.loads(message.data)["seq"])
    finally:
        await close_soon(client)


async def close_soon(client) -> None:
    """Close a NATS client, but give up after CLOSE_TIMEOUT: one whose read loop died (nats-py's
    does when a PONG answers a ping it had given up on, on a very busy machine) may never finish."""
    closing = asyncio.ensure_future(client.close())
    done, _ = await asyncio.wait({closing}, timeout=CLOSE_TIMEOUT)
    if not done:
        closing.cancel()


# -- where the events come from: a server process, or the broker -------------------------------

class PubSubBackend:
    """Core NATS publish/subscribe as a fan-out: a publisher on the lab loop sends each feed event to the broker,
    which delivers it to every subscriber. The server measured is the broker process.

    ``fresh`` starts a new broker rather than the lab's running one. Its memory is then what
    these clients made it take: the Go runtime keeps and reuses what an earlier run freed, so a
    used broker's memory moves as it pleases while connections arrive (measured: anywhere from
    -7 to 64 KiB a connection over 150, one run after another on one broker; 56 to 61 KiB fresh).
    """

    def __init__(self, rate: float, arrivals: str, seed: int | None, *, fresh: bool = False) -> None:
        self.feed = Feed(rate, arrivals=arrivals, seed=seed)
        self.fresh = fresh
        self.subject = f"choosing.feed.{next(_subjects)}"
        self._task: asyncio.Task | None = None

    async def start(self) -> "PubSubBackend":
        from ..broker import connect, start_broker

        self.broker = await start_broker.coro("choosing", fresh=self.fresh)
        self.publisher = await connect(self.broker, "feed-publisher")
        self.port, self.pid = self.broker.port, self.broker.pid
        return self

    async def start_feed(self, duration: float) -> float:
        self.feed.start(duration)
        self._task = asyncio.create_task(self._publish())
        await asyncio.sleep(0)
        return self.feed.started

    async def _publish(self) -> None:
        cursor = 0
        while True:
            for event in await self.feed.wait_after(cursor):
                await self.publisher.publish(self.subject, json.dumps(event.to_json()).encode())
                cursor = event.seq

    async def finished(self) -> None:
        await self.feed.finished()

    async def events(self) -> list[Event]:
        return list(self.feed.events)

    async def usage(self) -> Usage:
        """The broker's CPU time and memory, from the operating system (CPU in 10 ms ticks on Linux)."""
        process = psutil.Process(self.pid)
        cpu = process.cpu_times()
        return Usage(cpu.user + cpu.system, process.memory_info().rss)

    async def stop(self) -> None:
        await self.feed.stop()
        if self._task is not None:
            await cancel_all([self._task])
        await close_soon(self.publisher)


def backend_for(pattern: str, workload: Workload, hold: float, *, fresh: bool = False):
    """The pattern's server in a process of its own (pub/sub's is the broker, a new one if ``fresh``), not started yet."""
    if pattern == "pub/sub":
        return PubSubBackend(workload.rate, workload.arrivals, workload.seed, fresh=fresh)
    record = named(pattern)
    options = {"hold": hold} if record.holds_requests else {}
    return ServerProcess(record, rate=workload.rate, arrivals=workload.arrivals, seed=workload.seed,
                         options=options)
