"""Exercises for chapter 2, Ajax (short) polling."""

from __future__ import annotations

import asyncio
import inspect
import json
import time

import aiohttp

from ..checks import Exercise, Measurement
from ..experiments.polling import mean_wait_bounds, poll_heads, run_polling, worst_wait_bounds
from ..experiments.core import Workload
from ..patterns import polling
from ..lab import lab
from ..results import Result
from .tryout import TryOutFailed, try_out

# q1: how long does an update wait for the next poll? Predicted, then measured at a tenth of the interval.
Q1_INTERVAL = 4.0
Q1_SCALE = 10   # the run polls every Q1_INTERVAL / Q1_SCALE seconds, and its waits are scaled back up


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
    measure=lambda: _measure_wait(),
)


def _waits(interval: float, duration: float) -> tuple[Result, float, float, int]:
    """(run, mean, worst, how many) seconds from an update to the poller holding it: 4 pollers, updates at
    random moments."""
    result = run_polling(interval, rate=20.0, clients=4, duration=duration, arrivals="poisson", seed=2)
    stale = result.staleness()["staleness"].dropna()
    return result, float(stale.mean()), float(stale.max()), len(stale)


def _measure_wait() -> Measurement:
    interval = Q1_INTERVAL / Q1_SCALE
    _, mean, worst, n = _waits(interval, 1.2)
    (mean_low, mean_high), (worst_low, worst_high) = mean_wait_bounds(interval, n), worst_wait_bounds(interval, n)
    return Measurement(
        claim="an update waits half a poll interval on average and one interval at worst",
        theory=f"({Q1_INTERVAL / 2:g}, {Q1_INTERVAL:g}) s",
        measured=f"({mean * Q1_SCALE:.2f}, {worst * Q1_SCALE:.2f}) s (polling every {interval:g} s, "
                 f"waits x {Q1_SCALE})",
        # about 100 waits spread evenly over one interval: 3 standard deviations of their mean, the
        # longest of them, and one poll's round trip on top of each (scaled up with the waits)
        id="A1 exercise waits", value=[mean * Q1_SCALE, worst * Q1_SCALE],
        expected=[Q1_INTERVAL / 2, Q1_INTERVAL], low=[mean_low * Q1_SCALE, worst_low * Q1_SCALE],
        high=[mean_high * Q1_SCALE, worst_high * Q1_SCALE], unit="s",
        how="4 real pollers, updates at random moments, the wait from each update to the poller holding it.",
    )


# q2: what the headers cost over a day; measured as bytes per poll on the wire, times the polls in a day.
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
    measure=lambda: _measure_day(),
)


Q2_RUN, Q2_POLL = 2.0, 0.1  # seconds of polling every 0.1 s: about 20 polls


def _measure_day() -> Measurement:
    result = run_polling(Q2_POLL, rate=2.0, duration=Q2_RUN)
    per_poll = result.wire.bytes_total / len(result.served)  # every poll the server answered
    payload = len('{"seq": 1, "value": 100.05}')  # an event as JSON: a price near 100
    counted = sum(poll_heads(payload)) + payload
    day = 86_400 / Q2_INTERVAL * per_poll / 1e6
    return Measurement(
        claim="a poll costs the bytes of its headers and its payload, counted line by line, "
              "so a day of polling costs megabytes per client",
        theory=f"{Q2_MB:.2f} MB a day at {Q2_BYTES_PER_POLL} B per poll; {counted} B per poll here",
        measured=f"{day:.2f} MB a day ({per_poll:.0f} B per poll both ways on the wire x "
                 f"{86_400 // Q2_INTERVAL} polls)",
        # the payload varies by a few bytes (the event's number and price, or no event yet: 25 B); a
        # request under way when the run stops adds its bytes to the wire but no answer (132 B over ~20
        # polls), and an answer under way the server counted but the meter had not yet relayed takes
        # them away (its head and payload over ~20 polls)
        id="A2 exercise bytes per poll", value=per_poll, expected=counted,
        low=counted - 5 - (poll_heads(payload)[1] + payload) / (Q2_RUN / Q2_POLL), high=counted + 12,
        unit="B",
        how=f"One real poller for {Q2_RUN:g} s, its bytes counted by the wire meter and its polls by the server; "
            "a day is those bytes per poll, scaled.",
    )


# q3: when is the connection really closed after each answer? Measured with the times scaled down 100-fold.
Q3_INTERVAL, Q3_IDLE_TIMEOUT, Q3_MINUTES = 30, 5, 10
Q3_SCALE, Q3_RUN = 100, 1.0
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
    measure=lambda: _measure_connections(),
)


async def _slow_and_fast_pollers() -> tuple[Result, Result]:
    interval = Q3_INTERVAL / Q3_SCALE
    return await asyncio.gather(run_polling.coro(interval, rate=2.0, duration=Q3_RUN,
                                                 idle_timeout=Q3_IDLE_TIMEOUT / Q3_SCALE),
                                run_polling.coro(interval, rate=2.0, duration=Q3_RUN, idle_timeout=Q3_RUN))


def _measure_connections() -> Measurement:
    slow, kept = lab.run(_slow_and_fast_pollers(), expected_seconds=Q3_RUN + 0.5, label="measuring both")
    polls, opened = len(slow.requests), slow.wire.connections_opened
    return Measurement(
        claim="a connection idle longer than the keep-alive timeout is closed, so every poll opens a new one",
        theory=f"{Q3_CONNECTIONS} connections for {Q3_CONNECTIONS} polls",
        measured=f"{opened} connections for {polls} polls in {Q3_RUN} s (the same poller with a longer timeout: "
                 f"{kept.wire.connections_opened} for {len(kept.requests)})",
        # a poll under way when the run stops has opened its connection but has no answer yet
        id="A3 exercise connections", value=[opened, kept.wire.connections_opened], expected=[polls, 1],
        low=[polls, 1], high=[polls + 1, 1],
        how=f"Times scaled down {Q3_SCALE}-fold: a poll every {Q3_INTERVAL / Q3_SCALE:g} s, idle connections closed "
            f"after {Q3_IDLE_TIMEOUT / Q3_SCALE:g} s (here by the client: the wire sees the same close).",
    )


# q4: combine the latency bound with the server's capacity; measured with the interval scaled down 10-fold.
Q4_WORST, Q4_CAPACITY = 1.2, 2_000
Q4_SCALE = 10
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
    measure=lambda: _measure_capacity(),
)


Q4_RUN = 1.2  # seconds: ten polls per client


def _measure_capacity() -> Measurement:
    interval = Q4_WORST / Q4_SCALE
    result, _, worst, n = _waits(interval, Q4_RUN)
    in_run = int(result.served["arrived"].between(0, Q4_RUN).sum())  # requests the server received in the run
    per_client = in_run / Q4_RUN / result.clients  # requests a second, 1 / Q4_SCALE of that at full scale
    clients = Q4_CAPACITY / (per_client / Q4_SCALE)
    polls = Q4_RUN / interval  # per client; a client polls that many times, give or take one at the run's edges
    worst_low, worst_high = worst_wait_bounds(interval, n)
    return Measurement(
        claim="polling every T keeps the worst wait within T, and costs the server 1/T requests a second per client",
        theory=f"{Q4_CLIENTS:.0f} clients, worst wait {Q4_WORST:g} s",
        measured=f"{clients:.0f} clients, worst wait {worst * Q4_SCALE:.2f} s (a poll every {interval:g} s: "
                 f"{per_client:.1f} requests a second per client at the server; times x {Q4_SCALE}, "
                 f"rates / {Q4_SCALE})",
        # both as shares of the theory: the worst of n waits, and the clients when each client's polls
        # in the run are one more or one fewer than run / interval
        id="A1 exercise capacity", value=[worst / interval, clients / Q4_CLIENTS], expected=[1, 1],
        low=[worst_low / interval, polls / (polls + 1)], high=[worst_high / interval, polls / (polls - 1)],
        unit="x theory",
        how="4 real pollers, counted by the server; capacity / (requests a second per client) is the client count.",
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
