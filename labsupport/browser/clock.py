"""Aligning the browser's clock with the server's, from round trips (no I/O here).

The browser stamps what it sees with ``performance.now()``; the server stamps events with
``time.monotonic()``. The two clocks tick at the same rate but start at different moments, so
one number, the *offset*, turns a browser time into a server time.

One exchange gives it: the browser notes ``t0``, asks the server the time, gets ``ts`` back and
notes ``t1``. The server read its clock somewhere between ``t0`` and ``t1``, so the offset lies
within ``ts - t1`` and ``ts - t0``. Take the middle, ``ts - (t0 + t1) / 2``, and the error is at
most half the round trip. That bound does not assume the two directions take equal time; it
only uses cause and effect. Several exchanges give several bounds; the shortest round trip
gives the tightest one (the same idea as NTP's clock filter, RFC 5905 section 10).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Alignment:
    """Browser time + ``offset`` = server time, give or take ``uncertainty`` (seconds)."""

    offset: float
    uncertainty: float
    round_trips: int

    def to_server(self, browser_seconds: float) -> float:
        return browser_seconds + self.offset


def align(samples: list[tuple[float, float, float]]) -> Alignment:
    """The alignment from ``(t0, ts, t1)`` exchanges, in seconds: browser send, server, browser receive.

    Keeps the exchange with the shortest round trip. Raises ``ValueError`` for no exchange or one
    whose answer came back before it was sent.
    """
    usable = [(t1 - t0, ts - (t0 + t1) / 2) for t0, ts, t1 in samples]
    if not usable:
        raise ValueError("no clock exchange to align with")
    if any(rtt < 0 for rtt, _ in usable):
        raise ValueError("a clock exchange ended before it began: its times are not from one clock")
    rtt, offset = min(usable)
    return Alignment(offset, rtt / 2, len(usable))
