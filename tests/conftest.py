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
