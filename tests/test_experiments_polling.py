"""Chapter 2's experiments and exercises: polling latency, bytes per poll, connections, 304s."""

import pytest

from labsupport.exercises import ch02
import json

from labsupport.experiments.polling import (ROUND_TRIP, exchange_sizes, exchanges, mean_wait_bounds, poll_costs, poll_heads,
                                            run_polling, run_polling_variants, worst_wait_bounds)


def test_sparse_updates_wait_about_half_an_interval_and_at_most_about_one():
    interval = 0.2
    result = run_polling(interval, rate=2, clients=10, duration=1.5, arrivals="poisson", seed=3)
    summary = result.summary()
    assert summary["missed"] <= 0.1 * summary["events"] * 10  # rate well below 1/interval: nearly all seen
    assert 0.25 * interval * 1000 <= summary["latency_mean_ms"] <= 0.75 * interval * 1000 + 50
    assert summary["latency_max_ms"] >= 0.5 * interval * 1000


def test_captured_exchanges_split_into_headers_and_payload():
    result = run_polling(0.1, rate=5, clients=1, duration=0.5, conditional=True)
    pairs = exchanges(result)
    assert len(pairs) >= 3
    assert all(request.startswith(b"GET /latest ") for request, _ in pairs)
    assert {answer[:12] for _, answer in pairs} <= {b"HTTP/1.1 200", b"HTTP/1.1 304"}
    sizes = exchange_sizes(*pairs[0])
    assert sizes["request_headers"] > 50 and sizes["response_headers"] > 100
    assert 10 < sizes["payload"] < 100
    assert sizes["overhead_ratio"] == pytest.approx(
        (sizes["request_headers"] + sizes["response_headers"]) / sizes["payload"])


def test_the_counted_heads_match_the_captured_bytes():
    request, answer = exchanges(run_polling(0.1, rate=5, clients=1, duration=0.3))[-1]
    sizes = exchange_sizes(request, answer)
    payload = len(json.dumps(json.loads(answer[-sizes["payload"]:])))
    assert poll_heads(payload) == (sizes["request_headers"], sizes["response_headers"])


def test_wait_bounds_hold_the_theory_and_narrow_with_more_waits():
    low, high = mean_wait_bounds(0.1, 60)
    assert low < 0.05 < high and mean_wait_bounds(0.1, 600)[1] - mean_wait_bounds(0.1, 600)[0] < high - low
    low, high = worst_wait_bounds(0.1, 60)
    assert 0.085 < low < 0.1 < high <= 0.1 + ROUND_TRIP


@pytest.mark.parametrize("options, one_per_poll", [
    ({}, False), ({"keep_alive": False}, True), ({"idle_timeout": 0.02}, True)])
def test_connections_per_poll(options, one_per_poll):
    result = run_polling(0.08, rate=5, clients=2, duration=0.8, **options)
    costs = poll_costs(result)
    if one_per_poll:  # a poll under way when the run stops has its connection but no answer yet
        assert costs["polls"] <= costs["connections_opened"] <= costs["polls"] + 2
    else:
        assert costs["connections_opened"] == 2
    assert costs["time_per_poll_ms"] > 0


def test_conditional_polls_are_mostly_304_and_smaller():
    plain = poll_costs(run_polling(0.05, rate=2, clients=2, duration=1))
    conditional = poll_costs(run_polling(0.05, rate=2, clients=2, duration=1, conditional=True))
    assert plain["not_modified_share"] == 0
    assert conditional["not_modified_share"] > 0.5
    assert conditional["bytes_down_per_poll"] < plain["bytes_down_per_poll"]


@pytest.mark.parametrize("bad", [{"interval": 0}, {"interval": 0.1, "idle_timeout": 0},
                                 {"interval": 0.1, "clients": 0}])
def test_bad_settings_are_clear_errors(bad):
    with pytest.raises(ValueError):
        run_polling(**bad)


@pytest.mark.parametrize("name", ["q1", "q2", "q3", "q4"])
def test_wrong_answers_do_not_crash(name):
    assert getattr(ch02, name).is_correct("not a number") is False


def test_variants_run_side_by_side_with_their_own_settings():
    runs = run_polling_variants({"often": dict(interval=0.05, rate=5, duration=0.6),
                                 "rarely": dict(interval=0.3, rate=5, duration=0.6)})
    assert set(runs) == {"often", "rarely"}
    assert runs["often"].summary()["requests"] > runs["rarely"].summary()["requests"]
    assert runs["often"].settings["interval"] == 0.05


@pytest.mark.parametrize("options", [{}, {"keep_alive": False}])
def test_the_server_counts_the_polls_it_receives(options):
    result = run_polling(0.1, rate=5, clients=4, duration=1.0, **options)
    assert set(result.served.columns) == {"connection", "arrived"}
    assert result.summary()["served_per_s"] == pytest.approx(4 / 0.1, rel=0.25)
