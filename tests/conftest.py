"""Shared test helpers.

Waits in tests are generous and scaled by one environment factor, COURSE_TIME_FACTOR
(default 1; set it higher on a slow machine), so tests never flake on timing.
"""

import json
import os
import time
import urllib.request
from pathlib import Path

import pytest

from labsupport import lab

TIME_FACTOR = float(os.environ.get("COURSE_TIME_FACTOR", "1"))

# A claim that was not judged (other programs held the lab back) shows as such and does not fail
# the test run yet: the test command's own two workers still hold each other's lab back at
# times (up to 127 ms at a stretch). COURSE_NOT_JUDGED=fail makes it a failure, as issue 24 asks
# once the lab's pauses are small (issue 28); the notebooks' kernels inherit it.


def scaled(seconds: float) -> float:
    """A wait or bound in seconds, stretched for slow machines."""
    return seconds * TIME_FACTOR


@pytest.fixture(autouse=True)
def judged_afresh():
    """What held the lab back in one test's measurement says nothing about the next test's claims."""
    from labsupport.claims import BUSY

    BUSY.notes.clear()
    yield


@pytest.fixture(autouse=True, scope="module")
def fresh_lab():
    """Each test module starts and ends with nothing running in the lab."""
    lab.shutdown()
    yield lab
    lab.shutdown()


# -- running in parallel ------------------------------------------------------------------------
#
# ``python3 course.py test`` runs the tests on several workers (pytest-xdist, ``--dist loadscope``):
# most of them wait on sockets and timers, not on the CPU. A test file (or a class in it) goes to
# one worker whole, so a notebook's cells run in order in one kernel and a module's fixtures are
# made once. The longest files are handed out first, so no long one starts last and keeps the
# whole run waiting.

LONGEST_FIRST = ("tests/test_mutants.py", "tests/test_jupyterlab.py", "notebooks/0", "tests/test_exercises_code.py", "tests/test_checks.py",
                 "tests/test_experiments_queues.py", "tests/test_scaling.py")


def _rank(nodeid: str) -> int:
    return next((i for i, prefix in enumerate(LONGEST_FIRST) if nodeid.startswith(prefix)), len(LONGEST_FIRST))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    if hasattr(config, "workerinput"):  # an xdist worker; the order is theirs to agree on
        items.sort(key=lambda item: _rank(item.nodeid))  # stable: within a file the order is kept


# -- a Jupyter server for a test ----------------------------------------------------------------

def jupyter_url(process, runtime_dir, token: str, timeout: float) -> str:
    """The address of a Jupyter server started with ``--ServerApp.port=0`` and its own
    ``JUPYTER_RUNTIME_DIR``, once it answers.

    The server asks the OS for a free port itself and writes it to ``jpserver-<pid>.json``. A port
    picked by the test beforehand could be taken by another test's server before JupyterLab bound
    it (CI once met exactly that: a 404 from a stranger, then JupyterLab exiting).
    """
    deadline = time.monotonic() + timeout
    url = None
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the Jupyter server exited with code {process.returncode} before serving")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Jupyter server did not answer within {timeout:.0f} s")
        if url is None:
            for info in Path(runtime_dir).glob("jpserver-*.json"):
                try:
                    url = json.loads(info.read_text())["url"].rstrip("/")
                except (ValueError, KeyError):  # being written
                    pass
        if url is not None:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                    return url
            except OSError:
                pass
        time.sleep(0.3)
