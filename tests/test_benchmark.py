"""The benchmark's own parts, not its timings (CI times nothing): the JSON it writes, its baselines."""

import json
import urllib.request
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def benchmark(monkeypatch):
    """benchmark.py and its baselines (``bench/``) live at the top of the repository, beside course.py."""
    monkeypatch.syspath_prepend(str(ROOT))
    import benchmark
    return benchmark


def test_json_rows_hold_the_figure_both_sides_the_ratio_and_the_target(benchmark, tmp_path):
    rows = [benchmark.Row("latency p50 (ms)", 2.6, 2.0, 1.3),
            benchmark.Row("polls per second", 700.0, 1000.0, 0.8, at_least=True),
            benchmark.Row("seconds to open", 3.0, 2.0, None)]
    benchmark.write_json(rows, tmp_path / "bench.json", meta={"repeat": 1})
    written = json.loads((tmp_path / "bench.json").read_text())
    assert written["meta"] == {"repeat": 1}
    first, second, third = written["rows"]
    assert {"figure", "course", "baseline", "ratio", "target", "holds"} <= set(first)
    assert (first["ratio"], first["target"], first["target_is"], first["holds"]) == (1.3, 1.3, "max", True)
    assert (second["ratio"], second["target_is"], second["holds"]) == (0.7, "min", False)
    assert third["target"] is None and third["holds"] is None


def test_repeated_runs_report_the_median_of_each_side(benchmark):
    runs = [[benchmark.Row("x", course, base, 1.3)] for course, base in ((1, 10), (5, 1), (3, 2))]
    (row,) = benchmark.median_rows(runs)
    assert (row.course, row.baseline) == (3, 2)


def test_the_baseline_server_serves_reports_and_stops_cleanly(benchmark):
    from bench.baseline import BaselineServer

    with BaselineServer() as server:
        child = psutil.Process(server.process.pid)
        server.start_feed(rate=100, duration=0.05)
        assert server.usage()["rss"] > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/latest", timeout=10) as answer:
            assert json.loads(answer.read())["seq"] >= 0
    assert server.process.returncode == 0 and not child.is_running()


def test_a_baseline_run_returns_every_latency_and_leaves_nothing_running(benchmark):
    from bench import baseline

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    found = baseline.run("sse", rate=20, clients=3, duration=0.5, drain=0.2)
    assert 3 * 8 <= len(found["latencies"]) <= 3 * 10 and all(0 <= t < 5 for t in found["latencies"])
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before
