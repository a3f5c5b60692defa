"""Claims as data: what a chapter asserts, what it measured, what theory says, and the outcome.

A claim has a stable id (its topic in ``CLAIMS.md`` and a short name, such as ``"P1 requests"``:
chapters move, ids do not), the measured value, the theory's value, and the bounds the
measurement must fall in: the theory plus a stated measurement error, on both sides wherever
theory gives both. Values may be one number or one per point of a sweep; a sweep's claim holds
when every point is inside its bounds.

An outcome is one of three:

* ``held``: judged, and the measurement is inside the bounds;
* ``failed``: judged, and it is not;
* ``not judged``: other programs held the lab back while it measured (``machine.py`` watches
  that from outside the lab's loop), so nothing was concluded. The lab's own slowness never
  makes a claim "not judged", and never widens a bound: a bug that slows the lab fails. A
  *settled* count (taken once everything in the run had finished, such as messages left on a
  broker after every acknowledgement) is judged all the same: no wait for a core can change it.

This module only decides and records; ``checks`` shows the outcome. Every outcome is kept in
``RECORDS`` and can be written out as JSON (one record format for saved progress, the mutation
suite and the website).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence, Union

Number = Union[int, float]
Values = Union[Number, Sequence[Number]]

HELD, FAILED, NOT_JUDGED = "held", "failed", "not judged"


@dataclass(frozen=True)
class ClaimRecord:
    """One claim's outcome in one run."""

    id: str
    statement: str
    measured: Values
    theory: Values | None
    low: Values | None      # None: no lower bound
    high: Values | None     # None: no upper bound
    unit: str
    outcome: str            # HELD, FAILED or NOT_JUDGED
    why: str = ""           # for FAILED, the points outside; for NOT_JUDGED, what held the lab back

    @property
    def held(self) -> bool:
        return self.outcome == HELD

    def to_json(self) -> dict:
        return asdict(self)


def _points(values: Values | None, n: int) -> list:
    if values is None:
        return [None] * n
    if isinstance(values, (int, float)):
        return [values] * n
    values = list(values)
    if len(values) != n:
        raise ValueError(f"expected {n} values, got {len(values)}")
    return values


def _plain(values: Values | None) -> Values | None:
    """JSON-safe: numpy scalars and arrays become floats and lists."""
    if values is None:
        return None
    if isinstance(values, (int, float)) or getattr(values, "ndim", None) == 0:
        return float(values)
    return [float(v) for v in values]


def outside(measured: Values, low: Values | None, high: Values | None) -> list[int]:
    """Indices of the points outside their bounds (a NaN is outside every bound)."""
    points = [measured] if isinstance(measured, (int, float)) else list(measured)
    lows, highs = _points(low, len(points)), _points(high, len(points))
    bad = []
    for i, (m, lo, hi) in enumerate(zip(points, lows, highs)):
        if m is None or math.isnan(m) or (lo is not None and m < lo) or (hi is not None and m > hi):
            bad.append(i)
    return bad


def near(theory: Values, *, within: Number = 0.0, rel: Number = 0.0) -> tuple[Values, Values]:
    """Bounds ``theory`` ± max(within, rel × |theory|), point by point."""
    if isinstance(theory, (int, float)):
        tolerance = max(within, rel * abs(theory))
        return theory - tolerance, theory + tolerance
    points = list(theory)
    return ([t - max(within, rel * abs(t)) for t in points], [t + max(within, rel * abs(t)) for t in points])


class Busy:
    """What held the lab back in the latest measurement: a measurement taken while other programs
    held the lab back makes the claims after it "not judged", until a measurement runs undisturbed."""

    def __init__(self) -> None:
        self.notes: dict[str, str] = {}   # measurement's name -> what held it back

    def note(self, measurement: str, why: str) -> None:
        self.notes[measurement] = why

    def clear(self, measurement: str) -> None:
        self.notes.pop(measurement, None)

    def reason(self) -> str:
        return "; ".join(f"while {name} measured, {why}" for name, why in self.notes.items())


BUSY = Busy()
RECORDS: list[ClaimRecord] = []


def judge(id: str, statement: str, measured: Values, *, theory: Values | None = None, low: Values | None = None,
          high: Values | None = None, unit: str = "", settled: bool = False) -> ClaimRecord:
    """Decide a claim and record its outcome; ``settled``: a count no wait for a core could change."""
    if low is None and high is None:
        raise ValueError(f"claim {id!r} has no bound: give low, high or both")
    measured, theory, low, high = _plain(measured), _plain(theory), _plain(low), _plain(high)
    held_back = "" if settled else BUSY.reason()
    if held_back:
        outcome, why = NOT_JUDGED, held_back
    else:
        bad = outside(measured, low, high)
        outcome, why = (FAILED, "outside at point(s) " + ", ".join(map(str, bad))) if bad else (HELD, "")
    record = ClaimRecord(id, statement, measured, theory, low, high, unit, outcome, why)
    RECORDS.append(record)
    return record


def latest() -> dict[str, ClaimRecord]:
    """Each claim's last outcome, by id, in the order first seen."""
    return {record.id: record for record in RECORDS}


def write_records(path: str | Path) -> Path:
    """Write every outcome recorded in this kernel as JSON (a list of records)."""
    path = Path(path)
    path.write_text(json.dumps([r.to_json() for r in RECORDS], indent=1))
    return path
