"""Every pattern the lab can run by name: one line per pattern module (see ``pattern.py``)."""

from __future__ import annotations

from . import longpolling, polling, push, sse, websocket
from .pattern import Pattern

PATTERNS: dict[str, Pattern] = {p.name: p for p in (
    polling.PATTERN,
    longpolling.PATTERN,
    push.PATTERN,
    sse.PATTERN,
    websocket.PATTERN,
)}


def named(name: str) -> Pattern:
    """The pattern called ``name``, or a ValueError that lists the ones there are."""
    try:
        return PATTERNS[name]
    except KeyError:
        raise ValueError(f"pattern must be one of {tuple(PATTERNS)}, not {name!r}.") from None
