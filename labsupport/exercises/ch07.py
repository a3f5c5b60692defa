"""Exercises for chapter 7, choosing a pattern."""

from __future__ import annotations

import math

from ..checks import Exercise
from ..costs import Need, Recommendation, header_traffic

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
