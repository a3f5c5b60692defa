"""Chapter 6's experiments: email jobs through a real message queue (NATS JetStream).

The story is the article's. Three services, password recovery, marketing and registration,
need emails sent; one email service sends them, one at a time. Instead of calling the email
service and waiting, each producer *publishes a job* to the broker and carries on:

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
consumer's state on the broker. "Lost" means a job the broker accepted that no email ever
came of; every experiment reports it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import pandas as pd
import plotly.graph_objects as go
from nats.js.api import AckPolicy, RetentionPolicy, StorageType

from ..broker import Broker, connect, start_broker
from ..lab import on_lab_loop
from ..wire import WireMeter
from .core import LOG_BYTES

SERVICES = ("password-recovery", "marketing", "registration")
TEMPLATES = {"password-recovery": "reset-your-password", "marketing": "spring-offer", "registration": "welcome"}
CONSUMER = "email-service"
FETCH_WAIT = 0.25      # how long one pull waits for a job before asking again
DEPTH_EVERY = 0.05     # how often the queue depth is read from the broker
MAX_RATE, MAX_WORKERS, MAX_JOBS, MAX_DURATION = 200.0, 16, 5000, 10.0
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
    """Create a stream that keeps jobs in files until acknowledged, and its work-queue consumer."""
    n = next(_run_ids)
    queue = EmailQueue(f"EMAIL_{n}", f"email{n}")
    await js.add_stream(name=queue.stream, subjects=[f"{queue.subject}.>"], storage=StorageType.FILE,
                        retention=RetentionPolicy.WORK_QUEUE, duplicate_window=60.0)
    await js.add_consumer(queue.stream, durable_name=queue.consumer, ack_policy=AckPolicy.EXPLICIT,
                          ack_wait=ack_wait, max_deliver=-1)
    return queue


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
            job = message.headers["Nats-Msg-Id"]
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


# -- a run's result --------------------------------------------------------------------------

@dataclass
class QueueRun:
    """One queue experiment: its journal as tables, the facts it measured, and its plots."""

    experiment: str
    settings: dict[str, Any]
    published: pd.DataFrame   # job, service, sent, acked, seq, duplicate, latency_ms
    deliveries: pd.DataFrame  # job, worker, received, delivery, outcome, done
    emails: pd.DataFrame      # job, worker, at
    depth: pd.DataFrame       # t, waiting, in_flight, depth
    marks: list[tuple[float, str]]
    facts: dict[str, Any] = field(default_factory=dict)
    wire: list = field(default_factory=list)  # the wire meter's connections, where a run keeps them (a ladder)

    @classmethod
    def build(cls, experiment: str, settings: dict, journal: Journal, **facts) -> "QueueRun":
        published = pd.DataFrame(journal.published, columns=["job", "service", "sent", "acked", "seq", "duplicate"])
        published["latency_ms"] = (published["acked"] - published["sent"]) * 1000
        deliveries = pd.DataFrame(journal.deliveries,
                                  columns=["job", "worker", "received", "delivery", "outcome", "done"])
        emails = pd.DataFrame(journal.outbox, columns=["job", "worker", "at", "key"])
        depth = pd.DataFrame(journal.depth, columns=["t", "waiting", "in_flight"])
        depth["depth"] = depth["waiting"] + depth["in_flight"]
        return cls(experiment, settings, published, deliveries, emails, depth, list(journal.marks), facts)

    # -- what the claims check ----------------------------------------------------------------

    @property
    def jobs(self) -> list[str]:
        """Every job the broker accepted (a second publish of the same id is not a new job)."""
        return list(dict.fromkeys(self.published["job"]))

    @property
    def lost(self) -> list[str]:
        """Jobs the broker accepted that no email ever came of."""
        sent = set(self.emails["job"])
        return [job for job in self.jobs if job not in sent]

    @property
    def duplicate_emails(self) -> int:
        """Emails beyond the first for the same job (what an idempotent consumer prevents)."""
        return int(len(self.emails) - self.emails["job"].nunique())

    def summary(self) -> dict[str, Any]:
        """The headline numbers, in the units a learner reads (ms, seconds, jobs per second)."""
        lat = self.published["latency_ms"]
        first_sent = self.published["sent"].min() if len(self.published) else 0.0
        last_email = self.emails["at"].max() if len(self.emails) else float("nan")
        return {
            "experiment": self.experiment,
            "jobs": len(self.jobs),
            "emails_sent": len(self.emails),
            "lost": len(self.lost),
            "duplicate_emails": self.duplicate_emails,
            "redeliveries": int((self.deliveries["delivery"] > 1).sum()),
            "publish_p50_ms": float(lat.median()) if len(lat) else float("nan"),
            "publish_p95_ms": float(lat.quantile(0.95)) if len(lat) else float("nan"),
            "producers_s": float(self.published["acked"].max() - first_sent) if len(lat) else float("nan"),
            "all_emailed_s": float(last_email),
            "max_depth": int(self.depth["depth"].max()) if len(self.depth) else 0,
            **{k: v for k, v in self.facts.items() if isinstance(v, (int, float, str))},
        }

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([self.summary()]).round(3)

    def _repr_html_(self) -> str:
        return f"<b>{self.experiment}</b> {self.settings}<br>" + self.table().to_html(index=False)

    # -- plots ----------------------------------------------------------------------------

    def publish_latency_by_depth(self) -> pd.DataFrame:
        """Each publish's latency beside the queue depth the broker reported just before it was sent."""
        pubs = self.published.sort_values("sent")
        depth = self.depth[["t", "depth"]].sort_values("t")
        joined = pd.merge_asof(pubs, depth, left_on="sent", right_on="t", direction="backward")
        return joined[["job", "service", "sent", "depth", "latency_ms"]].fillna({"depth": 0})

    def plot_depth(self, title: str | None = None) -> go.Figure:
        """Jobs on the broker over time (waiting + in flight), with published and emailed so far."""
        fig = go.Figure()
        d = self.depth
        fig.add_trace(go.Scatter(x=d["t"], y=d["waiting"], name="waiting in the queue", stackgroup="q",
                                 mode="lines", line=dict(color="#ff7f0e")))
        fig.add_trace(go.Scatter(x=d["t"], y=d["in_flight"], name="in flight (delivered, not acked)",
                                 stackgroup="q", mode="lines", line=dict(color="#d62728")))
        for column, frame, label, colour in (("acked", self.published, "published so far", "#1f77b4"),
                                             ("at", self.emails, "emails sent so far", "#2ca02c")):
            times = frame[column].sort_values().to_numpy()
            fig.add_trace(go.Scatter(x=times, y=list(range(1, len(times) + 1)), name=label, mode="lines",
                                     line=dict(color=colour, dash="dot", shape="hv")))
        for at, label in self.marks:
            fig.add_vline(x=at, line_dash="dash", line_color="#555", annotation_text=label,
                          annotation_textangle=-90, annotation_position="top left")
        fig.update_layout(title=title or f"{self.experiment}: jobs on the broker over time",
                          xaxis_title="seconds since the run began", yaxis_title="jobs", height=380,
                          margin=dict(l=10, r=10, t=50, b=40))
        return fig

    def plot_publish_latency(self) -> go.Figure:
        """How long each publish waited for the broker's acknowledgement, against when it was sent."""
        fig = go.Figure()
        for service, rows in self.published.groupby("service", sort=False):
            fig.add_trace(go.Scatter(x=rows["sent"], y=rows["latency_ms"], mode="markers", name=service,
                                     marker=dict(size=6)))
        fig.update_layout(title="Publish latency: time until the broker has the job",
                          xaxis_title="seconds since the run began", yaxis_title="ms", height=340,
                          margin=dict(l=10, r=10, t=50, b=40))
        return fig


# -- the experiments ------------------------------------------------------------------------

def _check(name: str, value: float, low: float, high: float, unit: str = "") -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}{unit}, not {value!r}.")


@dataclass
class _Stage:
    """What every broker experiment sets up: the broker, an admin client, the queue, a journal."""

    broker: Broker
    admin: Any
    js: Any
    queue: EmailQueue
    journal: Journal
    sampler: asyncio.Task | None = None

    @classmethod
    async def open(cls, *, ack_wait: float = 1.0, sample: bool = True) -> "_Stage":
        broker = await start_broker.coro()
        admin = await connect(broker, "lab-admin")
        js = admin.jetstream()
        queue = await open_queue(js, ack_wait=ack_wait)
        stage = cls(broker, admin, js, queue, Journal())
        if sample:
            stage.sampler = asyncio.create_task(sample_depth(js, queue, stage.journal))
        return stage

    async def publish(self, service: str, jobs: list[str]) -> None:
        """One producer service connects, hands over ``jobs`` one by one (each acked), and leaves."""
        client = await connect(self.broker, service)
        try:
            for job in jobs:
                await publish_job(client.jetstream(), self.queue, service, job, self.journal)
        finally:
            await client.close()

    async def close(self) -> None:
        if self.sampler is not None:
            self.sampler.cancel()
            await asyncio.gather(self.sampler, return_exceptions=True)
        try:
            await self.js.delete_stream(self.queue.stream)
        finally:
            await self.admin.close()


def _expected_jobs_run(kwargs: dict) -> float:
    rates = [kwargs.get(s, d) for s, d in zip(("password", "marketing", "registration"), (10.0, 30.0, 10.0))]
    duration = kwargs.get("duration", 1.5)
    jobs = sum(rates) * duration
    return max(duration, jobs * kwargs.get("service_time", 0.03) / max(1, kwargs.get("workers", 1))) + 0.3


def _expected_drain(kwargs: dict) -> float:
    return kwargs.get("jobs", 40) * kwargs.get("service_time", 0.02) / max(1, kwargs.get("workers", 1)) + 0.4


@on_lab_loop(expected=_expected_jobs_run)
async def run_email_jobs(*, password: float = 10.0, marketing: float = 30.0, registration: float = 10.0,
                         service_time: float = 0.03, workers: int = 1, duration: float = 1.5,
                         consumer_down: tuple[float, float] | None = None, ack_wait: float = 1.0) -> QueueRun:
    """Three services publish email jobs for ``duration`` s while ``workers`` email workers send them.

    Rates are jobs per second per service; ``service_time`` is the seconds one email takes.
    ``consumer_down=(at, seconds)`` stops the email service cleanly ``at`` seconds in and starts
    it again ``seconds`` later, while the producers carry on.
    """
    rates = dict(zip(SERVICES, (password, marketing, registration)))
    for service, rate in rates.items():
        _check(f"The {service} rate", rate, 0, MAX_RATE, " jobs per second")
    _check("service_time", service_time, 0.0, 1.0, " s")
    _check("workers", workers, 1, MAX_WORKERS)
    _check("duration", duration, 0.1, MAX_DURATION, " s")
    counts = {s: round(r * duration) for s, r in rates.items() if round(r * duration) > 0}
    if not counts:
        raise ValueError("At least one service must publish: raise one of the rates.")
    stage = await _Stage.open(ack_wait=ack_wait)
    service = EmailService(stage.broker, stage.queue, stage.journal, workers=int(workers), service_time=service_time)
    service.start()
    producers = asyncio.ensure_future(asyncio.gather(
        *(produce(stage.broker, stage.queue, s, rates[s], n, stage.journal) for s, n in counts.items())))
    try:
        if consumer_down is not None:
            at, seconds = consumer_down
            await asyncio.sleep(max(0.0, at - stage.journal.now()))
            await service.stop()
            stage.journal.mark("email service stopped")
            await asyncio.sleep(seconds)
            service.start()
            stage.journal.mark("email service started")
        await producers
        stage.journal.mark("producers done")
        backlog = sum(counts.values()) * service_time / workers
        await wait_until_done(stage.js, stage.queue, stage.journal, timeout=backlog + ack_wait + 10)
        await asyncio.sleep(2 * DEPTH_EVERY)  # one last depth sample of the empty queue
    finally:
        producers.cancel()
        await asyncio.gather(producers, return_exceptions=True)
        await service.stop()
        await stage.close()
    settings = {**{f"{s}_rate": r for s, r in rates.items()}, "service_time": service_time,
                "workers": workers, "duration": duration, "consumer_down": consumer_down}
    return QueueRun.build("email jobs", settings, stage.journal,
                          capacity_per_s=workers / service_time if service_time else float("inf"),
                          arrivals_per_s=sum(rates.values()))


@on_lab_loop(expected=lambda kw: kw.get("ack_wait", 1.0) + kw.get("jobs", 6) * kw.get("service_time", 0.05) + 0.4)
async def run_crash(*, jobs: int = 6, crash_on: int = 2, ack_wait: float = 1.0, service_time: float = 0.05,
                    idempotent: bool = True, crash_before_record: bool = False,
                    idempotency_key: bool = False) -> QueueRun:
    """The email service dies mid-job, after sending the email but before the ack; it is restarted.

    The broker delivers the unacknowledged job again once ``ack_wait`` seconds have passed since
    it handed it out. With ``idempotent`` the restarted worker finds the job in the service's
    own record and only acknowledges it; without, the customer gets the email twice. With
    ``crash_before_record`` the worker dies before writing that record, so even an idempotent
    service sends twice, unless the mail server honours the job id (``idempotency_key``).
    """
    _check("jobs", jobs, 1, 100)
    _check("crash_on", crash_on, 1, jobs)
    _check("ack_wait", ack_wait, 0.2, 10.0, " s")
    stage = await _Stage.open(ack_wait=ack_wait)
    victim = f"registration-{crash_on}"
    meter = await WireMeter(stage.broker.port, log_bytes=LOG_BYTES).start()  # the workers' side, for a ladder
    via_meter = f"nats://127.0.0.1:{meter.port}"
    careful = {"service_time": service_time, "idempotent": idempotent, "idempotency_key": idempotency_key}
    first = EmailService(via_meter, stage.queue, stage.journal, prefix="email-first", **careful)
    second = EmailService(via_meter, stage.queue, stage.journal, prefix="email-restarted", **careful)
    try:
        await stage.publish("registration", [f"registration-{i}" for i in range(1, jobs + 1)])
        await asyncio.wait_for(first.start(crash_on=victim, crash_before_record=crash_before_record).finished(),
                               timeout=jobs * service_time + 10)
        second.start()
        stage.journal.mark("email service restarted")
        await wait_until_done(stage.js, stage.queue, stage.journal, timeout=ack_wait + jobs * service_time + 10)
        await asyncio.sleep(2 * DEPTH_EVERY)
    finally:
        await first.stop()
        await second.stop()
        await meter.stop()
        await stage.close()
    run = QueueRun.build("crash before ack", {"jobs": jobs, "crash_on": victim, "ack_wait": ack_wait,
                                              "crash_before_record": crash_before_record, **careful}, stage.journal)
    run.wire = meter.connections
    tries = run.deliveries[run.deliveries["job"] == victim].sort_values("received")
    run.facts["crashed_job"] = victim
    run.facts["redelivery_delay_s"] = (float(tries["received"].iloc[1] - tries["received"].iloc[0])
                                       if len(tries) > 1 else float("nan"))
    return run


@on_lab_loop
async def run_publish_retry(*, jobs: int = 5, retried: int = 2) -> QueueRun:
    """A producer publishes ``jobs`` jobs, then publishes ``retried`` of them again, as a retry after
    a lost acknowledgement would. The broker recognises the ``Nats-Msg-Id`` and stores each job once.
    """
    _check("jobs", jobs, 1, 1000)
    _check("retried", retried, 0, jobs)
    stage = await _Stage.open(sample=False)
    try:
        ids = [f"password-recovery-{i}" for i in range(1, jobs + 1)]
        await stage.publish("password-recovery", ids + ids[:retried])
        stored = (await stage.js.stream_info(stage.queue.stream)).state.messages
        service = EmailService(stage.broker, stage.queue, stage.journal, service_time=0.0).start()
        await wait_until_done(stage.js, stage.queue, stage.journal, timeout=10)
        await service.stop()
    finally:
        await stage.close()
    run = QueueRun.build("publish retried", {"jobs": jobs, "retried": retried}, stage.journal)
    run.facts.update(publishes=jobs + retried, stored=stored,
                     flagged_duplicate=int(run.published["duplicate"].sum()))
    return run


@on_lab_loop(expected=_expected_drain)
async def run_workers(*, workers: int = 1, jobs: int = 40, service_time: float = 0.02) -> QueueRun:
    """Competing consumers: ``jobs`` wait in the queue, then ``workers`` email workers drain it."""
    _check("workers", workers, 1, MAX_WORKERS)
    _check("jobs", jobs, 1, MAX_JOBS)
    _check("service_time", service_time, 0.0, 1.0, " s")
    stage = await _Stage.open()
    service = EmailService(stage.broker, stage.queue, stage.journal, workers=int(workers), service_time=service_time)
    try:
        await stage.publish("marketing", [f"marketing-{i}" for i in range(1, jobs + 1)])
        started = stage.journal.now()
        stage.journal.mark(f"{workers} worker(s) start")
        service.start()
        await wait_until_done(stage.js, stage.queue, stage.journal, timeout=jobs * service_time + 10)
        drained = stage.journal.now() - started
        await asyncio.sleep(2 * DEPTH_EVERY)
    finally:
        await service.stop()
        await stage.close()
    run = QueueRun.build("competing consumers", {"workers": workers, "jobs": jobs, "service_time": service_time},
                         stage.journal)
    per_worker = run.emails.groupby("worker").size()
    run.facts.update(workers=workers, drain_s=drained, theory_drain_s=drain_theory(jobs, service_time, workers),
                     busiest_worker_jobs=int(per_worker.max()), idlest_worker_jobs=int(per_worker.min()))
    return run


@on_lab_loop(expected=lambda kw: kw.get("down_for", 0.3) + 0.6)
async def run_broker_restart(*, jobs: int = 20, after: int = 5, down_for: float = 0.3, hard: bool = False) -> QueueRun:
    """Jobs wait on the broker; the broker is stopped and started again on the same store.

    The producer's connection stays open across the restart (the client reconnects by itself)
    and publishes ``after`` more jobs; then the email service sends everything. ``hard`` kills
    the broker (SIGKILL) instead of stopping it cleanly.
    """
    _check("jobs", jobs, 1, MAX_JOBS)
    _check("after", after, 0, MAX_JOBS)
    _check("down_for", down_for, 0.0, 10.0, " s")
    stage = await _Stage.open()
    producer = await connect(stage.broker, "registration")
    service = EmailService(stage.broker, stage.queue, stage.journal, service_time=0.0)
    try:
        js = producer.jetstream()
        for i in range(1, jobs + 1):
            await publish_job(js, stage.queue, "registration", f"registration-{i}", stage.journal)
        stored_before = (await stage.js.stream_info(stage.queue.stream)).state.messages
        old_pid = stage.broker.pid
        stage.journal.mark("broker stopped")
        start_s = await stage.broker.restart(down_for=down_for, hard=hard)
        stage.journal.mark("broker ready")
        reconnect_s = await _wait_connected(producer, timeout=10)
        stored_after = (await stage.js.stream_info(stage.queue.stream)).state.messages
        for i in range(jobs + 1, jobs + after + 1):
            await publish_job(js, stage.queue, "registration", f"registration-{i}", stage.journal)
        service.start()
        await wait_until_done(stage.js, stage.queue, stage.journal, timeout=10)
        await asyncio.sleep(2 * DEPTH_EVERY)
    finally:
        await service.stop()
        await producer.close()
        await stage.close()
    run = QueueRun.build("broker restart", {"jobs": jobs, "after": after, "down_for": down_for, "hard": hard},
                         stage.journal)
    before = {f"registration-{i}" for i in range(1, jobs + 1)}
    run.facts.update(stored_before=stored_before, stored_after_restart=stored_after,
                     recovered=int(run.emails["job"].isin(before).sum()), broker_start_s=start_s,
                     producer_reconnect_s=reconnect_s, old_pid=old_pid, new_pid=stage.broker.pid)
    return run


async def _wait_connected(client, timeout: float) -> float:
    began = time.monotonic()
    while not client.is_connected and time.monotonic() - began < timeout:
        await asyncio.sleep(0.005)
    return time.monotonic() - began


@on_lab_loop(expected=lambda kw: 0.002 * kw.get("messages", 1000) + 0.3)
async def run_throughput(*, messages: int = 1000, batch: int = 100) -> dict[str, float]:
    """How fast one client publishes with acks (one at a time), and one worker pulls and acks."""
    _check("messages", messages, 1, 100_000)
    stage = await _Stage.open(sample=False)
    try:
        client = await connect(stage.broker, "bench")
        try:
            js = client.jetstream()
            body = b"x" * 100
            began = time.monotonic()
            for i in range(messages):
                await js.publish(stage.queue.subject_for("bench"), body, headers={"Nats-Msg-Id": f"bench-{i}"})
            publish_s = time.monotonic() - began
            pulls = await js.pull_subscribe_bind(durable=stage.queue.consumer, stream=stage.queue.stream)
            received, began = 0, time.monotonic()
            while received < messages:
                for message in await pulls.fetch(min(batch, messages - received), timeout=5):
                    await message.ack()
                    received += 1
            await client.flush()
            await wait_until_done(stage.js, stage.queue, stage.journal, timeout=10)
            consume_s = time.monotonic() - began
            left = (await stage.js.stream_info(stage.queue.stream)).state.messages
        finally:
            await client.close()
    finally:
        await stage.close()
    return {"messages": messages, "publish_per_s": messages / publish_s, "consume_per_s": messages / consume_s,
            "publish_ack_ms": 1000 * publish_s / messages, "left_in_queue": left, "received": received}


@dataclass
class WireCapture:
    """The first bytes a producer and an email worker exchanged with the broker."""

    producer_up: bytes
    producer_down: bytes
    worker_up: bytes
    worker_down: bytes
    job_bytes: int
    wire: list = field(default_factory=list)  # the meter's connections, producer then worker, with their logs

    @staticmethod
    def readable(data: bytes, width: int = 130) -> str:
        """The protocol lines, long JSON cut short for reading."""
        lines = data.decode("latin-1").rstrip("\r\n").split("\r\n")
        return "\n".join(line if len(line) <= width else line[:width] + " …" for line in lines)


@on_lab_loop
async def run_wire() -> WireCapture:
    """One job published and one job pulled and acknowledged, through a wire meter."""
    stage = await _Stage.open(sample=False)
    meter = await WireMeter(stage.broker.port, capture=4096, log_bytes=LOG_BYTES).start()
    try:
        via_meter = f"nats://127.0.0.1:{meter.port}"
        producer = await connect(via_meter, "registration")
        await publish_job(producer.jetstream(), stage.queue, "registration", "registration-1", stage.journal)
        await producer.close()
        worker = await connect(via_meter, "email-1")
        jobs = await worker.jetstream().pull_subscribe_bind(durable=stage.queue.consumer, stream=stage.queue.stream)
        [message] = await jobs.fetch(1, timeout=5)
        await message.ack_sync()
        await worker.close()
        await asyncio.sleep(0.05)
        (p, w) = meter.connections[:2]
        return WireCapture(bytes(p.head_up), bytes(p.head_down), bytes(w.head_up), bytes(w.head_down),
                           len(message.data), [p, w])
    finally:
        await meter.stop()
        await stage.close()


# -- the idea without a broker: asyncio.Queue ---------------------------------------------------

@on_lab_loop
async def run_in_process(*, jobs_per_service: int = 5, service_time: float = 0.02, queued: bool = True) -> pd.DataFrame:
    """The same three producers and one email sender inside one program, without a broker.

    ``queued=False``: each producer calls the email sender and waits until its email is out
    (the sender does one at a time, so producers queue up behind each other, invisibly).
    ``queued=True``: each producer puts the job on an ``asyncio.Queue`` and carries on.
    Returns one row per producer: how long it was busy handing over its jobs.
    """
    _check("jobs_per_service", jobs_per_service, 1, 100)
    sender = asyncio.Lock()  # the email service sends one email at a time
    queue: asyncio.Queue = asyncio.Queue()

    async def send_email(job: str) -> None:
        async with sender:
            await asyncio.sleep(service_time)

    async def consumer() -> None:
        while True:
            job = await queue.get()
            await send_email(job)
            queue.task_done()

    async def producer(service: str) -> dict:
        began = time.monotonic()
        for i in range(jobs_per_service):
            job = f"{service}-{i + 1}"
            if queued:
                queue.put_nowait(job)
            else:
                await send_email(job)
        return {"service": service, "busy_ms": 1000 * (time.monotonic() - began)}

    worker = asyncio.create_task(consumer())
    began = time.monotonic()
    rows = await asyncio.gather(*(producer(s) for s in SERVICES))
    await queue.join()
    all_sent = time.monotonic() - began
    worker.cancel()
    await asyncio.gather(worker, return_exceptions=True)
    table = pd.DataFrame(rows)
    table["mode"] = "asyncio.Queue" if queued else "direct call"
    table["all_emails_sent_ms"] = 1000 * all_sent
    return table


def drain_theory(jobs: int, service_time: float, workers: int) -> float:
    """Seconds to drain ``jobs`` with ``workers`` in parallel: the work divided by the workers."""
    return math.ceil(jobs / workers) * service_time
