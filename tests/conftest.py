"""Shared test helpers.

Waits in tests are generous and scaled by one environment factor, COURSE_TIME_FACTOR
(default 1; set it higher on a slow machine), so tests never flake on timing.
"""

import os

import pytest

from labsupport import lab

TIME_FACTOR = float(os.environ.get("COURSE_TIME_FACTOR", "1"))


def scaled(seconds: float) -> float:
    """A wait or bound in seconds, stretched for slow machines."""
    return seconds * TIME_FACTOR


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

LONGEST_FIRST = ("tests/test_jupyterlab.py", "notebooks/0", "tests/test_exercises_code.py", "tests/test_checks.py",
                 "tests/test_experiments_queues.py", "tests/test_scaling.py")


def _rank(nodeid: str) -> int:
    return next((i for i, prefix in enumerate(LONGEST_FIRST) if nodeid.startswith(prefix)), len(LONGEST_FIRST))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    if hasattr(config, "workerinput"):  # an xdist worker; the order is theirs to agree on
        items.sort(key=lambda item: _rank(item.nodeid))  # stable: within a file the order is kept
