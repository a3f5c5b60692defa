"""Exercises for chapter 2, Ajax (short) polling."""

from __future__ import annotations

import asyncio
import inspect
import json
import time

import aiohttp

from ..checks import Exercise
from ..experiments.core import Workload
from ..patterns import polling
from ..results import Result
from .tryout import TryOutFailed, try_out

# q1: how long does an update wait for the next poll?
Q1_INTERVAL = 4.0


def _check_wait(answer) -> tuple[bool, str]:
    mean, worst = (float(x) for x in answer)
    if abs(mean - Q1_INTERVAL / 2) <= 0.2 and abs(worst - Q1_INTERVAL) <= 0.3:
        return True, (f"A change lands anywhere between two polls, so it waits 0 to {Q1_INTERVAL:.0f} s: "
                      f"{Q1_INTERVAL / 2:.0f} s on average, {Q1_INTERVAL:.0f} s at worst.")
    if abs(mean - Q1_INTERVAL) <= 0.3:
        return False, "That is the worst case. On average a change arrives halfway between two polls."
    return False, ("A change can happen anywhere between two polls. How long until the next one, "
                   "on average and at worst?")


q1 = Exercise(
    "Waiting for the next poll",
    checker=_check_wait,
    hint="Updates arrive at random moments; the next poll comes somewhere between 0 and one interval later.",
    solution=f"(mean, worst) = ({Q1_INTERVAL / 2:.0f}, {Q1_INTERVAL:.0f}) seconds: interval / 2 and one interval.",
    answer=(Q1_INTERVAL / 2, Q1_INTERVAL),
)

# q2: what the headers cost over a day.
Q2_INTERVAL, Q2_BYTES_PER_POLL = 10, 400
Q2_MB = 86_400 / Q2_INTERVAL * Q2_BYTES_PER_POLL / 1e6


def _check_bytes(answer) -> tuple[bool, str]:
    mb = float(answer)
    if abs(mb - Q2_MB) <= 0.05 * Q2_MB:
        return True, (f"{86_400 // Q2_INTERVAL} polls a day x {Q2_BYTES_PER_POLL} B = {Q2_MB:.2f} MB per client, "
                      "almost all of it headers around a weather reading of a few dozen bytes.")
    if abs(mb * 1000 - Q2_MB) <= 0.05 * Q2_MB or abs(mb / 1000 - Q2_MB) <= 0.05 * Q2_MB:
        return False, "Check the units: the answer is in megabytes (1 MB = 1,000,000 bytes)."
    return False, "Count the polls in a day (86,400 seconds), then multiply by the bytes per poll."


q2 = Exercise(
    "What a day of polling costs",
    checker=_check_bytes,
    hint="A day has 86,400 seconds. Every poll costs its bytes, news or not.",
    solution=f"86,400 / {Q2_INTERVAL} = {86_400 // Q2_INTERVAL} polls; x {Q2_BYTES_PER_POLL} B = {Q2_MB:.2f} MB.",
    answer=Q2_MB,
)

# q3: when is the connection really closed after each answer?
Q3_INTERVAL, Q3_IDLE_TIMEOUT, Q3_MINUTES = 30, 5, 10
Q3_CONNECTIONS = Q3_MINUTES * 60 // Q3_INTERVAL


def _check_connections(answer) -> tuple[bool, str]:
    n = int(answer)
    if n == Q3_CONNECTIONS:
        return True, (f"The connection sits idle {Q3_INTERVAL} s between polls, longer than the server's "
                       f"{Q3_IDLE_TIMEOUT} s keep-alive timeout, so every one of the {Q3_CONNECTIONS} polls "
                       "opens a new one.")
    if n == 1:
        return False, "Keep-alive only helps if the next request comes before the idle connection is closed."
    return False, "Compare the time between polls with how long the server keeps an idle connection."


q3 = Exercise(
    "Keep-alive against a slow poller",
    checker=_check_connections,
    hint="A kept-alive connection survives only as long as the idle timeout. What happens in the 30 s between polls?",
    solution=f"{Q3_MINUTES} min x 60 / {Q3_INTERVAL} s = {Q3_CONNECTIONS} polls, each on a new connection.",
    answer=Q3_CONNECTIONS,
)

# q4: combine the latency bound with the server's capacity.
Q4_WORST, Q4_CAPACITY = 1.2, 2_000
Q4_CLIENTS = Q4_WORST * Q4_CAPACITY


def _check_capacity(answer) -> tuple[bool, str]:
    n = float(answer)
    if abs(n - Q4_CLIENTS) <= 0.02 * Q4_CLIENTS:
        return True, (f"The worst case is one interval, so poll every {Q4_WORST} s; each client then sends "
                      f"{1 / Q4_WORST:.2f} requests/s and {Q4_CAPACITY} requests/s serve {Q4_CLIENTS:.0f} clients.")
    if abs(n - 2 * Q4_CLIENTS) <= 0.02 * 2 * Q4_CLIENTS:
        return False, "That interval meets the target on average, not in the worst case."
    return False, "First find the longest interval that keeps the worst case within the target."


q4 = Exercise(
    "How many clients can one server poll for?",
    checker=_check_capacity,
    hint="The worst-case wait is about one interval. A client polling every T seconds sends 1/T requests a second.",
    solution=f"Interval {Q4_WORST} s; clients = {Q4_CAPACITY} x {Q4_WORST} = {Q4_CLIENTS:.0f}.",
    answer=Q4_CLIENTS,
)


# q5 and q6 change a poller and run it against the real server of the chapter.
Q5_WORKLOAD = Workload(rate=1.0, clients=1, duration=2.0)  # news once a second, polls every 0.1 s
Q5_INTERVAL = 0.1


async def _model_poll(base_url: str, recorder, interval: float = Q5_INTERVAL) -> None:
    async with aiohttp.ClientSession() as session:
        held, etag = 0, None
        recorder.ready.set()
        while True:
            headers = {"If-None-Match": etag} if etag else {}
            sent = time.monotonic()
            async with session.get(f"{base_url}/latest", headers=headers) as response:
                body = await response.read()
                new = 0
                if response.status == 200:
                    event = json.loads(body)
                    etag = response.headers.get("ETag")
                    if event["seq"] > held:
                        held, new = event["seq"], 1
                        recorder.saw(held)
                recorder.request(sent, response.status, new)
            await asyncio.sleep(interval)


def _polled(poller) -> tuple[Result | None, str]:
    if not inspect.iscoroutinefunction(poller):
        return None, "Pass your poller, an `async def` function of (base_url, recorder)."
    try:
        return try_out(polling.handlers, poller, Q5_WORKLOAD), ""
    except TryOutFailed as failure:
        return None, str(failure)


def _check_conditional(poller) -> tuple[bool, str]:
    result, why = _polled(poller)
    if result is None:
        return False, why
    s, rq = result.summary(), result.requests
    not_modified, empty = int((rq["status"] == 304).sum()), int(rq["empty"].sum())
    measured = (f"{not_modified} of {empty} empty answers were 304, "
                f"{result.wire.bytes_down / max(len(rq), 1):.0f} bytes down per poll")
    if s["missed"] > 1:
        return False, f"{s['missed']} of {s['events']} updates never reached the client ({measured})."
    if not_modified < 0.8 * empty:
        return False, (f"Most empty answers still carried the whole body ({measured}). Send the ETag of the "
                       "last 200 answer in If-None-Match, and keep it up to date.")
    return True, f"Unchanged answers shrank to a 304 with no body ({measured})."


q5 = Exercise(
    "Ask only if it changed",
    checker=_check_conditional,
    hint="Every 200 answer carries an ETag header. Send it back as If-None-Match on the next poll.",
    solution='headers = {"If-None-Match": etag} if etag else {}',
    answer=_model_poll,
)


def _check_keep_alive(poller) -> tuple[bool, str]:
    result, why = _polled(poller)
    if result is None:
        return False, why
    polls, opened = len(result.requests), result.wire.connections_opened
    measured = f"{polls} polls on {opened} connection{'s' if opened != 1 else ''}"
    if polls < 5:
        return False, f"Only {polls} polls in {Q5_WORKLOAD.duration:.0f} s: does your poller keep polling?"
    if opened > 2:
        return False, (f"Every poll paid for a new TCP connection ({measured}). A session opened inside the "
                       "loop is closed at the end of each pass: open it once, before the loop.")
    return True, f"One connection carried every poll ({measured})."


q6 = Exercise(
    "Keep the connection",
    checker=_check_keep_alive,
    hint="aiohttp keeps idle connections in its ClientSession. How long does your session live?",
    solution="Move `async with aiohttp.ClientSession() as session:` above `while True:`, so every poll "
             "reuses the session and its kept-alive connection.",
    answer=_model_poll,
)
