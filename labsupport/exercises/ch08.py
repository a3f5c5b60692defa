"""Exercises for chapter 8, in production."""

from __future__ import annotations

import os
import time

from ..checks import Exercise, Measurement
from ..experiments.production_idle import run_idle
from ..experiments.production_storms import BIN, run_storms
from ..experiments.production_webhooks import run_webhooks
from ..patterns import webhook

# q1: a heartbeat interval, checked behind a real idle-cutting proxy
Q1_TIMEOUT = 0.5


def _check_heartbeat(answer) -> tuple[bool, str]:
    heartbeat = float(answer)
    if not 0.05 <= heartbeat <= 10:
        return False, "Give the heartbeat interval in seconds, between 0.05 and 10."
    if heartbeat < Q1_TIMEOUT / 4:
        return False, ("That keeps the connection alive, but sends far more heartbeats than needed. "
                       "Each costs bytes and wakes every client: aim just safely under the timeout.")
    run = run_idle(timeout=Q1_TIMEOUT, heartbeat=heartbeat, quiet=1.2)
    dropped = int(run.table()["dropped_by_proxy"].sum())
    if dropped:
        return False, f"The proxy dropped {dropped} connections (measured). The heartbeat must come before the timeout."
    return True, f"No connection dropped in 1.2 quiet seconds (measured), with a heartbeat every {heartbeat:g} s."


q1 = Exercise(
    "Beat the idle timeout",
    checker=_check_heartbeat,
    hint=f"The proxy drops a connection after {Q1_TIMEOUT} s with no byte either way. A heartbeat late by a busy "
         "moment must still arrive in time, so leave a margin.",
    solution="Anything from about a quarter to two thirds of the timeout: 0.25 s here (60 s proxies: every 15-30 s).",
    answer=0.25,
)

# q2: how many reconnects per 10 ms full jitter gives on average
Q2_CLIENTS, Q2_BASE = 2000, 4.0
Q2_PER_BIN = Q2_CLIENTS * 0.010 / Q2_BASE


def _check_per_bin(answer) -> tuple[bool, str]:
    value = float(answer)
    if abs(value - Q2_PER_BIN) <= 0.05 * Q2_PER_BIN:
        return True, (f"{Q2_CLIENTS} clients spread evenly over {Q2_BASE:g} s: {Q2_PER_BIN:g} per 10 ms, against "
                      f"all {Q2_CLIENTS} at once with a fixed delay.")
    if abs(value - Q2_CLIENTS / Q2_BASE) < 1:
        return False, "That is per second. The question asks per 10 ms."
    return False, "The first retry is uniform between 0 and the base delay: how many of the clients fall in each 10 ms?"


q2 = Exercise(
    "Spread the storm",
    checker=_check_per_bin,
    hint="Full jitter draws each client's first delay uniformly between 0 and the base.",
    solution=f"{Q2_CLIENTS} × 0.010 / {Q2_BASE:g} = {Q2_PER_BIN:g} reconnects per 10 ms on average.",
    answer=Q2_PER_BIN,
    measure=lambda: _measure_storm(),
)

# A tenth of the clients over the same base, halved: 1 reconnect per 10 ms on average.
Q2_RUN_CLIENTS, Q2_RUN_BASE = 200, 2.0


def _measure_storm() -> Measurement:
    """Cut real SSE clients at once, first with a fixed retry, then with full jitter: reconnects per 10 ms."""
    storms = run_storms(clients=Q2_RUN_CLIENTS, retry=0.05, base=Q2_RUN_BASE)
    jitter, fixed = storms["jitter"], storms["fixed"]
    theory = Q2_RUN_CLIENTS * BIN / Q2_RUN_BASE
    bins = round(Q2_RUN_BASE / 2 / BIN)
    mean = jitter.per_bin()[:bins].mean()   # over the first half of the base, so a narrower spread shows
    # each client falls in the first half with probability 1/2: a binomial count, 3 standard deviations of it
    error = 3 * (Q2_RUN_CLIENTS / 4) ** 0.5 / bins
    scale = Q2_PER_BIN / theory
    return Measurement(
        claim="full jitter spreads the reconnects evenly over the base delay",
        theory=f"{Q2_PER_BIN:g} per 10 ms",
        measured=f"{mean * scale:.1f} per 10 ms on average, {jitter.per_bin().max() * scale:.0f} in the busiest 10 ms "
                 f"({mean:.2f} and {jitter.per_bin().max()} for {Q2_RUN_CLIENTS} clients over {Q2_RUN_BASE:g} s, "
                 f"x {scale:g}); a fixed retry: {fixed.per_bin().max()} of {Q2_RUN_CLIENTS} in one 10 ms",
        id="R4 exercise spread", value=mean, expected=theory, low=theory - error, high=theory + error,
        unit="per 10 ms",
        how=f"Chapter 8's storm: {Q2_RUN_CLIENTS} real SSE clients cut at once, times and counts scaled down; "
            "the mean is over the first half of the base delay.",
    )


# q3: write the receiver's check, tested on genuine, forged, tampered and replayed deliveries
Q3_SECRET = b"whsec-course-exercise"


def _deliveries() -> list[tuple[str, dict, bytes, bool]]:
    body = b'{"seq": 1, "kind": "order.paid", "amount": 10}'
    now = int(time.time())
    return [
        ("a genuine delivery", webhook.signed_headers(Q3_SECRET, "msg_1", body), body, True),
        ("one signed with another secret", webhook.signed_headers(os.urandom(16), "msg_2", body), body, False),
        ("one whose body was changed", webhook.signed_headers(Q3_SECRET, "msg_3", body), body.replace(b"10", b"99"), False),
        ("one whose id was changed", {**webhook.signed_headers(Q3_SECRET, "msg_4", body), "webhook-id": "msg_5"}, body, False),
        ("one recorded ten minutes ago", webhook.signed_headers(Q3_SECRET, "msg_6", body, timestamp=now - 600), body, False),
    ]


def _check_receiver(answer) -> tuple[bool, str]:
    for label, headers, body, genuine in _deliveries():
        if bool(answer(Q3_SECRET, headers, body)) != genuine:
            return False, f"It {'refused' if genuine else 'accepted'} {label}."
    return True, "It accepts the genuine delivery and refuses the forged, tampered, re-labelled and replayed ones."


q3 = Exercise(
    "Check a webhook",
    checker=_check_receiver,
    hint="Recompute the signature of webhook-id, webhook-timestamp and the body with the secret, compare with "
         "hmac.compare_digest, and refuse a timestamp more than 5 minutes from now.",
    solution="def genuine(secret, headers, body): return webhook.verify(secret, headers, body) is None",
    answer=lambda secret, headers, body: webhook.verify(secret, headers, body) is None,
)


# q4: a receiver that works before it answers, run against the real provider and its retries
Q4_EVENTS, Q4_WORK = 6, 0.8   # each job takes longer than the provider waits (webhook.TIMEOUT)


def _check_fast_answer(receiver) -> tuple[bool, str]:
    if not (isinstance(receiver, type) and issubclass(receiver, webhook.HookHandler)):
        return False, "Pass your handler class itself (MyReceiver), a subclass of webhook.HookHandler."
    try:
        run = run_webhooks(events=Q4_EVENTS, rate=20.0, outage_at=None, work=Q4_WORK, give_up=1.5,
                           receiver=receiver)
    except Exception as error:  # the learner's handler may break the run: say so in a sentence
        return False, f"your receiver was run against the real provider and stopped with {type(error).__name__}: {error}"
    s = run.summary()
    measured = (f"{s['delivered']} of {s['events']} events acknowledged, {s['attempts']} attempts, "
                f"{s['applied']} applied, {s['applied_twice']} applied twice")
    if s["applied_twice"]:
        return False, f"Some events were applied twice ({measured}): apply each webhook-id once."
    if s["delivered"] < s["events"] or s["attempts"] > s["events"]:
        return False, (f"The provider waited {webhook.TIMEOUT} s for each answer while your receiver worked "
                       f"{Q4_WORK} s first, so it counted the attempt failed and sent it again ({measured}). "
                       "Store the delivery and answer 202 before doing the work.")
    if s["applied"] < s["events"]:
        return False, f"Answered fast, but the work was never done for every event ({measured}): store each delivery."
    return True, f"Every event acknowledged on its first attempt and applied once ({measured})."


q4 = Exercise(
    "Answer first, work later",
    checker=_check_fast_answer,
    hint="The provider waits only webhook.TIMEOUT seconds. Store the delivery with self.ledger.accept (a worker "
         "applies what is stored), then answer 202 at once.",
    solution="self.ledger.accept(msg_id, self.request.body)\nself.set_status(202)\nself.finish({'accepted': msg_id})\n"
             "(in place of `await webhook.apply(...)` before the answer). Stored first, on disk: a crash after "
             "the 202 loses nothing.",
    answer=webhook.HookHandler,
)
