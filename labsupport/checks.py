"""Claims and exercises: how a chapter proves what it says, and how a learner checks an answer.

``claim(statement, holds, measured=...)`` shows a pass line beside the measurement. When
the claim does not hold it raises ``ClaimFailed``, so the cell fails and so does CI.

``Exercise`` follows the learntools shape: ``q.check(answer)`` says right or wrong (never a
traceback), ``q.hint()`` nudges, ``q.solution()`` shows the answer. ``q.is_correct(answer)``
is the same judgement without display, for tests. Where predicting a number first is the
point, ``q.measure()`` then runs the same thing on real servers (scaled down) and shows the
learner's prediction, the theory and the measurement side by side, with a claim that the
theory and the measurement agree.

Every claim checked and every exercise answered is also noted in ``PROGRESS``, so that
``show_progress()`` at the end of a chapter shows a learner (or an instructor looking over a
shoulder) where they stand in this kernel.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Callable


class ClaimFailed(AssertionError):
    """A claim of the course did not hold in this run."""


class Progress:
    """What this kernel has checked so far: each claim's last outcome, each exercise's last verdict."""

    def __init__(self) -> None:
        self.claims: dict[str, bool] = {}
        self.exercises: dict[Exercise, bool | None] = {}

    def rows(self, *exercises: "Exercise") -> list[tuple[str, str, str]]:
        """(kind, name, state) for every claim seen, then every exercise seen or named."""
        rows = [("claim", statement, "holds" if held else "failed") for statement, held in self.claims.items()]
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


def claim(statement: str, holds: bool, *, measured: str = "") -> None:
    """Show that a claim holds, with the measurement behind it; raise ``ClaimFailed`` if not."""
    detail = f" (measured: {measured})" if measured else ""
    PROGRESS.claims[statement] = bool(holds)
    if not holds:
        raise ClaimFailed(
            f"The claim '{statement}' did not hold in this run{detail}. If the machine was very "
            "busy, run the cell again; if it fails again, something in the lab has changed."
        )
    show_note(
        f'<div style="color:#176f2c">&#10004; <b>{html.escape(statement)}</b>'
        f'<span style="color:#555">{html.escape(detail)}</span></div>',
        f"PASS {statement}{detail}",
    )


@dataclass(frozen=True)
class Measurement:
    """An exercise's number measured on real servers, beside what theory predicts for it."""

    claim: str      # what the theory says, as a statement the measurement can refute
    theory: str     # the model answer's value, with its unit
    measured: str   # the same quantity from the run, with its unit (and how it was scaled)
    holds: bool     # theory and measurement agree within a tolerance the theory gives
    how: str = ""   # what was run, in a sentence


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
        claim(m.claim, m.holds, measured=m.measured)


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
    marks = {"holds": "&#10004;", "correct": "&#10004;", "failed": "&#10008;", "not yet": "&#10008;",
             "not answered": "&#9998;"}
    body = "".join(f"<tr><td>{kind}</td><td>{html.escape(name)}</td><td>{marks[state]} {state}</td></tr>"
                   for kind, name, state in rows)
    done = sum(state in ("holds", "correct") for _, _, state in rows)
    show_note(f"<div><b>Your progress in this kernel: {done} of {len(rows)} done</b>"
              f"<table>{body}</table></div>",
              "\n".join([f"Your progress in this kernel: {done} of {len(rows)} done",
                         *(f"  {kind:8} {state:12} {name}" for kind, name, state in rows)]))
