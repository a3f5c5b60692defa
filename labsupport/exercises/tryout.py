"""Run a learner's changed code against a real server, with a bounded wait and a plain answer.

Exercises that ask the learner to change a handler or a client check the change the only
honest way: run it under a workload and measure what happened. The learner's code may raise,
hang or never connect; ``try_out`` turns each of these into a sentence instead of a traceback,
and ``measure`` stops every server and client it started, whatever happened.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from typing import Awaitable, Callable, Iterable

from ..experiments.core import Run, Workload, measure
from ..feed import Feed
from ..lab import LabError, lab
from ..results import Result

TRY_OUT_TIMEOUT = 30.0


class TryOutFailed(Exception):
    """The learner's code could not be measured; the message says why, in the learner's terms."""


def try_out(handlers: Callable[[Feed], list], client: Callable[[str, object], Awaitable[None]],
            workload: Workload, *, ready_first: bool = True, drain: float = 0.3,
            scenario: Callable[[Run], Awaitable[None]] | None = None) -> Result:
    """Measure ``client`` against a server made of ``handlers`` (either may be the learner's).

    ``scenario(run)`` acts on the run while it happens (cut the link, restart the server).
    """
    run = measure("exercise", handlers, client, workload, drain=drain, ready_first=ready_first, scenario=scenario)
    try:
        return lab.run(run, timeout=TRY_OUT_TIMEOUT, expected_seconds=workload.duration + drain + 0.5,
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


def restart_at(seconds: float, down_for: float) -> Callable[[Run], Awaitable[None]]:
    """A scenario: stop the server ``seconds`` into the run and start a fresh one ``down_for`` s later."""
    async def restart(run: Run) -> None:
        await asyncio.sleep(seconds)
        await run.restart_server(down_for)
    return restart


def judge_return(handlers: Callable[[Feed], list], client: Callable[[str, object], Awaitable[None]],
                 workload: Workload, *, restart: tuple[float, float], window: float, drain: float,
                 ready_first: bool, came_back: str, late_advice: str, wave_advice: str) -> tuple[bool, str]:
    """Restart the server mid-run (``restart``: when, down for how long) and judge how the clients came back.

    Right when every client caught up and at most half of them ``came_back`` within one ``window``;
    otherwise the learner reads what was measured and the advice for what went wrong.
    """
    try:
        result = try_out(handlers, client, workload, ready_first=ready_first, drain=drain,
                         scenario=restart_at(*restart))
    except TryOutFailed as failure:
        return False, str(failure)
    bunch, late, clients = returned_together(result, restart[0], window), not_caught_up(result), workload.clients
    measured = f"at most {bunch} of {clients} clients {came_back} within the same {window * 1000:.0f} ms"
    if late:
        return False, f"{late} of {clients} clients had not caught up by the end of the run ({measured}). {late_advice}"
    if bunch > clients / 2:
        return False, f"The clients came back at the same moment, as one wave ({measured}). {wave_advice}"
    return True, f"The clients came back spread out ({measured}), and every one caught up."


def busiest(times: Iterable[float], width: float) -> int:
    """The most of ``times`` (seconds) that fall within any one window ``width`` long: how bunched they came."""
    ordered = sorted(times)
    return max((bisect_right(ordered, t + width) - i for i, t in enumerate(ordered)), default=0)


def returned_together(result: Result, after: float, width: float) -> int:
    """After a restart at ``after`` (s into the run), the most clients whose connections reached the
    server within one window ``width`` long. Refused attempts carry no bytes down and are left out."""
    c = result.connections
    return busiest(c[(c["opened"] > after) & (c["bytes_down"] > 0)]["opened"], width)


def not_caught_up(result: Result) -> int:
    """Clients that never saw the run's last event."""
    newest = result.deliveries.groupby("client")["seq"].max()
    return result.clients - int((newest == result.events["seq"].max()).sum())
