"""Watching the machine from outside the lab's loop: did other programs hold the lab back?

A claim compares a measurement with theory. If the lab's thread was ready to run but the
operating system gave its core to another program, the measurement describes the machine, not
the pattern, and the claim must not be judged. But if the lab's own code was slow (a handler
that blocks, a client that polls late), the claim must be judged and fail. Lateness measured
on the lab's loop cannot tell the two apart: a handler that blocks the loop makes it late too.

So the watch looks from a thread of its own, at what the operating system reports:

* how long the lab's thread waited, runnable, for a core (Linux's per-thread
  ``/proc/<pid>/task/<tid>/schedstat``, second field), sampled every ``PERIOD`` seconds; a
  thread that sleeps or blocks in its own code does not wait there;
* how much CPU the rest of the machine used meanwhile (all of ``/proc/stat`` less this process
  tree's own CPU time), so that waiting behind the lab's own server processes is not blamed on
  others.

A measurement is *held back* when other programs used at least ``OTHERS_CORES`` of a core on
average and the lab's thread waited for a core at least ``HOLD_LIMIT`` seconds at a stretch or
``SHARE_LIMIT`` of the window in all. A measurement that a shorter wait already spoils says so
with a lower ``hold_limit``: a client polling every 50 ms skips a poll when the lab waits longer. Measured on two cores: with one other busy program the lab thread
waited at most 8 ms at a stretch; with a second test worker running a chapter, up to 127 ms at a
stretch and 8 % of a window; with two busy programs, 80 to 460 ms and 15 to 70 %. Where the operating system does not report these (not
Linux), the watch reports nothing and every claim is judged.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

PERIOD = 0.01        # seconds between samples of the lab thread's wait
HOLD_LIMIT = 0.15    # a wait for a core this long at a stretch is more than a claim's stated error allows
SHARE_LIMIT = 0.25   # or this share of the window spent waiting for a core (and at least HOLD_LIMIT in all)
OTHERS_CORES = 0.5   # other programs used at least half a core on average meanwhile


def _thread_wait(pid: int, tid: int) -> float | None:
    """Seconds the thread has waited, runnable, for a core (None where not reported)."""
    try:
        return int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def _machine_busy() -> float | None:
    """CPU seconds every core of the machine has spent busy since boot (None where not reported)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        user, nice, system, idle, iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    except (OSError, ValueError):
        return None
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _tree_cpu() -> float:
    """CPU seconds used by this process and its children, live or ended (an ended child's time moves
    to its parent's ``children_user``/``children_system`` when the parent reaps it)."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:4])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:4])
        except psutil.Error:  # it ended meanwhile
            pass
    return total


@dataclass(frozen=True)
class HeldBack:
    """What other programs did to the lab while one measurement ran."""

    seconds: float          # the window's length
    others_cores: float     # the cores other programs used on average
    longest_wait: float     # the lab thread's longest wait for a core at a stretch (s)
    total_wait: float       # its waits in all (s)
    hold_limit: float = HOLD_LIMIT  # the longest wait at a stretch the measurement tolerates (s)

    @property
    def held_back(self) -> bool:
        waited = (self.longest_wait >= self.hold_limit
                  or self.total_wait >= max(self.hold_limit, SHARE_LIMIT * self.seconds))
        return self.others_cores >= OTHERS_CORES and waited

    def describe(self) -> str:
        return (f"other programs used {self.others_cores:.1f} cores and the lab waited for a core for up to "
                f"{1000 * self.longest_wait:.0f} ms at a stretch ({1000 * self.total_wait:.0f} ms in "
                f"{self.seconds:.1f} s)")


class MachineWatch:
    """Samples the lab thread's waits for a core from a thread of its own, while a measurement runs."""

    def __init__(self, tid: int, period: float = PERIOD, hold_limit: float = HOLD_LIMIT) -> None:
        self.pid, self.tid, self.period, self.hold_limit = os.getpid(), tid, period, hold_limit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._longest = self._run = self._total = 0.0
        self._start = self._busy = self._cpu = 0.0
        self.supported = _thread_wait(self.pid, tid) is not None and _machine_busy() is not None

    def start(self) -> "MachineWatch":
        if self.supported:
            self._start, self._busy, self._cpu = time.monotonic(), _machine_busy(), _tree_cpu()
            self._thread = threading.Thread(target=self._sample, name="machine-watch", daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        last = _thread_wait(self.pid, self.tid)
        while not self._stop.wait(self.period):
            now = _thread_wait(self.pid, self.tid)
            if now is None or last is None:
                return
            waited, last = now - last, now
            self._total += waited
            # waits in consecutive samples make one stretch: a core given away for 30 ms spans three
            self._run = self._run + waited if waited > 0.2 * self.period else 0.0
            self._longest = max(self._longest, self._run, waited)

    def stop(self) -> HeldBack | None:
        """The window's verdict, or None where the machine does not report what the watch needs."""
        if self._thread is None:
            return None
        self._stop.set()
        self._thread.join()
        seconds = max(time.monotonic() - self._start, 1e-6)
        others = (_machine_busy() - self._busy) - (_tree_cpu() - self._cpu)
        return HeldBack(seconds, max(0.0, others) / seconds, self._longest, self._total, self.hold_limit)
