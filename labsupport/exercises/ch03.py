"""Exercises for chapter 3, long polling."""

from __future__ import annotations

import inspect
import random
import re
import statistics
import time

import aiohttp

from ..checks import Exercise, Measurement
from ..experiments.longpolling import run_crossover
from ..experiments.production_idle import run_idle
from ..experiments.core import Workload, crossing
from ..patterns import longpolling
from .tryout import TryOutFailed, judge_return, try_out

# q1: the cursor a client sends with its next request.
Q1_CASES = [
    ((0, {"events": []}), 0),
    ((0, {"events": [{"seq": 1, "value": 1.0}, {"seq": 2, "value": 1.1}]}), 2),
    ((7, {"events": []}), 7),
    ((3, {"events": [{"seq": 4, "value": 0.9}]}), 4),
]


def _check_cursor(next_cursor) -> tuple[bool, str]:
    for (cursor, answer), expected in Q1_CASES:
        got = next_cursor(cursor, answer)
        if got is None:
            return False, "next_cursor returned nothing: write its body (replace the ...) and run the cell again."
        if got != expected:
            what = "an empty answer (the hold ran out)" if not answer["events"] else f"{len(answer['events'])} event(s)"
            return False, f"With cursor {cursor} and {what}, the next cursor is {expected}, not {got!r}."
    return True, "The cursor moves to the newest event received and stays put on an empty answer."


def _model_cursor(cursor: int, answer: dict) -> int:
    return answer["events"][-1]["seq"] if answer["events"] else cursor


q1 = Exercise(
    "Implement the cursor",
    checker=_check_cursor,
    hint="The next request asks for events after the newest one you hold. An empty answer brings nothing new.",
    solution="def next_cursor(cursor, answer):\n"
             "    return answer['events'][-1]['seq'] if answer['events'] else cursor",
    answer=_model_cursor,
)

# q2: backoff with jitter after errors.
Q2_FIRST, Q2_CAP, Q2_SAMPLES = 0.2, 5.0, 300


def _check_backoff(backoff) -> tuple[bool, str]:
    if backoff(1) is None:
        return False, "backoff returned nothing: write its body (replace the ...) and run the cell again."
    waits = {f: [float(backoff(f)) for _ in range(Q2_SAMPLES)] for f in range(1, 11)}
    every = [w for ws in waits.values() for w in ws]
    mean = {f: statistics.fmean(ws) for f, ws in waits.items()}
    if min(every) < 0:
        return False, "A wait cannot be negative."
    if max(every) > Q2_CAP + 1e-9:
        return False, f"Some waits exceed the {Q2_CAP:.0f} s cap: after many failures, clients should still retry."
    if mean[1] > Q2_FIRST:
        return False, (f"The first retry should come quickly (on average {Q2_FIRST} s or less): "
                       "one lost request is common.")
    if not mean[5] > 2 * mean[1]:
        return False, "The wait should grow with each failure in a row (double it, say)."
    if statistics.pstdev(waits[3]) < 0.1 * mean[3]:
        return False, ("Without randomness, every client that failed at the same moment retries at the same "
                       "moment too: add jitter.")
    return True, (f"Mean wait {mean[1]:.2f} s after one failure, {mean[5]:.2f} s after five, never over "
                  f"{Q2_CAP:.0f} s, and spread out so restarting clients do not return all at once.")


def _model_backoff(failures: int) -> float:
    return random.uniform(0, min(Q2_CAP, 0.1 * 2 ** failures))  # "full jitter"


q2 = Exercise(
    "Back off, with jitter",
    checker=_check_backoff,
    hint="Double a base wait with each failure, cap it, then pick a random wait between 0 and that value.",
    solution="import random\n"
             "def backoff(failures):\n"
             f"    return random.uniform(0, min({Q2_CAP}, 0.1 * 2 ** failures))",
    answer=_model_backoff,
)

# q3: where long polling starts to cost more requests than polling; then both measured side by side.
Q3_INTERVAL = 0.5
Q3_RATES = (1.0, 2.0, 4.0)   # events/s: below, at and above the crossover
Q3_DURATION = 3.0


def _check_crossover(answer) -> tuple[bool, str]:
    rate = float(answer)
    if abs(rate - 1 / Q3_INTERVAL) <= 0.1:
        return True, (f"Polling sends {1 / Q3_INTERVAL:.0f} requests/s whatever happens; long polling sends about "
                      "one per event. Above 2 events/s long polling sends more.")
    if abs(rate - Q3_INTERVAL) <= 0.05:
        return False, "That is the interval, not a rate. How many requests a second does the poller send?"
    return False, "Compare requests per second: periodic polling sends 1/interval; long polling about one per event."


q3 = Exercise(
    "The crossover",
    checker=_check_crossover,
    hint="Long polling answers (and so re-asks) about once per event; polling asks once per interval.",
    solution=f"1 / {Q3_INTERVAL} s = {1 / Q3_INTERVAL:.0f} events per second.",
    answer=1 / Q3_INTERVAL,
    measure=lambda: _measure_crossover(),
)


def _measure_crossover() -> Measurement:
    """Where long polling's requests a second (one per event) meet polling's, measured at three rates."""
    table = run_crossover(rates=Q3_RATES, interval=Q3_INTERVAL, clients=2, duration=Q3_DURATION).table()
    table = table[table["pattern"] != "long polling, batched"].set_index(["pattern", "rate"])
    polling = table.loc["polling", "requests_per_s_per_client"]
    long_polling = table.loc["long polling", "requests_per_event"] * polling.index  # requests a second while events flow
    crossover = crossing(polling.index, long_polling.to_numpy() - polling.to_numpy())
    return Measurement(
        claim="periodic polling sends 1 / interval requests a second whatever happens, long polling one per event, "
              "so they cross at 1 / interval events a second",
        theory=f"{1 / Q3_INTERVAL:g} events a second",
        measured=f"{crossover:.2f} events a second (polling: {', '.join(f'{v:.2f}' for v in polling)} requests/s per "
                 f"client; long polling: {', '.join(f'{v:.2f}' for v in long_polling)}, at "
                 f"{', '.join(f'{r:g}' for r in Q3_RATES)} events/s)",
        id="L5 crossover at 0.5 s", value=crossover, expected=1 / Q3_INTERVAL,
        # a poller's count can be one request off at each edge of the window (1 / 3 s a second), which
        # moves the interpolated crossing by up to a fifth between the measured rates
        low=0.8 / Q3_INTERVAL, high=1.2 / Q3_INTERVAL, unit="events/s",
        how=f"Both patterns against real servers for {Q3_DURATION:g} s, 2 clients each, at three event rates at once.",
    )


# q4: a hold that survives the path; then measured behind a real idle-cutting proxy, times scaled down 50-fold.
Q4_PROXY, Q4_BALANCER = 30, 60
Q4_SCALE, Q4_OVER = 50, 35   # Q4_OVER: a hold beyond the proxy's timeout, measured beside the model answer


def _check_hold(answer) -> tuple[bool, str]:
    hold = float(answer)
    if hold >= Q4_PROXY:
        return False, f"The proxy cuts held requests after {Q4_PROXY} s: the client would see an error, not an answer."
    if hold < 5:
        return False, "That works, but the shorter the hold, the more empty answers each client costs the server."
    if hold > Q4_PROXY - 3:
        return True, "It works, but it is close: leave a margin for clock drift and slow links (20 to 25 s is usual)."
    return True, f"Below the shortest idle timeout on the path ({Q4_PROXY} s), with a margin."


q4 = Exercise(
    "Choose the hold",
    checker=_check_hold,
    hint="The request must be answered before anything on the path gives up on it. Which limit comes first?",
    solution=f"Anything comfortably under {Q4_PROXY} s, for example 25 s.",
    answer=25,
    measure=lambda: _measure_hold(),
)


def _measure_hold() -> Measurement:
    """Long polls held for the model answer's time, and for one past the proxy's, through a proxy that drops
    connections quiet for ``Q4_PROXY`` (all / ``Q4_SCALE``), during a quiet spell 1.5 proxy timeouts long."""
    cut = {hold: int(run_idle(timeout=Q4_PROXY / Q4_SCALE, heartbeat=hold / Q4_SCALE, quiet=1.5 * Q4_PROXY / Q4_SCALE)
                     .table().loc["long polling", "dropped_by_proxy"])
           for hold in (q4.answer, Q4_OVER)}
    return Measurement(
        claim="a long poll answered before the proxy's idle timeout is never cut; one held longer is",
        theory=f"a hold of {q4.answer} s survives a {Q4_PROXY} s proxy, {Q4_OVER} s does not",
        measured=f"{cut[q4.answer]} connections cut with a {q4.answer} s hold, {cut[Q4_OVER]} with {Q4_OVER} s",
        # the longer hold is cut once in the quiet spell; the retry is then answered by the event in time
        id="L4 hold behind a proxy", value=[cut[q4.answer], cut[Q4_OVER]], expected=[0, 1],
        low=[0, 1], high=[0, 1], unit="connections cut",
        how=f"Chapter 8's idle-cutting proxy in front of this chapter's server and client, every time / {Q4_SCALE}: "
            f"a proxy timeout of {Q4_PROXY / Q4_SCALE:g} s, holds of {q4.answer / Q4_SCALE:g} and "
            f"{Q4_OVER / Q4_SCALE:g} s.",
    )


# q5 and q6 change a long-polling client and run it against the chapter's real server.
Q5_WORKLOAD = Workload(rate=50.0, clients=1, duration=1.5, latency=0.02)  # a round trip of 40 ms


async def _model_long_poll(base_url: str, recorder) -> None:
    async with aiohttp.ClientSession() as session:
        cursor = 0
        while True:
            sent = time.monotonic()
            async with session.get(f"{base_url}/events", params={"after": cursor}) as response:
                answer = await response.json()
            for event in answer["events"]:
                recorder.saw(event["seq"])
                cursor = event["seq"]
            recorder.request(sent, response.status, len(answer["events"]))


def _check_resume(long_poll) -> tuple[bool, str]:
    if not inspect.iscoroutinefunction(long_poll):
        return False, "Pass your client, an `async def` function of (base_url, recorder)."
    try:
        result = try_out(longpolling.handlers, long_poll, Q5_WORKLOAD, ready_first=False)
    except TryOutFailed as failure:
        return False, str(failure)
    s = result.summary()
    measured = f"{s['delivered']} of {s['events']} events seen in {s['requests']} answers"
    if s["delivered"] == 0:
        return False, f"Nothing reached the client ({measured}): does it record every event of each answer?"
    if s["missed"]:
        return False, (f"{s['missed']} of {s['events']} events were lost ({measured}). They arrived while your next "
                       f"request was on its way (a round trip is {2000 * Q5_WORKLOAD.latency:.0f} ms on this link), "
                       "and a request without a cursor asks only for news from now on. "
                       "Send after=<the seq of the last event you saw>.")
    asked = [int(n) for up, _ in result.heads for n in re.findall(rb"[?&]after=(\d+)", up)]
    if len(asked) > 3 and len(set(asked)) == 1:
        return False, (f"Nothing lost, but every request asked for after={asked[0]} ({measured}), so each answer "
                       "carried every event again: move the cursor to the newest event of each answer.")
    return True, f"Nothing lost across the gaps between answers ({measured}, {s['requests_per_s']:.0f} requests/s)."


q5 = Exercise(
    "Resume from the cursor",
    checker=_check_resume,
    hint="Between an answer and your next request nobody is waiting for news. Which request parameter "
         "tells the server what you already have?",
    solution='params={"after": cursor}, where cursor is the seq of the last event you recorded '
             "(0 before the first answer).",
    answer=_model_long_poll,
)

# q6: many clients, one server restart: do they all come back to the new server at once?
Q6_CLIENTS, Q6_RESTART_AT, Q6_DOWN_FOR, Q6_WINDOW = 40, 0.3, 0.6, 0.1
Q6_WORKLOAD = Workload(rate=5.0, clients=Q6_CLIENTS, duration=1.5)


def _model_retry_delay(failures: int) -> float:
    return random.uniform(0, min(1.0, 0.1 * 2 ** failures))


def _check_spread(retry_delay) -> tuple[bool, str]:
    if not callable(retry_delay):
        return False, "Pass your function retry_delay(failures) that returns the seconds to wait."

    def client(url, recorder):
        return longpolling.long_poll(url, recorder, retry_delay=retry_delay)

    return judge_return(
        longpolling.handlers, client, Q6_WORKLOAD, restart=(Q6_RESTART_AT, Q6_DOWN_FOR), window=Q6_WINDOW,
        drain=1.0, ready_first=False, came_back="reached the new server",
        late_advice="Cap the wait at about a second: a client that waits too long leaves its user behind.",
        wave_advice="They all lost their request at the same moment, and equal waits keep them in step: "
                    "make each wait random.")


q6 = Exercise(
    "Spread the re-asks",
    checker=_check_spread,
    hint="All the clients lost their request at the same instant. If each waits 50 ms, then 100 ms, then 200 ms, "
         "when does each one come back? Draw the wait at random between 0 and the doubled value.",
    solution="import random\n"
             "def my_retry_delay(failures):\n"
             "    return random.uniform(0, min(1.0, 0.1 * 2 ** failures))",
    answer=_model_retry_delay,
)
