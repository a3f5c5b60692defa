"""A number-typing exercise is followed by its measurement: shown beside the prediction, claimed, able to fail."""

import importlib
import pkgutil

import pytest

import labsupport.exercises
from labsupport import ClaimFailed, Exercise
from labsupport.checks import Measurement


def fake(holds: bool) -> Exercise:
    return Exercise("double", checker=lambda a: (a == 4, "2 x 2 = 4"), hint="", solution="4", answer=4,
                    measure=lambda: Measurement("doubling two gives four", "4", "3.9 (scaled)", id="T0 doubling",
                                                value=3.9 if holds else 3.0, expected=4, low=3.8, high=4.2,
                                                how="two, doubled"))


def test_measure_shows_the_prediction_the_theory_and_the_measurement(capsys):
    q = fake(True)
    q.measure()
    assert "you have not answered yet; theory says 4; measured 3.9 (scaled)" in capsys.readouterr().out
    q.check(5.0)
    q.measure()
    out = capsys.readouterr().out
    assert "you predicted 5; theory says 4" in out and "PASS [T0 doubling] doubling two gives four" in out


def test_a_measurement_that_disagrees_with_the_theory_fails_the_cell():
    with pytest.raises(ClaimFailed, match="doubling two gives four"):
        fake(False).measure()


def test_an_exercise_checked_by_running_code_has_no_measurement():
    q = Exercise("code", checker=lambda a: (True, ""), hint="", solution="")
    assert not q.measurable
    with pytest.raises(TypeError, match="no measurement"):
        q.measurement()


def measured_exercises():
    for info in pkgutil.iter_modules(labsupport.exercises.__path__):
        module = importlib.import_module(f"labsupport.exercises.{info.name}")
        for name, value in vars(module).items():
            if isinstance(value, Exercise) and value.measurable:
                yield pytest.param(value, id=f"{info.name}.{name}")


MEASURED = list(measured_exercises())


def test_the_number_typing_exercises_are_measured():
    ids = {p.id for p in MEASURED}
    assert {"ch01.q1", "ch02.q1", "ch02.q2", "ch02.q3", "ch02.q4", "ch03.q3", "ch03.q4", "ch04.q1", "ch05.q2",
            "ch06.q2", "ch06.q3", "ch06.q4", "ch07.q2", "ch07.q3", "ch08.q2", "ch09.q1"} <= ids


@pytest.mark.parametrize("exercise", MEASURED)
def test_every_measurement_runs_and_agrees_with_its_theory(exercise):
    m = exercise.measurement()
    record = m.judged()
    assert record.outcome != "failed", f"{exercise.name}: {m.claim} was {record.outcome} (measured {m.measured}; theory {m.theory}; {record.why})"
    assert m.theory and m.measured and m.how
