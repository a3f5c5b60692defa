"""The machine watch tells other programs holding the lab back from the lab's own code being slow."""

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from labsupport.lab import lab
from labsupport.machine import MachineWatch

pytestmark = pytest.mark.skipif(not MachineWatch(threading.get_native_id()).supported,
                                reason="needs Linux's per-thread schedstat")


async def blocking_lab(seconds: float = 1.0, block: float = 0.05) -> int:
    """A lab whose own code blocks its loop ``block`` s at a time (as a handler calling time.sleep would)."""
    blocks = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(block)
        blocks += 1
        await asyncio.sleep(0)
    return blocks


def held(fn):
    watch = lab.machine_watch().start()
    fn()
    return watch.stop()


def test_the_labs_own_blocking_is_not_blamed_on_the_machine():
    verdict = held(lambda: lab.run(blocking_lab(1.0, 0.05)))
    assert verdict is not None and not verdict.held_back, verdict
    assert verdict.longest_wait < 0.02, verdict


def test_the_labs_own_spinning_is_not_blamed_on_the_machine():
    async def spin():
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            pass
    verdict = held(lambda: lab.run(spin()))
    assert not verdict.held_back, verdict


def orphan_spinner() -> int:
    """A busy process outside this process tree, as another program on the machine would be."""
    out = subprocess.run(["sh", "-c", f"{sys.executable} -c 'while True: pass' >/dev/null 2>&1 & echo $!"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_other_programs_on_every_core_hold_the_lab_back():
    async def busy_lab():  # a lab that needs a whole core for a second
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            pass
    spinners = [orphan_spinner() for _ in range(2 * (os.cpu_count() or 1))]
    try:
        time.sleep(0.2)
        verdict = held(lambda: lab.run(busy_lab()))
    finally:
        for pid in spinners:
            os.kill(pid, signal.SIGKILL)
    assert verdict.held_back, verdict
    assert verdict.others_cores >= 0.25 * len(spinners), verdict


def test_a_measurement_spoiled_by_a_shorter_wait_says_so():
    from labsupport.experiments.polling import ROUND_TRIP, run_polling
    from labsupport.machine import HOLD_LIMIT, HeldBack
    assert run_polling.hold_limit(0.01) == 0.01           # a 10 ms poller skips a poll past a 10 ms wait
    assert run_polling.hold_limit(1.0) == ROUND_TRIP      # a worst wait is claimed within a round trip
    waited_80_ms = dict(seconds=2.0, others_cores=1.0, longest_wait=0.08, total_wait=0.1)
    assert HeldBack(**waited_80_ms, hold_limit=0.05).held_back
    assert not HeldBack(**waited_80_ms).held_back
