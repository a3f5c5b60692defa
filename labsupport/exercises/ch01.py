"""Exercises for chapter 1, pull and push."""

from __future__ import annotations

from ..checks import Exercise
from ..experiments.polling import run_polling

# q1: how many requests does polling cost?
Q1_CLIENTS, Q1_INTERVAL, Q1_SECONDS = 40, 0.5, 60


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
