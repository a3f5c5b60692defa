"""Chapter 6 exercises: message queues (idempotent consumers, sizing workers, redelivery, dedupe)."""

from __future__ import annotations

import math

from ..checks import Exercise, Measurement
from ..experiments.queues import drain_theory, run_workers
from ..experiments.queues_faults import run_crash, run_publish_retry

# -- q1: make the email service idempotent ---------------------------------------------------

DELIVERIES = ["welcome-1", "reset-7", "welcome-1", "offer-3", "reset-7", "reset-7"]


class MailServer:
    """The mail server as the email service sees it: it can send (``append``), not read the log."""

    def __init__(self) -> None:
        self._sent: list[str] = []

    def append(self, job_id: str) -> None:
        self._sent.append(job_id)


def _model_deliver(job_id: str, done: set, outbox: MailServer) -> None:
    if job_id not in done:  # a redelivery of a finished job: send nothing (but still acknowledge)
        outbox.append(job_id)
        done.add(job_id)


def _check_deliver(deliver) -> tuple[bool, str]:
    if not callable(deliver):
        return False, "the answer should be a function deliver(job_id, done, outbox)."
    done: set = set()
    outbox = MailServer()
    try:
        for job in DELIVERIES:
            deliver(job, done, outbox)
    except TypeError as error:
        return False, (f"that raised TypeError ({error}). The mail server only sends (outbox.append); "
                       "it does not let you read its log. Keep your own record in done.")
    expected = list(dict.fromkeys(DELIVERIES))
    sent = outbox._sent
    if sent == expected and done >= set(expected):
        return True, f"six deliveries, three emails: {sent}. Redelivered jobs sent nothing twice."
    if len(sent) > len(expected):
        return False, f"the mail server sent {sent}: some customers got the same email twice."
    if sent == expected:
        return False, "the right emails went out, but done does not record every finished job."
    return False, f"the mail server sent {sent}, but every job must be sent once: {expected}."


q1 = Exercise(
    "Q1 · an idempotent email service",
    checker=_check_deliver,
    hint="The job id travels with every delivery. Before sending, look it up in your own record, done; "
         "after sending, add it there.",
    solution="def deliver(job_id, done, outbox):\n    if job_id not in done:\n        outbox.append(job_id)\n"
             "        done.add(job_id)\n"
             "In a real service done is a database table with the job id as a unique key. The email and the "
             "record are still two steps: a crash between them sends the email again, unless the mail server "
             "honours the job id as an idempotency key.",
    answer=_model_deliver,
)

# -- q2: size the worker pool ----------------------------------------------------------------

PEAK_RATE, EMAIL_SECONDS = 120, 0.04
Q2_ANSWER = math.ceil(PEAK_RATE * EMAIL_SECONDS - 1e-9)


def _check_workers(n) -> tuple[bool, str]:
    n = int(n)
    capacity = n / EMAIL_SECONDS
    if n == Q2_ANSWER:
        return True, f"{n} workers send {capacity:.0f} emails per second, more than the {PEAK_RATE} that arrive."
    if n < Q2_ANSWER:
        return False, (f"{n} workers send only {capacity:.0f} emails per second; {PEAK_RATE} arrive, so the "
                       "backlog grows for as long as the peak lasts.")
    return False, f"{n} workers keep up, but fewer would too: what is the smallest number?"


q2 = Exercise(
    "Q2 · how many email workers?",
    checker=_check_workers,
    hint="One worker sends 1 / service time emails per second. The workers together must send at least as "
         "many as arrive.",
    solution=f"Each worker sends 1 / {EMAIL_SECONDS} = {1 / EMAIL_SECONDS:.0f} emails per second; {PEAK_RATE} "
             f"arrive, so you need {PEAK_RATE} × {EMAIL_SECONDS} = {PEAK_RATE * EMAIL_SECONDS:.1f}, rounded up: "
             f"{Q2_ANSWER} workers.",
    answer=Q2_ANSWER,
    measure=lambda: _measure_workers(),
)

# Measured with sends 2.5 times longer (0.1 s), so that the fetch and the ack of each job, a ms or two, stay small
# beside the send; 40 jobs divide evenly among 4 or 5 workers, eight rounds or more, so the first fetch and the
# last ack weigh little.
Q2_JOBS, Q2_SLOWER = 40, 2.5


def _measure_workers() -> Measurement:
    """Drain a queue with the model answer's workers, and with one fewer: emails a second each way."""
    service_time = EMAIL_SECONDS * Q2_SLOWER
    workers = (Q2_ANSWER - 1, Q2_ANSWER)
    runs = [run_workers(workers=n, jobs=Q2_JOBS, service_time=service_time).facts for n in workers]
    sent = [Q2_JOBS / run["drain_s"] * Q2_SLOWER for run in runs]  # at the question's send time
    theory = [n / EMAIL_SECONDS for n in workers]
    # a send never takes less than its time; error: each round's fetch and ack, two round trips to the broker
    # (the run's acks measure one), the workers' connecting and the 20 ms check for an empty queue (50 ms for both)
    slowest = [Q2_JOBS / (drain_theory(Q2_JOBS, service_time + 2 * run["ack_round_trip_s"], n) + 0.05) * Q2_SLOWER
               for n, run in zip(workers, runs)]
    return Measurement(
        claim="n workers send n / service time emails a second",
        theory=f"{theory[1]:.0f} emails a second with {workers[1]} workers, {theory[0]:.0f} with {workers[0]}",
        measured=f"{sent[1]:.0f} emails a second with {workers[1]} workers, {sent[0]:.0f} with {workers[0]} "
                 f"(sends of {service_time:g} s, rates x {Q2_SLOWER:g})",
        id="M5 workers' email rate", value=sent, expected=theory, low=slowest, high=theory, unit="emails/s",
        how=f"{Q2_JOBS} jobs drained by real workers on the lab's NATS broker. The fetch and the ack of every job "
            f"cost a little more: at a peak of {PEAK_RATE} a second, leave a margin.",
    )


# -- q3: when does a job come back? --------------------------------------------------------

ACK_WAIT, CRASH_AFTER = 30.0, 5.0
Q3_ANSWER = ACK_WAIT - CRASH_AFTER


def _check_redelivery(seconds) -> tuple[bool, str]:
    seconds = float(seconds)
    if abs(seconds - Q3_ANSWER) <= 1.0:
        return True, (f"the clock started when the job was handed out, so it comes back {ACK_WAIT:.0f} s after "
                      f"that: {Q3_ANSWER:.0f} s after the crash.")
    if abs(seconds - ACK_WAIT) <= 1.0:
        return False, "the ack wait is counted from the delivery, not from the crash."
    return False, "when does the broker start counting the ack wait?"


q3 = Exercise(
    "Q3 · when is the job delivered again?",
    checker=_check_redelivery,
    hint="The broker cannot see a crash. It only knows when it handed the job out, and how long it waits for an ack.",
    solution=f"The broker starts the {ACK_WAIT:.0f} s ack wait when it delivers the job. The worker crashed "
             f"{CRASH_AFTER:.0f} s later, so the job comes back {ACK_WAIT:.0f} - {CRASH_AFTER:.0f} = "
             f"{Q3_ANSWER:.0f} s after the crash (on the next pull after that).",
    answer=Q3_ANSWER,
    measure=lambda: _measure_redelivery(),
)

Q3_SCALE = 50   # measured with every time / 50: an ack wait of 0.6 s, a worker that dies 0.1 s into its job


def _measure_redelivery() -> Measurement:
    """The chapter's crash: the worker sends, dies before its ack, and a restarted one gets the job again."""
    ack_wait, crash_after = ACK_WAIT / Q3_SCALE, CRASH_AFTER / Q3_SCALE
    again = run_crash(jobs=2, crash_on=1, ack_wait=ack_wait, service_time=crash_after).facts["redelivery_delay_s"]
    return Measurement(
        claim="the broker delivers an unacknowledged job again one ack wait after it handed it out, "
              "whenever the worker died",
        theory=f"{Q3_ANSWER:g} s after the crash",
        measured=f"{(again - crash_after) * Q3_SCALE:.1f} s after the crash (delivered again {again:.3f} s after the "
                 f"first delivery, the worker dead {crash_after:g} s in, x {Q3_SCALE})",
        # the broker's timer starts when it hands the job out; error: its check, the waiting pull, and the two
        # deliveries' trips to the worker (a few ms each way)
        id="M4 redelivery at the ack wait", value=again, expected=ack_wait, low=ack_wait - 0.01, high=ack_wait + 0.05,
        unit="s",
        how=f"Real workers on the lab's broker, every time / {Q3_SCALE}: an ack wait of {ack_wait:g} s.",
    )


# -- q4: what does Nats-Msg-Id protect against? --------------------------------------------

Q4_CHOICES = {
    "a": "a producer that publishes the same job again because it never saw the broker's ack",
    "b": "an email worker that crashes after sending the email but before its ack",
    "c": "both",
}


def _check_dedupe(choice) -> tuple[bool, str]:
    choice = str(choice).strip().lower()
    if choice not in Q4_CHOICES:
        return False, "answer with 'a', 'b' or 'c'."
    if choice == "a":
        return True, ("the broker drops a second publish with the same id inside its duplicate window. A "
                      "redelivery to a consumer is the same stored message again: only the consumer can "
                      "notice it has done the job already.")
    return False, ("a redelivery is the same stored message handed out again; the broker does it on purpose. "
                   "Which side can drop it then?")


q4 = Exercise(
    "Q4 · which duplicate does the broker remove?",
    checker=_check_dedupe,
    hint="Dedupe by message id happens when a message is *stored*. Which of the two duplicates is a second store?",
    solution="(a). The broker stores a job once per Nats-Msg-Id within its duplicate window, so a producer may "
             "retry safely. A redelivery after a consumer crash is at-least-once delivery working as designed; "
             "the consumer must be idempotent (Q1).",
    answer="a",
    measure=lambda: _measure_dedupe(),
)


def _measure_dedupe() -> Measurement:
    """Both duplicates on the real broker: a producer's retried publishes, and a crashed worker's job."""
    retried = run_publish_retry(jobs=3, retried=2).facts
    crash = run_crash(jobs=2, crash_on=1, ack_wait=0.2, service_time=0.02, idempotent=False)
    deliveries = int((crash.deliveries["job"] == crash.facts["crashed_job"]).sum())
    return Measurement(
        claim="the broker drops a publish whose Nats-Msg-Id it already stored, but delivers a stored job again "
              "when its worker dies before the ack",
        theory="(a): the retried publishes are dropped, the crashed worker's job comes twice",
        measured=f"{retried['stored']} jobs stored for {retried['publishes']} publishes; the crashed worker's job "
                 f"delivered {deliveries} times",
        id="M4 dedupe is for publishes", value=[retried["stored"], deliveries], expected=[3, 2], low=[3, 2],
        high=[3, 2], unit="stored, deliveries of the crashed job",
        how="The chapter's producer retry and worker crash, on the lab's broker.",
    )


EXERCISES = [q1, q2, q3, q4]

# q5 and q6 change the email service and run it on the real broker.
from .ch06_code import q5, q6  # noqa: E402

EXERCISES += [q5, q6]
