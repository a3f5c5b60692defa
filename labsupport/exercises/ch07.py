"""Exercises for chapter 7, choosing a pattern."""

from __future__ import annotations

import asyncio
import math

from ..checks import Exercise, Measurement
from ..costs import Need, Recommendation, header_traffic
from ..experiments.choosing import framed_event_bytes
from ..experiments.core import Workload
from ..experiments.polling import exchange_sizes, exchanges, run_polling
from ..experiments.sse import run_sse
from ..lab import lab
from ..patterns import longpolling
from .tryout import TryOutFailed, try_out

# q1: the article's cases.
Q1_CASES = ("weather panel", "stock ticker", "news feed", "chat", "email jobs")
Q1_EXPECTED = {"weather panel": {"polling"}, "stock ticker": {"sse", "websocket"}, "news feed": {"sse", "websocket"},
               "chat": {"websocket"}, "email jobs": {"queue"}}
Q1_WHY = {
    "weather panel": "it changes every few minutes and a few minutes late is fine: a poll every few minutes costs "
                     "almost nothing and holds no connection",
    "stock ticker": "many updates a second, every one wanted at once, one way: a stream (SSE, or a WebSocket)",
    "news feed": "a million readers, a few updates a minute, seconds late at most: holding a stream is cheaper "
                 "than polling that often",
    "chat": "both sides talk, fast: a WebSocket",
    "email jobs": "work for another service, done later: a queue",
}
PATTERN_NAMES = ("polling", "long polling", "sse", "websocket", "queue")


def _check_cases(answer) -> tuple[bool, str]:
    if not isinstance(answer, dict) or set(answer) != set(Q1_CASES):
        return False, f"Give a dict with exactly these keys: {', '.join(Q1_CASES)}."
    for case in Q1_CASES:
        chosen = str(answer[case]).strip().lower()
        if chosen not in PATTERN_NAMES:
            return False, f"{case}: {answer[case]!r} is not one of {', '.join(PATTERN_NAMES)}."
        if chosen not in Q1_EXPECTED[case]:
            return False, f"{case}: not {chosen}. Think about how often it changes, how late it may be, and who talks."
    return True, "All five. " + " ".join(f"{case.capitalize()}: {why}." for case, why in Q1_WHY.items())


q1 = Exercise(
    "The article's cases",
    checker=_check_cases,
    hint="Ask three questions for each: how often does it change, how late may it arrive, and does the client "
         "talk back (or is it work for another service)?",
    solution="{'weather panel': 'polling', 'stock ticker': 'sse', 'news feed': 'sse', 'chat': 'websocket', "
             "'email jobs': 'queue'}  (a WebSocket also fits the ticker and the news feed)",
    answer={"weather panel": "polling", "stock ticker": "sse", "news feed": "sse", "chat": "websocket",
            "email jobs": "queue"},
)

# q2: the classic header arithmetic.
Q2_CLIENTS, Q2_INTERVAL, Q2_HEADERS = 10_000, 60.0, 850
Q2_ANSWER = header_traffic(Q2_CLIENTS, Q2_INTERVAL, Q2_HEADERS)


def _check_headers(answer) -> tuple[bool, str]:
    value = float(answer)
    if math.isclose(value, Q2_ANSWER, rel_tol=0.05):
        return True, (f"{Q2_CLIENTS:,} × {Q2_HEADERS} bytes × 8 bits / {Q2_INTERVAL:.0f} s = {Q2_ANSWER:.2f} Mbit/s: "
                      "small. Polling once a second would be 60 times that.")
    if math.isclose(value, Q2_ANSWER / 8, rel_tol=0.05):
        return False, "That is megabytes per second: the question asks for megabits (× 8)."
    if math.isclose(value, Q2_ANSWER * Q2_INTERVAL, rel_tol=0.05):
        return False, f"That is per poll round: divide by the {Q2_INTERVAL:.0f} s between polls."
    return False, "Multiply clients by header bytes and 8 bits, divide by the interval, then by a million."


q2 = Exercise(
    "Headers at scale",
    checker=_check_headers,
    hint="Polls per second = clients / interval. Each carries the headers once. Bits = bytes × 8.",
    solution=f"10_000 * 850 * 8 / 60 / 1e6 = {Q2_ANSWER:.3f} Mbit/s",
    answer=Q2_ANSWER,
    measure=lambda: _measure_header_traffic(),
)

Q2_RUN_CLIENTS, Q2_RUN_INTERVAL, Q2_RUN = 40, 0.5, 1.5


def _measure_header_traffic() -> Measurement:
    """Real pollers: is the traffic on the wire clients / interval x the bytes of one poll?"""
    run = run_polling(Q2_RUN_INTERVAL, rate=1.0, clients=Q2_RUN_CLIENTS, duration=Q2_RUN)
    request, answer = exchanges(run)[0]
    sizes = exchange_sizes(request, answer)
    headers = sizes["request_headers"] + sizes["response_headers"]
    poll = headers + sizes["payload"]
    predicted = Q2_RUN_CLIENTS / Q2_RUN_INTERVAL * poll
    measured = (run.window or run.wire).bytes_total / Q2_RUN   # the feed's window alone: no drain at the end
    ours = header_traffic(Q2_CLIENTS, Q2_INTERVAL, headers)
    return Measurement(
        claim="pollers put clients / interval x (bytes of one poll) on the wire, nothing more",
        theory=f"{Q2_ANSWER:.2f} Mbit/s with {Q2_HEADERS} B of headers",
        measured=f"{ours:.2f} Mbit/s with this lab's {headers} B of headers; on the wire {measured:.0f} B/s "
                 f"for {Q2_RUN_CLIENTS} clients every {Q2_RUN_INTERVAL} s, against {predicted:.0f} predicted from one "
                 f"{poll} B poll",
        # Each client polls on its own clock, so the window of three intervals holds three of its polls;
        # a poll whose answer crosses the window's edge (a round trip of a few ms in 0.5 s) splits its
        # bytes, and the payload before the first event is 2 B shorter: within 5 %.
        id="C3 exercise header traffic", value=measured, expected=predicted, low=0.95 * predicted,
        high=1.05 * predicted, unit="B/s",
        how=f"{Q2_RUN_CLIENTS} real pollers for {Q2_RUN} s through the wire meter; one poll's headers read from the "
            "captured bytes. Real browsers send more headers (cookies, user agent) than this lab's client.",
    )


# q3: the crossover in bytes.
Q3_POLL, Q3_EVENT, Q3_INTERVAL = 400, 50, 2.0
Q3_ANSWER = Q3_POLL / (Q3_EVENT * Q3_INTERVAL)


def _check_crossover(answer) -> tuple[bool, str]:
    value = float(answer)
    if math.isclose(value, Q3_ANSWER, rel_tol=0.05):
        return True, (f"Polling costs {Q3_POLL} / {Q3_INTERVAL:g} = {Q3_POLL / Q3_INTERVAL:.0f} bytes a second "
                      f"whatever happens; the stream {Q3_EVENT} bytes per event. They meet at {Q3_ANSWER:g} events "
                      "a second, and the client count cancels out.")
    return False, "Write both as bytes per client per second and set them equal."


q3 = Exercise(
    "Where pull and push cross",
    checker=_check_crossover,
    hint="Polling: poll bytes / interval per second, regardless of events. Stream: event bytes × events per second.",
    solution=f"{Q3_POLL} / ({Q3_EVENT} * {Q3_INTERVAL:g}) = {Q3_ANSWER:g} events per second",
    answer=Q3_ANSWER,
    measure=lambda: _measure_bytes_crossover(),
)

Q3_RATES = (4.0, 16.0)


async def _both_at_rates(rates: tuple[float, ...]) -> list[dict[str, float]]:
    return await asyncio.gather(*(_both_at(rate) for rate in rates))


def _measure_bytes_crossover() -> Measurement:
    """Polling and SSE on the wire at two event rates: which cost grows with the events?"""
    low, high = lab.run(_both_at_rates(Q3_RATES), expected_seconds=Q5_SECONDS + 0.5, label="measuring both")
    per_event = (high["sse"] - low["sse"]) / (Q3_RATES[1] - Q3_RATES[0])
    per_poll = low["polling"] * Q5_INTERVAL
    crossover = per_poll / (per_event * Q3_INTERVAL)
    # The events the faster stream sends more: numbers 7 to 24, each counted by the SSE and chunked rules.
    extra = range(round(Q3_RATES[0] * Q5_SECONDS) + 1, round(Q3_RATES[1] * Q5_SECONDS) + 1)
    counted = sum(framed_event_bytes(seq) for seq in extra) / len(extra)
    return Measurement(
        claim="polling's bytes a second do not grow with the event rate; a stream's grow by one framed event's "
              "bytes for every event",
        theory=f"{Q3_ANSWER:g} events a second with {Q3_POLL} B polls and {Q3_EVENT} B events",
        measured=f"{crossover:.1f} events a second with this lab's {per_poll:.0f} B polls and {per_event:.1f} B events "
                 f"(polling {low['polling']:.0f} then {high['polling']:.0f} B/s, SSE {low['sse']:.0f} then "
                 f"{high['sse']:.0f} B/s, at {Q3_RATES[0]:g} then {Q3_RATES[1]:g} events/s)",
        # Polling: a poll crossing either edge of the window is counted in part, 5 to 7 polls' bytes at either rate.
        # The stream: the event due at the window's end may fall just outside it at either rate (1 in 18
        # of the events between them), and a price takes 5 or 6 characters.
        id="C2 exercise bytes grow", value=[high["polling"] / low["polling"], per_event], expected=[1.0, counted],
        low=[5 / 7, 0.93 * counted], high=[7 / 5, 1.07 * counted], unit="",
        how=f"Polling every {Q5_INTERVAL} s and an SSE stream for {Q5_SECONDS} s at two event rates at once; bytes "
            f"counted by the wire meter while the feed ran, the crossover worked out for a poll every {Q3_INTERVAL:g} s; "
            "the polling ratio first, then the stream's bytes per extra event.",
    )


# q4: describe a workload, let the guide decide with your measured costs.
PARCEL = Need("parcel tracking", clients=200_000, updates_per_minute=2, max_delay_s=30, every_update_matters=False)


def _check_description(answer) -> tuple[bool, str]:
    if not isinstance(answer, Recommendation):
        return False, "Pass what recommend(need, units) returns."
    need = answer.need
    wrong = [name for name, value in (("clients", PARCEL.clients), ("updates_per_minute", PARCEL.updates_per_minute),
                                       ("max_delay_s", PARCEL.max_delay_s), ("two_way", PARCEL.two_way),
                                       ("every_update_matters", PARCEL.every_update_matters),
                                       ("background_work", PARCEL.background_work))
             if getattr(need, name) != value]
    if wrong:
        return False, f"The workload is not described right yet: check {', '.join(wrong)}."
    return True, f"With your measured costs the guide picks {answer.pattern}: {'; '.join(answer.reasons)}."


q4 = Exercise(
    "Describe a workload",
    checker=_check_description,
    hint="Need(name, clients=..., updates_per_minute=..., max_delay_s=..., every_update_matters=...). Only the latest "
         "position matters; nobody sends anything back.",
    solution="recommend(Need('parcel tracking', clients=200_000, updates_per_minute=2, max_delay_s=30, "
             "every_update_matters=False), units)",
    answer=Recommendation(PARCEL, "sse", ["the model answer; the notebook computes the real one"]),
)


# q5: a rule for "which costs fewer bytes", checked against the two patterns measured on the wire.
Q5_INTERVAL, Q5_RATES, Q5_SECONDS = 0.25, (4.0, 60.0), 1.5


async def _both_at(rate: float) -> dict[str, float]:
    """Bytes a second on the wire while the feed ran, polling and SSE side by side (a stream's opening
    request, paid once, is left out, as it would weigh nothing over an hour)."""
    polling, stream = await asyncio.gather(run_polling.coro(Q5_INTERVAL, rate=rate, duration=Q5_SECONDS),
                                           run_sse.coro(rate=rate, duration=Q5_SECONDS))
    return {"polling": polling.window.bytes_total / Q5_SECONDS, "sse": stream.window.bytes_total / Q5_SECONDS}


def _check_rule(cheaper) -> tuple[bool, str]:
    if not callable(cheaper):
        return False, "Pass your function, cheaper(rate), which returns 'polling' or 'sse'."
    said = {rate: str(cheaper(rate)).strip().lower() for rate in Q5_RATES}
    for rate, answer in said.items():
        if answer not in ("polling", "sse"):
            return False, f"cheaper({rate:g}) returned {answer!r}; return 'polling' or 'sse'."
    costs = lab.run(_both_at_rates(Q5_RATES), expected_seconds=Q5_SECONDS + 0.5, label="measuring both")
    for (rate, answer), cost in zip(said.items(), costs):
        measured = min(cost, key=cost.get)
        if answer != measured:
            return False, (f"At {rate:g} events/s, {measured} was cheaper on the wire: polling every "
                           f"{Q5_INTERVAL} s sent {cost['polling']:.0f} B/s, SSE {cost['sse']:.0f} B/s. Polling's cost "
                           "does not grow with the events; push pays for every one.")
    return True, (f"Your rule matched the wire at {Q5_RATES[0]:g} and {Q5_RATES[1]:g} events/s: push wins while events "
                  "are rarer than about (poll bytes / event bytes) per interval, then polling does.")


q5 = Exercise(
    "A rule that the wire agrees with",
    checker=_check_rule,
    hint="Polling every 0.25 s costs 4 polls a second of about 350 bytes each, whatever happens. An SSE event "
         "costs its payload plus about 20 bytes. Where do the two meet?",
    solution="def cheaper(rate):\n    return 'sse' if rate < 4 * 350 / 60 else 'polling'   # about 23 events/s",
    answer=lambda rate: "sse" if rate < 4 * 350 / 60 else "polling",
)


# q6: a batching window that makes long polling ask less often than polling, measured at the server.
Q6_RATE, Q6_INTERVAL = 20.0, 0.25
Q6_WORKLOAD = Workload(rate=Q6_RATE, clients=1, duration=2.0)


def _check_batch(handlers) -> tuple[bool, str]:
    if not callable(handlers):
        return False, "Pass your handlers function, as in `my_handlers = lambda feed: longpolling.handlers(feed, ...)`."
    try:
        result = try_out(handlers, longpolling.long_poll, Q6_WORKLOAD, ready_first=False)
    except TryOutFailed as failure:
        return False, str(failure)
    s = result.summary()
    measured = (f"{s['requests_per_s']:.1f} requests/s against polling's {1 / Q6_INTERVAL:.0f}, "
                f"mean latency {s['latency_mean_ms']:.0f} ms, {s['missed']} missed")
    if s["missed"]:
        return False, f"Events were lost ({measured}): keep the cursor, change only the batch window."
    if s["requests_per_s"] >= 0.9 / Q6_INTERVAL:
        return False, (f"Long polling still asked at least as often as polling ({measured}). Each answer "
                       "ends a request, so it asks about 1/(window + 1/rate) times a second: the window must "
                       "be at least the poll interval.")
    return True, f"Fewer requests than polling, nothing lost ({measured}); the price is the window's wait."


q6 = Exercise(
    "Batch until it pays",
    checker=_check_batch,
    hint="Long polling with a batch window asks about 1 / (window + 1/rate) times a second. Polling asks 1/0.25 = 4.",
    solution="my_handlers = lambda feed: longpolling.handlers(feed, batch=0.3)   # 1/(0.3 + 0.05) = 2.9 per second",
    answer=lambda feed: longpolling.handlers(feed, batch=0.3),
)
