"""Exercises for chapter 1, pull and push."""

from __future__ import annotations

import inspect
import json

import aiohttp

from ..checks import Exercise, Measurement
from ..experiments.polling import run_polling
from ..experiments.core import Workload
from ..patterns import push
from .tryout import TryOutFailed, try_out

# q1: how many requests does polling cost? Predicted, then counted at a real server for 1.5 s.
Q1_CLIENTS, Q1_INTERVAL, Q1_SECONDS = 40, 0.5, 60
Q1_RUN = 1.5


def _check_requests(answer) -> tuple[bool, str]:
    expected = Q1_CLIENTS * Q1_SECONDS / Q1_INTERVAL
    if abs(float(answer) - expected) <= 0.02 * expected:
        return True, f"{Q1_CLIENTS} clients x {Q1_SECONDS / Q1_INTERVAL:.0f} polls each = {expected:.0f} requests."
    if abs(float(answer) - expected / Q1_CLIENTS) <= 1:
        return False, "That is one client's count; the server answers every client."
    return False, "Count the polls one client makes in the minute, then think about all the clients."


q1 = Exercise(
    "Predict the requests",
    checker=_check_requests,
    hint="One client polling every 0.5 s makes 2 requests a second, whether or not anything changed.",
    solution=f"{Q1_CLIENTS} x {Q1_SECONDS} s / {Q1_INTERVAL} s = {Q1_CLIENTS * Q1_SECONDS / Q1_INTERVAL:.0f} requests.",
    answer=Q1_CLIENTS * Q1_SECONDS / Q1_INTERVAL,
    measure=lambda: _measure_requests(),
)


def _measure_requests() -> Measurement:
    """The same clients and interval for ``Q1_RUN`` seconds, counted where the server receives them."""
    served = run_polling(Q1_INTERVAL, rate=2.0, clients=Q1_CLIENTS, duration=Q1_RUN).served_per_s()
    theory, per_minute = Q1_CLIENTS * Q1_SECONDS / Q1_INTERVAL, served * Q1_SECONDS
    edges = Q1_CLIENTS * Q1_SECONDS / Q1_RUN  # a poll at an edge of the run counts on either side: ±1 per client
    return Measurement(
        claim=f"{Q1_CLIENTS} clients polling every {Q1_INTERVAL} s send the server clients / interval requests a "
              "second, news or not",
        theory=f"{theory:.0f} requests a minute",
        measured=f"{per_minute:.0f} requests a minute ({served:.1f} a second reached the server in a "
                 f"{Q1_RUN} s run, x {Q1_SECONDS})",
        how=f"{Q1_CLIENTS} real pollers against the chapter's server, counted by the server itself.",
        id="P1 requests a minute", value=per_minute, expected=theory, low=theory - edges, high=theory + edges,
        unit="requests a minute",
    )


# q2: the cheapest interval that meets a freshness target, checked by measuring it.
Q2_TARGET_MS, Q2_RATE = 150, 20.0


def _check_interval(answer) -> tuple[bool, str]:
    interval = float(answer)
    if not 0.05 <= interval <= 5:
        return False, "Give an interval in seconds between 0.05 and 5."
    result = run_polling(interval, rate=Q2_RATE, clients=4, duration=2.0, seed=1)
    stale = result.summary()["staleness_mean_ms"]
    measured = f"measured: mean staleness {stale:.0f} ms, {result.summary()['requests_per_s'] / 4:.1f} requests/s per client"
    if stale > Q2_TARGET_MS * 1.15:
        return False, f"Too stale ({measured}). A shorter interval keeps the data fresher."
    if interval < 0.25:
        return False, f"Fresh enough, but it costs more requests than needed ({measured}). Try a longer interval."
    return True, f"Fresh enough with the fewest requests ({measured})."


q2 = Exercise(
    "Pick the poll interval",
    checker=_check_interval,
    hint="On average an update waits half an interval for the next poll.",
    solution=f"Mean staleness is about interval / 2, so interval = 2 x {Q2_TARGET_MS} ms = 0.3 s.",
    answer=0.3,
)

# q3: a push handler that flushes only now and then: change it, and measure what arrives when.
Q3_RATE, Q3_SECONDS, Q3_FAST_MS = 20.0, 1.5, 30.0
Q3_WORKLOAD = Workload(rate=Q3_RATE, clients=1, duration=Q3_SECONDS)


def _stream_with(handler_class) -> list:
    return lambda feed: [(r"/stream", handler_class, {"feed": feed})]


def _clumps(result) -> int:
    """How many separate arrivals the client saw: events that came within 2 ms of each other are one clump."""
    seen = sorted(result.deliveries["seen"])
    return sum(1 for before, after in zip([None, *seen], seen) if before is None or after - before > 0.002)


def _check_flush(handler_class) -> tuple[bool, str]:
    if not (isinstance(handler_class, type) and issubclass(handler_class, push.StreamHandler)):
        return False, "Pass your handler class itself (MyStream), a subclass of push.StreamHandler."
    try:
        result = try_out(_stream_with(handler_class), push.listen, Q3_WORKLOAD)
    except TryOutFailed as failure:
        return False, str(failure)
    s = result.summary()
    measured = (f"{s['delivered']} of {s['events']} events in {_clumps(result)} separate arrivals, "
                f"latency p50 {s['latency_p50_ms']:.0f} ms")
    if s["delivered"] == 0:
        return False, f"Nothing reached the client ({measured}): written bytes wait in the server until a flush."
    if s["latency_p50_ms"] > Q3_FAST_MS or s["missed"]:
        return False, (f"The events arrived in clumps ({measured}). Each waited for the next flush: "
                       "flush after every batch the feed hands you.")
    return True, f"Every event left as soon as it existed ({measured})."


q3 = Exercise(
    "Put the flush back",
    checker=_check_flush,
    hint="self.write() only adds to a buffer in the server. Which call sends the buffer, and how often does MyStream make it?",
    solution="Call `await self.flush()` after every pass of the `for event in ...` loop, not only when "
             "`cursor % 10 == 0`: push.StreamHandler.get does exactly that.",
    answer=push.StreamHandler,
)


# q4: a push client that waits for the end of a response that never ends.
async def _model_listen(base_url: str, recorder) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base_url}/stream") as response:
            recorder.ready.set()
            async for line in response.content:
                recorder.saw(json.loads(line)["seq"])


def _check_listen(listen) -> tuple[bool, str]:
    if not inspect.iscoroutinefunction(listen):
        return False, "Pass your client, an `async def` function of (base_url, recorder)."
    try:
        result = try_out(push.handlers, listen, Q3_WORKLOAD)
    except TryOutFailed as failure:
        return False, str(failure)
    s = result.summary()
    if s["delivered"] == 0:
        return False, (f"0 of {s['events']} events were seen while the stream was open. A push response "
                       "never ends, so reading it to the end waits for ever: read it line by line.")
    if s["missed"]:
        return False, f"{s['missed']} of {s['events']} events were never recorded: record every line."
    return True, (f"All {s['events']} events, each recorded as it arrived "
                  f"(latency p50 {s['latency_p50_ms']:.1f} ms), on {s['connections_opened']} connection.")


q4 = Exercise(
    "Read the stream as it flows",
    checker=_check_listen,
    hint="`await response.text()` returns when the response is complete. Iterate over `response.content` instead.",
    solution="async for line in response.content:\n    recorder.saw(json.loads(line)['seq'])",
    answer=_model_listen,
)
