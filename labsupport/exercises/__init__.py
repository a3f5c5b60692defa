"""Each chapter's exercises, one module a chapter (``ch04.q1`` ...); ``answer_key`` is for instructors."""

from __future__ import annotations

import importlib

from ..checks import Exercise, show_note


def exercises_of(chapter: str) -> dict[str, Exercise]:
    """The exercises of a chapter ("04" or 4), by their name in the module (q1, q2, ...)."""
    module = importlib.import_module(f"{__name__}.ch{int(chapter):02d}")
    return {name: value for name, value in vars(module).items() if isinstance(value, Exercise)}


def answer_key(chapter: str) -> None:
    """Show every exercise of a chapter with its hint and model solution (for the presenter's screen)."""
    for name, exercise in exercises_of(chapter).items():
        show_note(f"<div><b>{name} · {exercise.name}</b></div>", f"{name} · {exercise.name}")
        exercise.hint()
        exercise.solution()
