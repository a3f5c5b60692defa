"""Chapter 6's change-the-code exercises: the email service, changed by the learner, on the real broker.

The lab's NATS JetStream broker holds a few email jobs; copies of the learner's worker pull
them from one durable consumer and call a ``send_email`` that takes a while (and, for some
jobs, crashes the worker the first time). The check counts the emails each job produced.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import time
from collections import Counter

import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy

from ..broker import connect, start_broker
from ..checks import Exercise
from ..lab import LabError, cancel_all, lab
from .tryout import TRY_OUT_TIMEOUT

_run_ids = itertools.count(1)

class WorkerCrashed(Exception):
    """The worker's process died while it talked to the mail server: nothing after this line runs."""


async def _run_mail_service(worker, config: ConsumerConfig, *, jobs: int, workers: int, service_time: float,
                            crash_first: tuple[int, ...] = (), deadline: float = 10.0) -> dict[str, int]:
    """Queue ``jobs`` email jobs on the lab's broker and let ``workers`` copies of ``worker`` send them.

    Every copy pulls one job at a time from one durable consumer made with ``config`` and calls
    ``worker(message, send_email)``. ``send_email`` takes ``service_time`` seconds; for the jobs
    numbered in ``crash_first`` its first call crashes the worker instead (a fresh worker takes
    its place, as a supervisor would restart it). Ends when every job has left the stream and no
    worker is busy, or after ``deadline`` seconds (a bound for a worker that hangs, generous for a
    busy machine). Returns how many emails went out per job.
    """
    broker = await start_broker.coro()
    client = await connect(broker, "mail-exercise")
    n = next(_run_ids)
    stream, subject = f"MAIL_EXERCISE_{n}", f"mail-exercise-{n}"
    js = client.jetstream()
    sent: Counter = Counter()
    crashes = set(f"job-{i}" for i in crash_first)
    busy = [0]

    async def send_email(message) -> None:
        job = message.headers["Nats-Msg-Id"]
        if job in crashes:
            crashes.discard(job)
            raise WorkerCrashed(f"the worker died while sending {job}")
        await asyncio.sleep(service_time)
        sent[job] += 1

    async def one_worker() -> None:
        pulls = await js.pull_subscribe_bind(durable=config.durable_name, stream=stream)
        while True:
            try:
                [message] = await pulls.fetch(1, timeout=0.1)
            except nats.errors.TimeoutError:
                continue
            busy[0] += 1
            try:
                await worker(message, send_email)
            except WorkerCrashed:
                pass  # this worker is gone; the loop stands for the fresh one that replaces it
            finally:
                busy[0] -= 1

    tasks = []
    try:
        await js.add_stream(name=stream, subjects=[f"{subject}.>"], retention=RetentionPolicy.WORK_QUEUE)
        await js.add_consumer(stream, config=config)
        for i in range(1, jobs + 1):
            await js.publish(f"{subject}.email", b'{"template": "welcome"}', headers={"Nats-Msg-Id": f"job-{i}"})
        tasks = [asyncio.create_task(one_worker()) for _ in range(workers)]
        ends = time.monotonic() + deadline
        while time.monotonic() < ends:
            await asyncio.sleep(0.05)
            for task in tasks:
                if task.done():
                    task.result()  # the learner's worker raised: say so
            if not busy[0] and (await js.stream_info(stream)).state.messages == 0:
                break
        else:
            if busy[0]:
                raise LabError(f"a worker was still busy after {deadline:g} s: does it wait for something forever?")
    finally:
        await cancel_all(tasks)
        with contextlib.suppress(Exception):
            await js.delete_stream(stream)
        await client.close()
    return {f"job-{i}": sent[f"job-{i}"] for i in range(1, jobs + 1)}


def _mail(worker, config: ConsumerConfig, **settings) -> tuple[dict | None, str]:
    try:
        return lab.run(_run_mail_service(worker, config, **settings), timeout=TRY_OUT_TIMEOUT,
                       expected_seconds=2.0, label="trying your email service"), ""
    except LabError as error:  # a stuck run's error notes where the lab waited: pass that on
        return None, "\n".join([f"your email service was run on the real broker and {error}",
                                 *getattr(error, "__notes__", [])])
    except Exception as error:
        return None, (f"your email service was run on the real broker and stopped with an error: "
                      f"{type(error).__name__}: {error}")


async def _send_then_ack(message, send_email) -> None:
    await send_email(message)   # the email has gone...
    await message.ack()         # ...so now the job is done


Q5_SERVICE_TIME, Q5_JOBS, Q5_WORKERS = 0.5, 2, 3
Q5_CONFIG = ConsumerConfig(durable_name="mailer", ack_policy=AckPolicy.EXPLICIT, ack_wait=5.0, max_deliver=-1)


def _check_ack_wait(config) -> tuple[bool, str]:
    if not isinstance(config, ConsumerConfig) or not config.durable_name or config.ack_wait is None:
        return False, "Pass your ConsumerConfig, with a durable_name and an ack_wait (in seconds)."
    if not 0 < config.ack_wait <= 600:
        return False, f"ack_wait is in seconds in nats-py: {config.ack_wait!r} is not a sensible wait."
    emails, why = _mail(_send_then_ack, config, jobs=Q5_JOBS, workers=Q5_WORKERS, service_time=Q5_SERVICE_TIME)
    if emails is None:
        return False, why
    twice = sum(n > 1 for n in emails.values())
    measured = f"{sum(emails.values())} emails for {Q5_JOBS} jobs, each taking {Q5_SERVICE_TIME} s to send"
    if min(emails.values()) == 0:
        return False, f"Some jobs were never sent ({measured}). Keep ack_policy EXPLICIT and max_deliver -1."
    if twice:
        return False, (f"{twice} of {Q5_JOBS} customers got the same email more than once ({measured}). The broker "
                       f"waited only {config.ack_wait} s for an ack, gave up while the worker was still sending, and "
                       "handed the job to an idle worker. Make ack_wait longer than the longest send.")
    if config.ack_wait > 20 * Q5_SERVICE_TIME:
        return False, (f"No duplicates ({measured}), but if a worker crashed its job would wait {config.ack_wait:g} s "
                       "before anyone sent it. A few times the send time is enough.")
    return True, f"One email per job ({measured}, ack_wait {config.ack_wait:g} s)."


q5 = Exercise(
    "Q5 · an ack wait that fits the work",
    checker=_check_ack_wait,
    hint="The broker starts the ack wait when it hands a job out. What happens when the wait runs out while the "
         "worker is still talking to the mail server, and another worker is idle?",
    solution="ConsumerConfig(durable_name='mailer', ack_policy=AckPolicy.EXPLICIT, ack_wait=5.0, max_deliver=-1): "
             f"longer than a send ({Q5_SERVICE_TIME} s) with a margin, short enough that a crashed worker's job "
             "comes back soon. For jobs of unknown length, call `await message.in_progress()` to restart the wait.",
    answer=Q5_CONFIG,
)

Q6_JOBS, Q6_CRASH_FIRST = 4, (2, 3)
Q6_CONFIG = ConsumerConfig(durable_name="mailer", ack_policy=AckPolicy.EXPLICIT, ack_wait=0.3, max_deliver=-1)


def _check_ack_after(worker) -> tuple[bool, str]:
    if not inspect.iscoroutinefunction(worker):
        return False, "Pass your worker, an `async def` function of (message, send_email)."
    emails, why = _mail(worker, Q6_CONFIG, jobs=Q6_JOBS, workers=1, service_time=0.05,
                        crash_first=Q6_CRASH_FIRST)
    if emails is None:
        return False, why
    lost = [job for job, n in emails.items() if n == 0]
    measured = f"{sum(emails.values())} emails for {Q6_JOBS} jobs, the worker crashed {len(Q6_CRASH_FIRST)} times"
    if lost:
        return False, (f"Your worker acknowledged before sending: {len(lost)} emails were lost when it crashed "
                       f"({', '.join(lost)}; {measured}). An ack tells the broker to forget the job, so ack only "
                       "once the email has gone.")
    if max(emails.values()) > 1:
        return False, f"Nothing lost, but some customers got an email twice ({measured}): send each job once."
    return True, (f"Nothing lost ({measured}): the jobs whose worker crashed came back after the ack wait "
                  f"({Q6_CONFIG.ack_wait} s) and were sent.")


q6 = Exercise(
    "Q6 · acknowledge when the work is done",
    checker=_check_ack_after,
    hint="An ack means 'done, delete it'. If the worker dies after the ack but before the email, who will still "
         "send it?",
    solution="async def my_worker(message, send_email):\n    await send_email(message)\n    await message.ack()",
    answer=_send_then_ack,
)
