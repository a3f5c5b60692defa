"""Claims and exercises: how a chapter proves what it says, and how a learner checks an answer.

A claim reads like its sentence: ``claim_near("P1 requests", "the server receives clients /
interval requests a second", measured, theory, rel=0.1)``. It shows a pass line with the
measurement, the theory and the bounds; when the measurement falls outside them it raises
``ClaimFailed``, so the cell fails and so do the tests. When other programs held the lab back
while it measured, the claim says "not judged" and concludes nothing (``claims.py`` decides and
records; this module shows).

``Exercise`` follows the learntools shape: ``q.check(answer)`` says right or wrong (never a
traceback), ``q.hint()`` nudges, ``q.solution()`` shows the answer. ``q.is_correct(answer)``
is the same judgement without display, for tests. Where predicting a number first is the
point, ``q.measure()`` then runs the same thing on real servers (scaled down) and shows the
learner's prediction, the theory and the measurement side by side, with a claim that the
theory and the measurement agree.

Every claim checked and every exercise answered is also noted in ``PROGRESS``, so that
``show_progress()`` at the end of a chapter shows a learner (or an instructor looking over a
shoulder) where they stand in this kernel.

Two settings, read from the environment, serve the tests: ``COURSE_NOT_JUDGED=fail`` makes a
claim that was not judged raise ``ClaimNotJudged`` (in tests that is a failure), and
``COURSE_CLAIMS=record`` shows a failed claim without raising, so that one run judges every
claim of a chapter (the mutation suite).
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from typing import Any, Callable

from .claims import FAILED, HELD, NOT_JUDGED, ClaimRecord, Values, judge, near


class ClaimFailed(AssertionError):
    """A claim of the course did not hold in this run."""


class ClaimNotJudged(AssertionError):
    """Other programs held the lab back while it measured; in tests, that is a failure."""


class Progress:
    """What this kernel has checked so far: each claim's last outcome, each exercise's last verdict."""

    def __init__(self) -> None:
        self.claims: dict[str, tuple[str, str]] = {}  # id -> (statement, last outcome)
        self.exercises: dict[Exercise, bool | None] = {}

    def rows(self, *exercises: "Exercise") -> list[tuple[str, str, str]]:
        """(kind, name, state) for every claim seen, then every exercise seen or named."""
        rows = [("claim", statement, outcome) for statement, outcome in self.claims.values()]
        states = {True: "correct", False: "not yet", None: "not answered"}
        for exercise in dict.fromkeys([*self.exercises, *exercises]):
            rows.append(("exercise", exercise.name, states[self.exercises.get(exercise)]))
        return rows


PROGRESS = Progress()


def show_note(markdown_html: str, plain: str) -> None:
    """Show ``markdown_html`` in a notebook, or print ``plain`` where there is none (a script, a test)."""
    try:
        from IPython import get_ipython
        from IPython.display import HTML, display
    except ImportError:
        print(plain)
        return
    if get_ipython() is None:
        print(plain)
    else:
        display(HTML(markdown_html))


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.3g}"


def _point(measured: float, theory: float | None, low: float | None, high: float | None, unit: str) -> str:
    """One point as a learner reads it: 19.8 /s (theory 20; allowed 18 to 22)."""
    if low is not None and high is not None:
        allowed = f"exactly {_number(low)}" if low == high else f"{_number(low)} to {_number(high)}"
    else:
        allowed = f"at most {_number(high)}" if high is not None else f"at least {_number(low)}"
    theory_part = f"theory {_number(theory)}; " if theory is not None and not (low == high == theory) else ""
    return f"{_number(measured)}{' ' + unit if unit else ''} ({theory_part}allowed {allowed})"


def _measured(record: ClaimRecord) -> str:
    if isinstance(record.measured, (int, float)):
        return "measured " + _point(record.measured, record.theory, record.low, record.high, record.unit)
    n = len(record.measured)

    def each(values):
        return values if isinstance(values, list) else [values] * n

    points = zip(record.measured, each(record.theory), each(record.low), each(record.high))
    return "measured " + "; ".join(_point(m, t, lo, hi, record.unit) for m, t, lo, hi in points)


def show_claim(record: ClaimRecord, detail: str = "") -> None:
    """Show a claim's outcome; raise when it failed (or, in tests, was not judged)."""
    PROGRESS.claims[record.id] = (record.statement, record.outcome)
    line = "; ".join(part for part in (_measured(record), detail) if part)
    label = f"[{record.id}] {record.statement}"
    if record.outcome == NOT_JUDGED:
        why = (f"not judged: {record.why}. Nothing was concluded; run the measurement again when the machine "
               "is quieter")
        if os.environ.get("COURSE_NOT_JUDGED") == "fail":
            raise ClaimNotJudged(f"The claim {label} was {why}.")
        show_note(f'<div style="color:#8a5a00">&#9208; <b>{html.escape(label)}</b>: {html.escape(why)}.</div>',
                  f"NOT JUDGED {label}: {why}.")
        return
    if record.outcome == FAILED:
        message = (f"The claim {label} did not hold in this run ({line}). Nothing held the lab back while it "
                   "measured, so the lab measured something theory does not predict: a setting or the code changed.")
        if os.environ.get("COURSE_CLAIMS") != "record":
            raise ClaimFailed(message)
        show_note(f'<div style="color:#a11">&#10008; {html.escape(message)}</div>', f"FAIL {label} ({line})")
        return
    shown = f" ({line})" if line else ""
    show_note(f'<div style="color:#176f2c">&#10004; <b>{html.escape(label)}</b>'
              f'<span style="color:#555">{html.escape(shown)}</span></div>', f"PASS {label}{shown}")


def claim_between(id: str, statement: str, measured: Values, low: Values | None, high: Values | None, *,
                  theory: Values | None = None, unit: str = "", detail: str = "") -> ClaimRecord:
    """The measurement lies between ``low`` and ``high`` (None: no bound on that side)."""
    record = judge(id, statement, measured, theory=theory, low=low, high=high, unit=unit)
    show_claim(record, detail)
    return record


def claim_near(id: str, statement: str, measured: Values, theory: Values, *, within: float = 0.0, rel: float = 0.0,
               unit: str = "", detail: str = "") -> ClaimRecord:
    """The measurement lies within ``within`` (or ``rel`` × theory, whichever is larger) of the theory."""
    low, high = near(theory, within=within, rel=rel)
    return claim_between(id, statement, measured, low, high, theory=theory, unit=unit, detail=detail)


def claim_at_most(id: str, statement: str, measured: Values, high: Values, *, theory: Values | None = None,
                  unit: str = "", detail: str = "") -> ClaimRecord:
    return claim_between(id, statement, measured, None, high, theory=theory, unit=unit, detail=detail)


def claim_at_least(id: str, statement: str, measured: Values, low: Values, *, theory: Values | None = None,
                   unit: str = "", detail: str = "") -> ClaimRecord:
    return claim_between(id, statement, measured, low, None, theory=theory, unit=unit, detail=detail)


def claim_equal(id: str, statement: str, measured: Values, expected: Values, *, unit: str = "",
                detail: str = "", settled: bool = False) -> ClaimRecord:
    """A count that theory fixes exactly (no event lost, one connection per client).

    ``settled``: counted once the run was over and everything in it had finished, so no wait for a
    core could change it (messages left on a broker after every acknowledgement): judged even when
    other programs held the lab back while the run measured its speeds."""
    record = judge(id, statement, measured, theory=expected, low=expected, high=expected, unit=unit, settled=settled)
    show_claim(record, detail)
    return record


@dataclass(frozen=True)
class Measurement:
    """An exercise's number measured on real servers, beside what theory predicts for it.

    It is judged as every claim is: ``value`` against ``low``/``high``."""

    claim: str                # what the theory says, as a statement the measurement can refute
    theory: str               # the model answer's value, with its unit
    measured: str             # the same quantity from the run, with its unit (and how it was scaled)
    id: str                   # the claim's id
    value: Values             # the measured number(s)
    expected: Values          # theory's number(s)
    low: Values | None = None   # bounds: theory plus the stated measurement error
    high: Values | None = None
    unit: str = ""
    how: str = ""             # what was run, in a sentence

    def judged(self) -> ClaimRecord:
        return judge(self.id, self.claim, self.value, theory=self.expected, low=self.low, high=self.high,
                     unit=self.unit)


class Exercise:
    """One exercise: a checker that explains, a hint, a solution with its value, and maybe a measurement."""

    def __init__(self, name: str, *, checker: Callable[[Any], tuple[bool, str]], hint: str,
                 solution: str, answer: Any = None, measure: Callable[[], Measurement] | None = None) -> None:
        self.name = name
        self._checker = checker
        self._hint = hint
        self._solution = solution
        self._measure = measure
        self._predicted: Any = None  # the learner's last answer, shown beside the measurement
        self.answer = answer  # the model answer; tests check that it passes

    def verdict(self, answer: Any) -> tuple[bool | None, str]:
        """(right?, why) for ``answer``; None when it is not answered yet. Never raises."""
        if answer is None or answer is Ellipsis:
            return None, "not answered yet. Replace the ... with your answer and run the cell again."
        try:
            return self._checker(answer)
        except Exception as error:  # a learner's answer of the wrong type must not crash the cell
            return False, f"that answer could not be checked ({type(error).__name__}: {error})"

    def is_correct(self, answer: Any) -> bool:
        """True only for a right answer; shows nothing (for tests and other code)."""
        return self.verdict(answer)[0] is True

    def check(self, answer: Any) -> None:
        """Tell the learner whether ``answer`` is right, and why."""
        ok, why = self.verdict(answer)
        PROGRESS.exercises[self] = ok
        self._predicted = None if ok is None else answer
        if ok is None:
            show_note(f"<div>&#9998; <b>{self.name}</b>: {html.escape(why)}</div>", f"{self.name}: {why}")
            return
        mark, colour = ("&#10004; Correct", "#176f2c") if ok else ("&#10008; Not yet", "#a11")
        show_note(f'<div style="color:{colour}"><b>{self.name}</b>: {mark}. {html.escape(why)}</div>',
                  f"{self.name}: {'correct' if ok else 'not yet'}. {why}")

    def hint(self) -> None:
        show_note(f"<div>&#128161; <b>Hint</b>: {html.escape(self._hint)}</div>", f"Hint: {self._hint}")

    def solution(self) -> None:
        show_note(f"<div><b>Solution</b>: {html.escape(self._solution)}</div>", f"Solution: {self._solution}")

    @property
    def measurable(self) -> bool:
        return self._measure is not None

    def measurement(self) -> Measurement:
        """Run the exercise's measurement and return it; shows nothing (for tests and other code)."""
        if self._measure is None:
            raise TypeError(f"'{self.name}' has no measurement: it is checked by running your answer.")
        return self._measure()

    def measure(self) -> None:
        """Measure the number on real servers: your prediction, the theory and the run, side by side."""
        m = self.measurement()
        predicted = ("you have not answered yet" if self._predicted is None
                     else f"you predicted {_plain(self._predicted)}")
        line = f"{predicted}; theory says {m.theory}; measured {m.measured}."
        show_note(f"<div>&#128207; <b>{html.escape(self.name)}</b>: {html.escape(line)}"
                  f"<br><span style=\"color:#555\">{html.escape(m.how)}</span></div>",
                  f"{self.name}: {line}" + (f"\n  ({m.how})" if m.how else ""))
        show_claim(m.judged())


def _plain(answer: Any) -> str:
    """A learner's answer as they would write it: 4800, not 4800.0; (2, 4) for a pair."""
    if isinstance(answer, float):
        return f"{answer:g}"
    if isinstance(answer, tuple):
        return "(" + ", ".join(_plain(a) for a in answer) + ")"
    return str(answer)


def show_progress(*exercises: Exercise) -> None:
    """Show the claims checked and the exercises answered in this kernel; name exercises to list them all."""
    rows = PROGRESS.rows(*exercises)
    if not rows:
        show_note("<div>Nothing checked yet in this kernel: run the chapter's cells first.</div>",
                  "Nothing checked yet in this kernel: run the chapter's cells first.")
        return
    marks = {HELD: "&#10004;", "correct": "&#10004;", FAILED: "&#10008;", "not yet": "&#10008;",
             "not answered": "&#9998;", NOT_JUDGED: "&#9208;"}
    body = "".join(f"<tr><td>{kind}</td><td>{html.escape(name)}</td><td>{marks[state]} {state}</td></tr>"
                   for kind, name, state in rows)
    done = sum(state in (HELD, "correct") for _, _, state in rows)
    show_note(f"<div><b>Your progress in this kernel: {done} of {len(rows)} done</b>"
              f"<table>{body}</table></div>",
              "\n".join([f"Your progress in this kernel: {done} of {len(rows)} done",
                         *(f"  {kind:8} {state:12} {name}" for kind, name, state in rows)]))
