"""The message-queue pattern, both sides: producers publish jobs, an email service pulls and acknowledges them.

Three services, password recovery, marketing and registration, need emails sent; one email
service sends them, one at a time. Instead of calling the email service and waiting, each
producer *publishes a job* to the broker (NATS JetStream) and carries on:

* a **stream** (``EMAIL_n``) keeps every job in its file store until it is done. Its *work-queue*
  retention deletes a job once the email service acknowledges it;
* a durable **consumer** (``email-service``) remembers, on the broker, which jobs were handed
  out and which were acknowledged. Workers *pull* one job at a time, send the email, then
  ``ack``. A job handed out but not acknowledged within ``ack_wait`` is delivered again;
* each job carries its id in the ``Nats-Msg-Id`` header. The broker drops a second publish of
  the same id (a producer retrying), and a careful email service keeps its own record of the
  jobs it finished and skips a job it finds there. That record is written *after* the email, so
  a crash in between still sends twice; the mail server closes that window only if it honours
  the job id as an *idempotency key* (``idempotency_key=True``).

Every run keeps a journal on one clock (seconds since the run began): each publish and its
acknowledgement, each delivery, each email sent, and the queue depth sampled from the
consumer's state on the broker.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field

import nats.errors
from nats.js.api import AckPolicy, RetentionPolicy, StorageType

from ..broker import Broker, connect

SERVICES = ("password-recovery", "marketing", "registration")
TEMPLATES = {"password-recovery": "reset-your-password", "marketing": "spring-offer", "registration": "welcome"}
CONSUMER = "email-service"
FETCH_WAIT = 0.25      # how long one pull waits for a job before asking again
DEPTH_EVERY = 0.05     # how often the queue depth is read from the broker
_run_ids = itertools.count(1)


# -- the queue on the broker -----------------------------------------------------------------

@dataclass(frozen=True)
class EmailQueue:
    """One run's stream of email jobs and the durable consumer the email service pulls from."""

    stream: str
    subject: str
    consumer: str = CONSUMER

    def subject_for(self, service: str) -> str:
        return f"{self.subject}.{service}"


async def open_queue(js, *, ack_wait: float) -> EmailQueue:
    """A new run's queue on the broker: its stream and consumer, under names no earlier run used."""
    n = next(_run_ids)
    queue = EmailQueue(f"EMAIL_{n}", f"email{n}")
    await declare_queue(js, queue, ack_wait=ack_wait)
    return queue


async def declare_queue(js, queue: EmailQueue, *, ack_wait: float) -> None:
    """Make sure the stream (jobs kept in files until acknowledged) and its work-queue consumer exist.

    Declaring what already exists with the same settings changes nothing, so a service may do it
    each time it connects.
    """
    await js.add_stream(name=queue.stream, subjects=[f"{queue.subject}.>"], storage=StorageType.FILE,
                        retention=RetentionPolicy.WORK_QUEUE, duplicate_window=60.0)
    await js.add_consumer(queue.stream, durable_name=queue.consumer, ack_policy=AckPolicy.EXPLICIT,
                          ack_wait=ack_wait, max_deliver=-1)


# -- what happened, on one clock -------------------------------------------------------------

@dataclass
class Journal:
    """Everything a run saw, in seconds since ``t0``.

    ``outbox`` is the mail server's log of emails sent; ``done`` is the email service's own
    record of finished jobs (in production a database table with the job id as unique key).
    They are written one after the other, never together: that gap is the crash window.
    """

    t0: float = field(default_factory=time.monotonic)
    published: list[dict] = field(default_factory=list)
    deliveries: list[dict] = field(default_factory=list)
    outbox: list[dict] = field(default_factory=list)
    done: set[str] = field(default_factory=set)
    depth: list[dict] = field(default_factory=list)
    marks: list[tuple[float, str]] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def mark(self, label: str) -> None:
        self.marks.append((self.now(), label))

    def send_email(self, job: str, worker: str, *, key: str | None = None) -> bool:
        """The mail server: send one email. With an idempotency ``key`` it has seen, send nothing."""
        if key is not None and any(email["key"] == key for email in self.outbox):
            return False
        self.outbox.append({"job": job, "worker": worker, "at": self.now(), "key": key})
        return True


# -- producers and consumers ----------------------------------------------------------------

async def publish_job(js, queue: EmailQueue, service: str, job: str, journal: Journal) -> None:
    """Hand one email job to the broker and wait for its acknowledgement (it is in the broker's store then)."""
    body = json.dumps({"job": job, "template": TEMPLATES.get(service, "notice")}).encode()
    sent = journal.now()
    ack = await js.publish(queue.subject_for(service), body, headers={"Nats-Msg-Id": job})
    journal.published.append({"job": job, "service": service, "sent": sent, "acked": journal.now(),
                              "seq": ack.seq, "duplicate": bool(ack.duplicate)})


async def produce(broker: Broker, queue: EmailQueue, service: str, rate: float, count: int,
                  journal: Journal) -> None:
    """One service publishing ``count`` jobs at ``rate`` per second, never waiting for the emails."""
    client = await connect(broker, service)
    try:
        js = client.jetstream()
        due = time.monotonic()
        for i in range(1, count + 1):
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await publish_job(js, queue, service, f"{service}-{i}", journal)
            due += 1.0 / rate
    finally:
        await client.close()


async def email_worker(broker: Broker, queue: EmailQueue, name: str, journal: Journal, stop: asyncio.Event, *,
                       service_time: float, idempotent: bool = True, crash_on: str | None = None,
                       crash_before_record: bool = False, idempotency_key: bool = False) -> None:
    """One instance of the email service: pull a job, send the email, record it, acknowledge; until ``stop``.

    ``idempotent`` looks the job id up in the service's own record of finished jobs first, so a
    job delivered again after its record was written sends no second email. ``crash_on`` makes
    the worker die after sending that job's email, before the acknowledgement (the broker
    delivers the job again after ``ack_wait``): after recording it, or with
    ``crash_before_record`` before. ``idempotency_key`` sends the job id with the email, and
    the mail server sends nothing for a key it has seen.
    """
    client = await connect(broker, name)
    try:
        jobs = await client.jetstream().pull_subscribe_bind(durable=queue.consumer, stream=queue.stream)
        while not stop.is_set():
            try:
                [message] = await jobs.fetch(1, timeout=FETCH_WAIT)
            except nats.errors.TimeoutError:
                continue  # nothing waiting: ask again
            job = json.loads(message.data)["job"]
            delivery = {"job": job, "worker": name, "received": journal.now(),
                        "delivery": message.metadata.num_delivered, "outcome": "sent"}
            journal.deliveries.append(delivery)
            if idempotent and job in journal.done:
                delivery["outcome"] = "in the service's record: skipped"
            else:
                await asyncio.sleep(service_time)  # talking to the mail server
                if not journal.send_email(job, name, key=job if idempotency_key else None):
                    delivery["outcome"] = "mail server knew the key: not sent again"
                if job == crash_on and crash_before_record:
                    delivery["outcome"] += ", then crashed before recording it"
                    journal.mark(f"{name} crashed")
                    return  # the email went out; neither the record nor the ack ever will
                if idempotent:
                    journal.done.add(job)  # the service's own record, written after the email
                if job == crash_on:
                    delivery["outcome"] += ", recorded" * idempotent + ", then crashed before ack"
                    journal.mark(f"{name} crashed")
                    return  # the process is gone: the ack never will
            await message.ack_sync()  # the broker confirms it has the ack: the job is done
            delivery["done"] = journal.now()
    finally:
        await client.close()


class EmailService:
    """The consumer side: ``workers`` instances pulling from the same durable consumer."""

    def __init__(self, broker: Broker | str, queue: EmailQueue, journal: Journal, *, workers: int = 1,
                 service_time: float = 0.02, idempotent: bool = True, idempotency_key: bool = False,
                 prefix: str = "email") -> None:
        self.broker, self.queue, self.journal = broker, queue, journal
        self.workers, self.service_time, self.idempotent, self.prefix = workers, service_time, idempotent, prefix
        self.idempotency_key = idempotency_key
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    def start(self, *, crash_on: str | None = None, crash_before_record: bool = False) -> "EmailService":
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(email_worker(
            self.broker, self.queue, f"{self.prefix}-{i + 1}", self.journal, self._stop,
            service_time=self.service_time, idempotent=self.idempotent, crash_on=crash_on,
            crash_before_record=crash_before_record, idempotency_key=self.idempotency_key))
            for i in range(self.workers)]
        return self

    async def stop(self) -> None:
        """Let each worker finish its current email, then end (a clean shutdown)."""
        self._stop.set()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        errors = [r for r in results if isinstance(r, Exception)]
        if errors:
            raise errors[0]

    async def finished(self) -> None:
        """Wait until every worker has ended by itself (a crash)."""
        await asyncio.gather(*self._tasks)


async def sample_depth(js, queue: EmailQueue, journal: Journal) -> None:
    """Read the consumer's state on the broker every ``DEPTH_EVERY`` s: jobs waiting, jobs in flight."""
    while True:
        try:
            info = await js.consumer_info(queue.stream, queue.consumer)
            journal.depth.append({"t": journal.now(), "waiting": info.num_pending,
                                  "in_flight": info.num_ack_pending})
        except Exception:  # the broker is restarting: no sample this time
            pass
        await asyncio.sleep(DEPTH_EVERY)


async def wait_until_done(js, queue: EmailQueue, journal: Journal, timeout: float) -> None:
    """Wait until the broker holds no job, waiting or in flight (or ``timeout`` passes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            info = await js.consumer_info(queue.stream, queue.consumer)
            if info.num_pending == 0 and info.num_ack_pending == 0:
                return
        except Exception:
            pass
        await asyncio.sleep(0.02)
