"""What keeps an experiment safe for a learner: a setting out of range is refused with a message
that names it, and what a run started is stopped whatever happens."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator

from ..feed import Feed
from ..lab import cancel_all, lab
from ..wire import WireCounts


def check_range(name: str, value: float, low: float, high: float, unit: str = "") -> None:
    """Refuse a setting outside ``[low, high]`` with a message that names it and its range."""
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}{unit}, not {value!r}.")


@dataclass
class Ending:
    """What a run that wires its own relay keeps from its end: the relay's last counts."""

    counts: WireCounts | None = None


@asynccontextmanager
async def stopping(relay, feed: Feed, tasks: list[asyncio.Task], servers: list[str]) -> AsyncIterator[Ending]:
    """For a run that wires its own clients, relay and servers: on leaving, whatever happens, cancel
    the clients, keep the relay's last counts (``ending.counts``), then stop the relay, the named
    servers and the feed."""
    ending = Ending()
    try:
        yield ending
    finally:
        await cancel_all(tasks)
        ending.counts = relay.counts()
        await relay.stop()
        for name in servers:
            await lab.stop_server(name)
        await feed.stop()
