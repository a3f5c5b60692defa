"""Run a learner's changed code against a real server, with a bounded wait and a plain answer.

Exercises that ask the learner to change a handler or a client check the change the only
honest way: run it under a workload and measure what happened. The learner's code may raise,
hang or never connect; ``try_out`` turns each of these into a sentence instead of a traceback,
and ``measure`` stops every server and client it started, whatever happened.
"""

from __future__ import annotations

from typing import Awaitable, Callable

from ..experiments.core import Workload, measure
from ..feed import Feed
from ..lab import LabError, lab
from ..results import Result

TRY_OUT_TIMEOUT = 30.0


class TryOutFailed(Exception):
    """The learner's code could not be measured; the message says why, in the learner's terms."""


def try_out(handlers: Callable[[Feed], list], client: Callable[[str, object], Awaitable[None]],
            workload: Workload, *, ready_first: bool = True, drain: float = 0.3) -> Result:
    """Measure ``client`` against a server made of ``handlers`` (either may be the learner's)."""
    run = measure("exercise", handlers, client, workload, drain=drain, ready_first=ready_first)
    try:
        return lab.run(run, timeout=TRY_OUT_TIMEOUT, expected_seconds=workload.duration + 0.5,
                       label="trying your code")
    except LabError as error:
        raise TryOutFailed(f"your code was run against a real server and {_explain(error)}") from None


def _explain(error: LabError) -> str:
    text = str(error)
    if "connected within" in text:
        return ("never got going: the client did not open its connection (or did not call "
                "recorder.ready.set()) within the wait. Is something waiting forever before that?")
    if "did not finish within" in text:
        return "did not finish in time: something in it waits forever. Look for a loop that never yields."
    return f"stopped with an error: {text.removeprefix('A client stopped with ')}"
