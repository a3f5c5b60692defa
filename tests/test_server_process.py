"""A pattern's server in a child process: it serves, reports, measures, and never outlives its parent."""

import asyncio
import subprocess
import sys
import time

import psutil
import pytest

from labsupport import lab
from labsupport.server_process import ServerProcess
from labsupport.patterns import polling, sse
from labsupport.record import Recorder

from conftest import scaled


async def _serve_one_stream(events_wanted: int):
    child = await ServerProcess(sse.PATTERN, rate=50).start()
    try:
        recorder = Recorder(0)
        listener = asyncio.create_task(sse.listen(f"http://127.0.0.1:{child.port}", recorder))
        await asyncio.wait_for(recorder.ready.wait(), scaled(10))
        before = await child.usage()
        started = await child.start_feed(events_wanted / 50)
        await asyncio.sleep(events_wanted / 50 + scaled(0.3))
        after = await child.usage()
        events = await child.events()
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        return child, started, before, after, events, recorder
    finally:
        await child.stop()


def test_child_serves_reports_and_measures():
    child, started, before, after, events, recorder = lab.run(_serve_one_stream(20))
    assert [e.seq for e in events] == list(range(1, len(events) + 1)) and len(events) >= 18
    assert all(started <= e.created <= time.monotonic() for e in events)  # one clock for both processes
    assert {seq for seq, _ in recorder.seen} == {e.seq for e in events}
    assert all(seen >= created for (_, seen), created in zip(sorted(recorder.seen), [e.created for e in events]))
    assert after.cpu_seconds > before.cpu_seconds > 0 and after.rss_bytes > 0
    assert child.process.returncode is not None  # stopped


def test_bad_settings_are_refused_before_starting():
    with pytest.raises(ValueError, match="event rate"):
        ServerProcess(sse.PATTERN, rate=0)


def test_lab_shutdown_stops_the_child():
    child = lab.run(ServerProcess(polling.PATTERN, rate=1).start())
    pid = child.pid
    lab.shutdown()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


KERNEL = """
import sys, time
from labsupport import lab
from labsupport.patterns import websocket
from labsupport.server_process import ServerProcess
child = lab.run(ServerProcess(websocket.PATTERN, rate=1).start())
print(child.pid, flush=True)
time.sleep(60)
"""


def test_a_killed_parent_leaves_no_server_behind():
    parent = subprocess.Popen([sys.executable, "-c", KERNEL], stdout=subprocess.PIPE, text=True)
    try:
        child = psutil.Process(int(parent.stdout.readline()))
        assert child.is_running()
        parent.kill()  # no cleanup can run: only the closed stdin tells the child
        parent.wait()
        child.wait(timeout=scaled(10))
    finally:
        parent.kill()
