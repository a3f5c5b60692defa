"""Chapter 3's experiments and exercises: cursor, restarts, many waiting clients, the crossover."""

import pandas as pd
import pytest

from labsupport.exercises import ch03
from labsupport.experiments.longpolling import (crossover_rate, lost_between_answers, requests_per_event,
                                                run_crossover, run_long_polling, run_side_by_side,
                                                run_long_polling_variants, run_waiting_clients)


def test_nearly_every_answer_carries_news():
    result = run_long_polling(rate=10, clients=3, duration=1, hold=5)
    summary = result.summary()
    assert summary["missed"] == 0 and summary["errors"] == 0
    assert summary["empty_share"] == 0
    assert requests_per_event(result) <= 1.05


def test_the_cursor_prevents_loss_in_the_gaps():
    runs = run_long_polling_variants({"cursor": dict(rate=50, clients=2, duration=1, latency=0.01),
                         "none": dict(rate=50, clients=2, duration=1, latency=0.01, use_cursor=False)})
    assert runs["cursor"].summary()["missed"] == 0
    assert lost_between_answers(runs["cursor"]) == 0
    assert lost_between_answers(runs["none"]) > 0


@pytest.mark.parametrize("restart_at", [0.5, 1.3])  # mid-run, and just before the feed stops
def test_a_restart_costs_errors_but_no_events_with_the_cursor(restart_at):
    result = run_long_polling(rate=20, clients=2, duration=1.5, restart_at=restart_at, down_for=0.3)
    summary = result.summary()
    assert summary["errors"] > 0
    assert summary["missed"] == 0


def test_the_hold_timeout_answers_empty_and_the_client_asks_again():
    result = run_long_polling(rate=1, clients=2, duration=1.5, hold=0.2)
    empty = result.requests[result.requests["empty"]]
    assert len(empty) >= 4
    assert ((empty["answered"] - empty["sent"]) >= 0.15).all()
    assert result.summary()["missed"] == 0


def test_a_client_that_gives_up_before_the_hold_recovers_without_loss():
    result = run_long_polling(rate=2, clients=2, duration=1.5, hold=5, give_up_after=0.3)
    assert result.summary()["errors"] > 0 and result.summary()["missed"] == 0


def test_open_connections_equal_waiting_clients():
    waiting = run_waiting_clients(60, rate=2, duration=1)
    quiet = waiting.between_events()
    assert len(quiet) >= len(waiting.result.events)
    assert (quiet["held_requests"] == 60).all() and (quiet["open_connections"] == 60).all()
    assert len(waiting.result.connections) == 60
    assert {"t", "held_requests", "open_connections"} <= set(waiting.samples.columns)


def test_crossover_table_and_rate():
    cross = run_crossover((2, 20), interval=0.2, batch=0.1, clients=1, duration=1)
    wide = cross.pivot("requests_per_s_per_client")
    assert wide.loc[2, "long polling"] < wide.loc[2, "polling"] < wide.loc[20, "long polling"]
    assert wide.loc[20, "long polling, batched"] < wide.loc[20, "long polling"]
    assert 2 < cross.crossover_rate < 20 and (cross.interval, cross.batch) == (0.2, 0.1)
    assert not any(column.startswith("lab_") for column in cross.table().columns)


def test_crossover_rate_interpolates_and_says_when_there_is_none():
    rows = [(1, "polling", 5), (1, "long polling", 1), (10, "polling", 5), (10, "long polling", 10)]
    table = pd.DataFrame(rows, columns=["rate", "pattern", "requests_per_s_per_client"])
    assert 1 < crossover_rate(table) < 10
    flat = table.assign(requests_per_s_per_client=[5, 1, 5, 2])
    assert pd.isna(crossover_rate(flat))


def test_side_by_side_runs_every_pattern_on_the_same_link():
    results = run_side_by_side(latency=0.02, rate=10, interval=0.2, clients=1, duration=1)
    assert set(results) == {"long polling", "polling", "push"}
    assert results["push"].summary()["latency_p50_ms"] >= 20
    assert results["long polling"].summary()["missed"] == 0


@pytest.mark.parametrize("bad", [{"hold": 0}, {"batch": -1}, {"restart_at": 5, "duration": 1}, {"rate": 0}])
def test_bad_settings_are_clear_errors(bad):
    with pytest.raises(ValueError):
        run_long_polling(**bad)


@pytest.mark.parametrize("name", ["q1", "q2", "q3", "q4"])
def test_wrong_answers_do_not_crash(name):
    assert getattr(ch03, name).is_correct("wrong") is False


def test_exercise_checks_explain_common_mistakes():
    assert ch03.q1.is_correct(lambda cursor, answer: 0) is False  # resets the cursor on an empty answer
    assert ch03.q2.is_correct(lambda failures: 0.1 * 2 ** failures) is False  # no cap, no jitter
    assert ch03.q4.is_correct(45) is False
