"""Chapter 7: every pattern on one workload, the crossover sweep, projections and the decision guide.

Runs check what was counted (requests, bytes, connections, losses), never how fast.
"""

import math

import pandas as pd
import pytest

from labsupport.exercises import ch07
from labsupport.costs import (CASES, Need, cheaper_on_paper, guide, header_traffic, project, published_comparison,
                              recommend, unit_costs)
from labsupport.decision_panel import decision_panel
from labsupport.experiments.choosing import (ConnectionMemory, framed_event_bytes, measure_connection_memory,
                                             run_all_patterns, run_crossover_sweep)
from labsupport.plots import comparison


@pytest.fixture(scope="module")
def same():
    return run_all_patterns(rate=5, clients=3, duration=1.0, interval=0.25)


def test_every_pattern_runs_on_the_same_workload(same):
    table = same.table()
    assert list(table.index) == ["polling", "long polling", "sse", "websocket", "pub/sub"]
    assert {len(run.result.events) for run in same.runs.values()} <= {4, 5, 6}
    for push in ("sse", "websocket", "pub/sub"):
        assert table.loc[push, "requests"] == 3 and table.loc[push, "events missed"] == 0
    assert table.loc["long polling", "events missed"] == 0
    assert table.loc["polling", "requests"] >= 3 * 1.0 / 0.25  # it asks on its clock
    for name, run in same.runs.items():
        assert run.window.bytes_total > 0 and run.server_cpu_s >= 0
        assert table.loc[name, "connections opened"] == 3
    assert all(same.runs[p].server_cpu_s > 0 for p in ("polling", "long polling", "sse", "websocket"))
    assert len(comparison(same).data) >= 8


def test_unknown_patterns_are_refused():
    with pytest.raises(ValueError, match="patterns"):
        run_all_patterns(patterns=("carrier pigeon",))
    with pytest.raises(ValueError, match="interval"):
        run_all_patterns(interval=0)


def test_memory_grows_with_held_connections():
    memory = measure_connection_memory(patterns=("sse",), counts=(0, 40))
    assert list(memory.table()["connections"]) == [0, 40]
    assert memory.per_connection["sse"] > 0
    with pytest.raises(ValueError):
        measure_connection_memory(counts=(5,))


def test_unit_costs_and_projection(same):
    memory = ConnectionMemory(pd.DataFrame({"pattern": [], "connections": [], "rss_bytes": []}),
                              {p: 10_000.0 for p in same.runs})
    units = unit_costs(same, memory)
    assert units.loc["polling", "unit"] == "request" and units.loc["sse", "unit"] == "delivered event"
    assert units.loc["sse", "bytes_per_unit"] < units.loc["polling", "bytes_per_unit"]
    assert units.loc["sse", "setup_bytes_per_connection"] > 0


def _units(**changes):
    base = {"polling": (400, 0.8, 7), "long polling": (400, 0.4, 14), "sse": (50, 0.1, 14),
            "websocket": (30, 0.1, 18), "pub/sub": (55, float("nan"), 46)}
    base.update(changes)
    return pd.DataFrame({name: {"unit": "x", "bytes_per_unit": b, "cpu_ms_per_unit": c, "setup_bytes_per_connection": 0,
                                "memory_kb_per_connection": m} for name, (b, c, m) in base.items()}).T


def test_projection_is_linear_and_states_its_assumptions():
    units = _units()
    small, large = (project(units, clients=n, rate=1, interval=1) for n in (10_000, 1_000_000))
    assert large["requests_per_s"].equals(100 * small["requests_per_s"])
    assert small.loc["polling", "requests_per_s"] == 10_000 and small.loc["sse", "requests_per_s"] == 0
    assert small.loc["polling", "held_connections"] == 10_000  # polls more often than the keep-alive timeout
    assert project(units, clients=10_000, rate=1, interval=60).loc["polling", "held_connections"] == 0
    assert math.isnan(small.loc["pub/sub", "servers"])  # an unmeasured cost gives no total
    assert small.loc["sse", "bandwidth_mbit_s"] == pytest.approx((10_000 * 50 + 10_000 * 20 / 30) * 8 / 1e6)


def test_published_figure_and_header_traffic():
    assert header_traffic(10_000, 1.0, 871) == pytest.approx(69.68)
    table = published_comparison(400)
    row = table[(table["clients"] == 10_000) & (table["poll every (s)"] == 1.0)].iloc[0]
    assert row["as the article prints it (2^20 bits)"] == pytest.approx(66.45, abs=0.01)


def test_crossover_sweep_counts():
    cross = run_crossover_sweep(rates=(2, 64), clients=(2,), interval=0.25, duration=1.0)
    t = cross.table().set_index(["pattern", "rate"])
    assert t.loc[("polling", 2), "requests"] == pytest.approx(4, rel=0.3)
    assert t.loc[("sse", 2), "requests"] == 0 and t.loc[("sse", 64), "connections_held"] >= 0.9
    assert cross.connections_held("polling") < 0.3  # pooled: one connection closing late is not half of it
    assert t.loc[("polling", 64), "longest_held_s"] < t.loc[("sse", 64), "longest_held_s"]
    assert t.loc[("sse", 64), "bytes"] > t.loc[("sse", 2), "bytes"] * 10
    assert t.loc[("cursor polling", 64), "missed"] == 0 and t.loc[("cursor polling", 64), "requests"] == pytest.approx(4, rel=0.3)
    assert t.loc[("cursor polling", 64), "bytes"] > t.loc[("cursor polling", 2), "bytes"]  # every event comes along
    assert 2 < cross.theory_rate < 64 and 2 < cross.crossover_rates()[2] < 64
    assert cross.who_is_cheaper("requests").loc[2].tolist() == ["push", "push"]
    with pytest.raises(ValueError):
        run_crossover_sweep(rates=(1,) * 10, clients=(100,))


def test_framed_event_bytes_counts_the_framing():
    # "id: <8 hex digits>-7\n" + "data: " + payload + "\n\n", inside one chunk: size line and CRLF
    payload = len('{"seq": 7, "value": 100.01}')
    framed = 15 + 6 + payload + 2
    assert framed_event_bytes(7) == framed + len(f"{framed:x}\r\n") + 2


def test_decision_guide_on_the_articles_cases():
    cases = guide(_units())
    assert cases["recommended"].to_dict() == {"weather panel": "polling", "stock ticker": "sse", "news feed": "sse",
                                              "chat": "websocket", "email jobs": "queue"}
    fast = Need("fast", clients=1000, updates_per_minute=600, max_delay_s=1)
    answer = recommend(fast, _units())
    assert answer.pattern != "polling" and "skip" in answer.reasons[0]
    latest_only = Need("board", clients=1000, updates_per_minute=600, max_delay_s=1, every_update_matters=False)
    assert "polling" in recommend(latest_only, _units()).costs.index
    assert len(CASES) == 5


def test_paper_map_names_the_cheaper_side():
    paper = cheaper_on_paper(_units(), rates=(0.001, 1), clients=(100, 1_000_000), max_delay=300)
    assert paper.loc[100, 0.001].startswith("either")
    assert paper.loc[1_000_000, 1].startswith("push")


@pytest.mark.parametrize("exercise", [ch07.q1, ch07.q2, ch07.q3, ch07.q4])
def test_wrong_answers_do_not_crash(exercise):
    assert exercise.is_correct("something else") is False


def test_the_decision_panel_runs_the_guide_and_answers_bad_input_in_words():
    panel = decision_panel(_units())
    assert panel.run().pattern in ("polling", "long polling", "sse", "websocket")
    panel.controls["clients"].value = -5
    assert panel.run() is None and "Could not" in panel.status.value
