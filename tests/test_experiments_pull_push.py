"""Experiments and their results: counts that follow from the setup, clear errors for bad settings."""

import pytest

from labsupport import LabError, Workload, sweep
from labsupport.experiments.polling import run_polling
from labsupport.experiments.pull_push import measure_held_connections, run_push


def test_pull_result_counts_follow_from_the_setup():
    result = run_polling(0.1, rate=10, clients=3, duration=1.0, seed=1)
    s = result.summary()
    assert s["events"] == 10
    # counted at the server in the feed's window: 10 polls per client, ±1 at the window's edges
    assert 27 <= result.served_per_s() <= 33
    assert s["connections_opened"] == 3  # keep-alive: one connection per client
    assert s["errors"] == 0
    assert set(result.requests["status"]) == {200}
    assert (result.deliveries["latency"] > 0).all()
    # every byte the meter saw belongs to some connection
    assert result.connections["bytes_up"].sum() == s["bytes_up"]


def test_pull_without_keep_alive_opens_a_connection_per_request():
    s = run_polling(0.1, rate=5, clients=2, duration=0.6, keep_alive=False).summary()
    # each client's last poll may be cut short by the end of the run: its connection opened, no answer came
    assert s["requests"] <= s["connections_opened"] <= s["requests"] + 2


def test_conditional_polls_get_304_for_unchanged_answers():
    result = run_polling(0.05, rate=2, clients=1, duration=1.0, conditional=True)
    statuses = set(result.requests["status"])
    assert statuses == {200, 304}


def test_push_delivers_every_event_once_per_client_with_one_connection_each():
    result = run_push(rate=20, clients=5, duration=1.0)
    s = result.summary()
    assert s["missed"] == 0 and s["delivered"] == 5 * s["events"]
    assert s["requests"] == 5 and s["connections_opened"] == 5 and s["peak_open_connections"] == 5
    assert s["staleness_mean_ms"] == pytest.approx(s["latency_mean_ms"], rel=0.01)


def test_staleness_is_about_half_the_poll_interval():
    s = run_polling(0.2, rate=10, clients=10, duration=1.5, arrivals="poisson", seed=2).summary()
    assert 0.3 * 200 <= s["staleness_mean_ms"] <= 0.7 * 200 + 10


def test_sweep_returns_one_row_per_value():
    table = sweep(run_polling, "interval", [0.1, 0.2], rate=5, duration=0.5)
    assert list(table["interval"]) == [0.1, 0.2]
    assert table["requests_per_s"].iloc[0] > table["requests_per_s"].iloc[1]


def test_a_polling_sweep_counts_the_requests_the_server_received():
    table = sweep(run_polling, "interval", [0.1, 0.25], rate=5, clients=2, duration=0.5)
    assert list(table["interval"]) == [0.1, 0.25]
    counted = table["served_per_s"] * 0.5  # requests in the window: 2 clients x 5, then 2 x 2, ±1 per client
    assert (abs(counted - [10, 4]) <= 2).all(), list(counted)


def test_held_connections_are_counted_by_the_operating_system():
    held = measure_held_connections(counts=(0, 20, 40))
    assert list(held.table()["open_connections"]) == [0, 20, 40]
    assert held.bytes_per_connection > 0


@pytest.mark.parametrize("call, message", [
    (lambda: run_polling(0), "interval"),
    (lambda: run_polling(0.1, clients=0), "clients"),
    (lambda: run_push(duration=-1), "duration"),
    (lambda: run_push(latency=5), "latency"),
    (lambda: run_push(rate=0), "rate"),
    (lambda: measure_held_connections(counts=(10**6,)), "counts"),
])
def test_bad_settings_get_a_clear_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_workload_defaults_run_first_time():
    assert Workload().clients == 1
    assert isinstance(LabError("x"), RuntimeError)
