"""Claims fail loudly; exercises never do, and every model answer passes its own check."""

import importlib
import json
import pkgutil

import pytest

import labsupport.exercises
from labsupport import ClaimFailed, Exercise, show_progress
from labsupport.checks import (PROGRESS, ClaimNotJudged, claim_at_least, claim_at_most, claim_equal,
                               claim_near)
from labsupport.claims import BUSY, latest, write_records


def test_a_true_claim_passes_and_prints_its_measurement(capsys):
    claim_at_least("T0 more", "two is more than one", 2, 1)
    assert "PASS [T0 more] two is more than one (measured 2" in capsys.readouterr().out


def test_a_false_claim_raises_with_the_measurement():
    with pytest.raises(ClaimFailed, match="measured 1"):
        claim_at_least("T0 less", "one is more than two", 1, 2)


def test_a_claim_is_data_with_an_id_theory_and_bounds_on_both_sides(capsys):
    record = claim_near("T1 rate", "the rate is about 20 a second", [19.5, 20.8], [20, 20], rel=0.1, unit="/s")
    assert (record.id, record.outcome, record.low, record.high) == ("T1 rate", "held", [18.0, 18.0], [22.0, 22.0])
    assert "PASS [T1 rate] the rate is about 20 a second (measured 19.5 /s (theory 20; allowed 18 to 22)" in \
        capsys.readouterr().out
    assert latest()["T1 rate"].to_json()["measured"] == [19.5, 20.8]


def test_a_point_outside_its_bounds_fails_and_a_nan_is_never_inside():
    with pytest.raises(ClaimFailed, match=r"\[T2 rate\].*allowed 18 to 22"):
        claim_near("T2 rate", "the rate is about 20 a second", [19.5, 23.0], 20, rel=0.1)
    with pytest.raises(ClaimFailed):
        claim_at_most("T3 late", "it is never late", float("nan"), 10)
    assert latest()["T2 rate"].why == "outside at point(s) 1"


def test_a_claim_after_a_held_back_measurement_is_not_judged_until_it_runs_again(monkeypatch, capsys):
    monkeypatch.setenv("COURSE_NOT_JUDGED", "show")
    BUSY.note("run_demo", "other programs used 2.0 cores")
    try:
        record = claim_equal("T4 lost", "nothing is lost", 5, 0)  # false, but nothing may be concluded
        assert record.outcome == "not judged" and "run_demo" in record.why
        assert "NOT JUDGED [T4 lost]" in capsys.readouterr().out
        monkeypatch.setenv("COURSE_NOT_JUDGED", "fail")
        with pytest.raises(ClaimNotJudged, match="other programs used 2.0 cores"):
            claim_equal("T4 lost", "nothing is lost", 0, 0)
    finally:
        BUSY.clear("run_demo")
    assert claim_equal("T4 lost", "nothing is lost", 0, 0).held


def test_a_settled_count_is_judged_even_after_a_held_back_measurement(monkeypatch, capsys):
    monkeypatch.setenv("COURSE_CLAIMS", "record")
    BUSY.note("run_demo", "other programs used 2.0 cores")
    try:
        assert claim_equal("T6 left", "nothing is left", 0, 0, settled=True).held
        assert claim_equal("T6 left", "nothing is left", 3, 0, settled=True).outcome == "failed"
    finally:
        BUSY.clear("run_demo")


def test_in_record_mode_a_failed_claim_is_shown_and_the_run_goes_on(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("COURSE_CLAIMS", "record")
    record = claim_at_least("T5 many", "most answers are empty", 0.2, 0.5)
    assert record.outcome == "failed" and "FAIL [T5 many]" in capsys.readouterr().out
    saved = json.loads(write_records(tmp_path / "claims.json").read_text())
    assert {"id": "T5 many", "outcome": "failed", "low": 0.5, "high": None}.items() <= saved[-1].items()


def make_exercise():
    return Exercise("double", checker=lambda a: (a == 4, "2 x 2 = 4"), hint="multiply", solution="4", answer=4)


def test_exercise_check_says_right_wrong_or_unanswered_without_raising(capsys):
    q = make_exercise()
    assert q.is_correct(4) is True
    assert q.is_correct(5) is False
    assert q.is_correct(...) is False
    assert q.is_correct("not a number") is False
    for answer in (4, 5, ...):
        assert q.check(answer) is None  # it shows; it never returns a value for the cell to echo
    q.hint()
    q.solution()
    out = capsys.readouterr().out
    assert "correct" in out and "not yet" in out and "not answered yet" in out and "Hint: multiply" in out


def test_an_answer_that_breaks_the_checker_is_reported_not_raised(capsys):
    q = Exercise("float", checker=lambda a: (float(a) > 0, ""), hint="", solution="")
    assert q.is_correct("abc") is False
    q.check("abc")
    assert "could not be checked" in capsys.readouterr().out


def all_exercises():
    for info in pkgutil.iter_modules(labsupport.exercises.__path__):
        module = importlib.import_module(f"labsupport.exercises.{info.name}")
        for name, value in vars(module).items():
            if isinstance(value, Exercise):
                yield pytest.param(value, id=f"{info.name}.{name}")


@pytest.mark.parametrize("exercise", list(all_exercises()))
def test_every_exercise_passes_its_model_answer_and_waits_for_a_blank(exercise, capsys):
    assert exercise.answer is not None, "an exercise needs a model answer the tests can check"
    ok, why = exercise.verdict(exercise.answer)
    assert ok is True, why
    assert exercise.is_correct(...) is False and exercise.is_correct(None) is False
    exercise.hint()
    exercise.solution()
    assert "Hint:" in capsys.readouterr().out


def test_progress_lists_claims_held_and_exercises_answered_in_this_kernel(capsys):
    right, wrong, untouched = make_exercise(), make_exercise(), Exercise(
        "later", checker=lambda a: (True, ""), hint="", solution="", answer=1)
    claim_equal("T0 odd", "three is odd", 3 % 2, 1)
    with pytest.raises(ClaimFailed):
        claim_equal("T0 even", "four is odd", 4 % 2, 1)
    right.check(4)
    wrong.check(5)
    rows = PROGRESS.rows(untouched)
    assert ("claim", "three is odd", "held") in rows and ("claim", "four is odd", "failed") in rows
    assert [state for kind, _, state in rows if kind == "exercise"][-3:] == ["correct", "not yet", "not answered"]
    capsys.readouterr()
    show_progress(untouched)
    out = capsys.readouterr().out
    assert "Your progress in this kernel" in out and "not answered" in out and "later" in out
