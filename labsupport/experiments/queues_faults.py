"""Chapter 6's faults: the email service crashing before its ack, a producer retrying a publish,
the broker restarting on its store. Each run still counts what was lost and what was sent twice.
"""

from __future__ import annotations

import asyncio
import time

from nats.js.errors import NotFoundError

from ..broker import connect
from ..lab import on_lab_loop
from ..patterns.queue import EmailService, declare_queue, publish_job, wait_until_done
from ..wire import WireMeter
from .core import LOG_BYTES
from .guards import check_range
from .queues import DEPTH_EVERY, MAX_JOBS, QueueRun, QueueStage


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
    check_range("jobs", jobs, 1, 100)
    check_range("crash_on", crash_on, 1, jobs)
    check_range("ack_wait", ack_wait, 0.2, 10.0, " s")
    stage = await QueueStage.open(ack_wait=ack_wait)
    victim = f"registration-{crash_on}"
    meter = await WireMeter(stage.broker.port, log_bytes=LOG_BYTES).start()  # the workers' side, for a ladder
    via_meter = f"nats://127.0.0.1:{meter.port}"
    careful = {"service_time": service_time, "idempotent": idempotent, "idempotency_key": idempotency_key}
    first = EmailService(via_meter, stage.queue, stage.journal, prefix="email-first", **careful)
    second = EmailService(via_meter, stage.queue, stage.journal, prefix="email-restarted", **careful)
    try:
        await stage.publish("registration", [f"registration-{i}" for i in range(1, jobs + 1)])
        try:
            await asyncio.wait_for(first.start(crash_on=victim, crash_before_record=crash_before_record).finished(),
                                   timeout=jobs * service_time + 2)
        except asyncio.TimeoutError:
            raise RuntimeError(f"the email service never crashed: it sent no email for {victim} "
                               f"within {jobs * service_time + 2:g} s") from None
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
    check_range("jobs", jobs, 1, 1000)
    check_range("retried", retried, 0, jobs)
    stage = await QueueStage.open(sample=False)
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


@on_lab_loop(expected=lambda kw: kw.get("down_for", 0.3) + 0.6)
async def run_broker_restart(*, jobs: int = 20, after: int = 5, down_for: float = 0.3, hard: bool = False) -> QueueRun:
    """Jobs wait on the broker; the broker is stopped and started again on the same store.

    The producer's connection stays open across the restart (the client reconnects by itself)
    and publishes ``after`` more jobs; then the email service sends everything. ``hard`` kills
    the broker (SIGKILL) instead of stopping it cleanly.
    """
    check_range("jobs", jobs, 1, MAX_JOBS)
    check_range("after", after, 0, MAX_JOBS)
    check_range("down_for", down_for, 0.0, 10.0, " s")
    stage = await QueueStage.open()
    producer = await connect(stage.broker, "registration")
    service = EmailService(stage.broker, stage.queue, stage.journal, service_time=0.0)
    try:
        js = producer.jetstream()
        for i in range(1, jobs + 1):
            await publish_job(js, stage.queue, "registration", f"registration-{i}", stage.journal)
        stored_before = await _stored(stage)
        old_pid = stage.broker.pid
        stage.journal.mark("broker stopped")
        start_s = await stage.broker.restart(down_for=down_for, hard=hard)
        stage.journal.mark("broker ready")
        reconnect_s = await _wait_connected(producer, timeout=10)
        stored_after = await _stored(stage)
        await declare_queue(stage.js, stage.queue, ack_wait=stage.ack_wait)  # as a service does when it reconnects
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


async def _stored(stage: QueueStage) -> int:
    """Jobs in the run's stream on the broker; none if the broker no longer has the stream at all."""
    try:
        return (await stage.js.stream_info(stage.queue.stream)).state.messages
    except NotFoundError:
        return 0


async def _wait_connected(client, timeout: float) -> float:
    began = time.monotonic()
    while not client.is_connected and time.monotonic() - began < timeout:
        await asyncio.sleep(0.005)
    return time.monotonic() - began
