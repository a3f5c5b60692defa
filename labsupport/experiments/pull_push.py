"""Chapter 1's experiments: periodic pull against push over one held response."""

from __future__ import annotations

from ..lab import on_lab_loop
from ..patterns import polling, push
from ..record import Recorder
from ..results import Result
from .core import Workload, expected_seconds, measure


@on_lab_loop(expected=expected_seconds)
async def run_pull(interval: float = 0.5, *, rate: float = 5.0, clients: int = 1, duration: float = 2.0,
                   latency: float = 0.0, keep_alive: bool = True, conditional: bool = False,
                   arrivals: str = "fixed", value: str = "ticker", seed: int | None = None) -> Result:
    """Clients poll ``/latest`` every ``interval`` seconds (see ``patterns/polling.py``)."""
    if not 0.01 <= interval <= 60:
        raise ValueError(f"interval must be between 0.01 and 60 s, not {interval!r}.")
    workload = Workload(rate, clients, duration, latency, arrivals, value, seed)

    def client(url: str, recorder: Recorder):
        return polling.poll(url, recorder, interval=interval, keep_alive=keep_alive, conditional=conditional)

    return await measure("pull", polling.handlers, client, workload, drain=interval + 2 * latency + 0.05,
                         ready_first=False, interval=interval, keep_alive=keep_alive, conditional=conditional)


@on_lab_loop(expected=expected_seconds)
async def run_push(*, rate: float = 5.0, clients: int = 1, duration: float = 2.0, latency: float = 0.0,
                   arrivals: str = "fixed", value: str = "ticker", seed: int | None = None) -> Result:
    """Clients hold one streaming response each (see ``patterns/push.py``)."""
    workload = Workload(rate, clients, duration, latency, arrivals, value, seed)
    return await measure("push", push.handlers, push.listen, workload, drain=latency + 0.1, ready_first=True)
