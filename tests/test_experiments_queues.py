"""Chapter 6's experiments on the real broker: no job lost, redelivery, durability, and the notebook."""

import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from conftest import scaled

from labsupport.broker import _brokers
from labsupport.exercises import ch06
from labsupport.experiments.queues import (WireCapture, run_email_jobs, run_in_process, run_throughput, run_wire,
                                           run_workers)
from labsupport.experiments.queues_faults import run_broker_restart, run_crash, run_publish_retry
from labsupport.plots import publish_latency, queue_depth

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "06_message_queues.ipynb"


def test_a_slow_consumer_leaves_producers_on_schedule_and_loses_nothing():
    run = run_email_jobs(password=10, marketing=20, registration=10, service_time=0.03, duration=1.0)
    s = run.summary()
    assert s["lost"] == 0 and s["emails_sent"] == s["jobs"] == 40 and s["duplicate_emails"] == 0
    assert s["max_depth"] >= 5  # 40 jobs/s against 33/s: the queue grows
    assert s["all_emailed_s"] > s["producers_s"]
    assert len(run.depth) > 5 and run.depth["depth"].iloc[-1] == 0
    assert set(run.publish_latency_by_depth().columns) >= {"depth", "latency_ms"}
    assert queue_depth(run).data and publish_latency(run.published).data


def test_jobs_wait_while_the_consumer_is_down():
    run = run_email_jobs(password=5, marketing=10, registration=5, service_time=0.01, duration=1.5,
                         consumer_down=(0.3, 0.6))
    s = run.summary()
    assert s["lost"] == 0 and s["emails_sent"] == s["jobs"] == 31 and s["duplicate_emails"] == 0  # 8 + 15 + 8
    labels = [label for _, label in run.marks]
    assert "email service stopped" in labels and "email service started" in labels
    down = run.depth[(run.depth["t"] > 0.35) & (run.depth["t"] < 0.85)]
    assert down["depth"].max() >= 3


@pytest.mark.parametrize("idempotent, duplicates", [(True, 0), (False, 1)])
def test_a_crash_before_ack_is_redelivered_after_the_ack_wait(idempotent, duplicates):
    run = run_crash(jobs=4, crash_on=2, ack_wait=0.5, service_time=0.01, idempotent=idempotent)
    s = run.summary()
    assert s["lost"] == 0 and s["redeliveries"] == 1 and s["duplicate_emails"] == duplicates
    assert 0.5 - 0.05 <= s["redelivery_delay_s"] <= 0.5 + scaled(2.0)
    again = run.deliveries[run.deliveries["delivery"] == 2]
    assert list(again["job"]) == ["registration-2"]


@pytest.mark.parametrize("idempotency_key, duplicates", [(False, 1), (True, 0)])
def test_a_crash_between_the_email_and_the_record_needs_the_mail_servers_key(idempotency_key, duplicates):
    run = run_crash(jobs=3, crash_on=2, ack_wait=0.5, service_time=0.01, idempotent=True,
                    crash_before_record=True, idempotency_key=idempotency_key)
    s = run.summary()
    assert s["lost"] == 0 and s["redeliveries"] == 1 and s["duplicate_emails"] == duplicates


def test_the_broker_drops_a_retried_publish_with_the_same_id():
    s = run_publish_retry(jobs=4, retried=3).summary()
    assert s["publishes"] == 7 and s["stored"] == 4 and s["flagged_duplicate"] == 3
    assert s["emails_sent"] == 4 and s["lost"] == 0


def test_competing_consumers_share_the_work_and_drain_faster():
    one = run_workers(workers=1, jobs=24, service_time=0.02)
    four = run_workers(workers=4, jobs=24, service_time=0.02)
    for run in (one, four):
        assert run.summary()["lost"] == 0 and run.duplicate_emails == 0
    assert four.facts["drain_s"] < 0.75 * one.facts["drain_s"]
    assert four.emails["worker"].nunique() == 4


@pytest.mark.parametrize("hard", [False, True])
def test_stored_jobs_survive_a_broker_restart(hard):
    s = run_broker_restart(jobs=10, after=3, down_for=0.1, hard=hard).summary()
    assert s["stored_before"] == s["stored_after_restart"] == s["recovered"] == 10
    assert s["emails_sent"] == 13 and s["lost"] == 0 and s["old_pid"] != s["new_pid"]
    assert 0 < s["broker_start_s"] < scaled(10)


def test_a_stream_the_broker_lost_in_a_restart_counts_as_nothing_stored(monkeypatch):
    from types import SimpleNamespace

    from nats.js.api import StorageType

    from labsupport.patterns import queue
    monkeypatch.setattr(queue, "StorageType", SimpleNamespace(FILE=StorageType.MEMORY))  # memory is gone on restart
    s = run_broker_restart(jobs=3, after=2, down_for=0.05).summary()
    assert s["stored_before"] == 3 and s["stored_after_restart"] == 0 and s["recovered"] == 0
    assert s["emails_sent"] == 2 and s["lost"] == 3  # the queue declared again takes the later jobs


def test_throughput_run_consumes_everything():
    speed = run_throughput(messages=200, batch=50)
    assert speed["received"] == 200 and speed["left_in_queue"] == 0
    assert speed["publish_per_s"] > 0 and speed["consume_per_s"] > 0


def test_the_wire_shows_publish_pull_and_ack():
    capture = run_wire()
    assert b"HPUB " in capture.producer_up and b"Nats-Msg-Id: registration-1" in capture.producer_up
    assert capture.producer_down.startswith(b"INFO ") and b'"seq":1' in capture.producer_down
    assert b"$JS.API.CONSUMER.MSG.NEXT." in capture.worker_up and b"PUB $JS.ACK." in capture.worker_up
    assert b"HMSG " in capture.worker_down
    assert "…" in WireCapture.readable(capture.producer_down, width=40)


def test_in_process_queue_frees_producers():
    direct, queued = run_in_process(queued=False), run_in_process(queued=True)
    assert queued["busy_ms"].max() < direct["busy_ms"].max()


@pytest.mark.parametrize("call", [
    lambda: run_email_jobs(workers=0),
    lambda: run_email_jobs(password=0, marketing=0, registration=0),
    lambda: run_email_jobs(marketing=-1),
    lambda: run_crash(jobs=3, crash_on=5),
    lambda: run_workers(service_time=5),
    lambda: run_broker_restart(down_for=-1),
])
def test_bad_settings_are_clear_errors(call):
    with pytest.raises(ValueError, match="must|At least"):
        call()


def test_exercises_explain_wrong_ones():
    def sends_every_time(job_id, done, outbox):
        outbox.append(job_id)

    def reads_the_mail_servers_log(job_id, done, outbox):
        if job_id not in outbox:
            outbox.append(job_id)

    assert ch06.q1.is_correct(sends_every_time) is False
    assert ch06.q1.is_correct(reads_the_mail_servers_log) is False
    assert ch06.q1.is_correct("not a function") is False
    assert ch06.q2.is_correct(4) is False and ch06.q2.is_correct(6) is False
    assert ch06.q3.is_correct(30) is False and ch06.q3.is_correct("twenty-five") is False
    assert ch06.q4.is_correct("b") is False and ch06.q4.is_correct("z") is False


def test_the_notebook_is_stored_clean():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


BROKER_CELLS = [  # what chapter 6 does with brokers, in brief: one started by hand, one by an experiment
    "from labsupport.broker import start_broker\n"
    "from labsupport.experiments.queues import run_email_jobs\n"
    "broker = start_broker('by-hand')\n"
    "run = run_email_jobs(password=2, marketing=2, registration=2, service_time=0.01, duration=0.3)\n"
    "assert run.summary()['lost'] == 0",
]


@pytest.mark.parametrize("ending", ["shutdown() as chapter 6 ends", "the kernel just stops"])
def test_a_notebook_that_starts_brokers_leaves_none_running(tmp_path, ending):
    """Headless under nbval, as CI runs the chapters; its brokers live under a private TMPDIR we can inspect.

    Chapter 6 itself runs under nbval with the other notebooks; this is its broker life cycle alone.
    """
    assert "start_broker" in NOTEBOOK.read_text() and "shutdown()" in NOTEBOOK.read_text()
    cells = BROKER_CELLS + (["from labsupport import shutdown\nshutdown()"] if ending.startswith("shutdown") else [])
    notebook = tmp_path / "brokers.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells]), notebook)
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                           "--nbval-lax", "--nbval-current-env", str(notebook)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=scaled(120))
    assert done.returncode == 0, done.stdout[-3000:]
    deadline = time.monotonic() + scaled(10)
    while True:  # the kernel's exit handlers may still be stopping the brokers
        left = [p for p in psutil.process_iter(["name", "cmdline", "status"])
                if p.info["name"] == "nats-server" and p.info["status"] != psutil.STATUS_ZOMBIE
                and str(tmp_path) in " ".join(p.info["cmdline"] or [])]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert left == [], f"nats-server left running after the notebook: {left}"
    assert not list(tmp_path.glob("course-broker-*"))


def test_nothing_of_ours_is_left_running():
    from labsupport import lab

    lab.shutdown()
    assert _brokers.running == {}
    ours = [c for c in psutil.Process().children(recursive=True) if c.name() == "nats-server"
            and c.status() != psutil.STATUS_ZOMBIE]
    assert ours == []
