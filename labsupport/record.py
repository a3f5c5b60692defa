"""What a client saw: the updates it received and the requests it made, with times.

Every client in the course writes into a ``Recorder``; experiments turn recorders into
tables. Times are ``time.monotonic()``, the same clock the feed stamps events with.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class Request:
    """One request and its answer: sent and answered times, HTTP status, new events carried."""

    sent: float
    answered: float
    status: int
    new_events: int


@dataclass
class Recorder:
    """One client's log. ``ready`` is set once the client is in place (first answer or stream open)."""

    client: int
    seen: list[tuple[int, float]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    resets: list[tuple[float, str]] = field(default_factory=list)  # (when, why) the server said its numbering began again
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def saw(self, seq: int, at: float | None = None) -> None:
        self.seen.append((seq, time.monotonic() if at is None else at))

    def reset(self, why: str, at: float | None = None) -> None:
        self.resets.append((time.monotonic() if at is None else at, why))

    def request(self, sent: float, status: int, new_events: int, answered: float | None = None) -> None:
        self.requests.append(Request(sent, time.monotonic() if answered is None else answered, status, new_events))
        self.ready.set()
