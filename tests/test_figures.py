"""Each chapter's standard figures, built headless, with axes that fit what they show.

Plotly sizes an axis to everything on it: traces, shapes and annotations. An annotation placed
in the wrong units (on a log axis plotly reads an annotation's x as log10) stretches the axis to
10**x and squeezes the curves into a sliver. So every figure here is checked: the span its axes
would cover is at most a few times the span of its data. The panel fixes of issue 12 are here
too: a refused request makes no warning, a table shows few rounded columns, the status says
"running" during a run, a double click runs once, and an overloaded run says so.
"""

import logging
import math
import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from labsupport import lab
from labsupport.lab import LabCall
from labsupport.experiments.choosing import ConnectionMemory, Crossover
from labsupport.experiments.longpolling import LongPollCrossover, run_long_polling
from labsupport.experiments.pull_push import HeldConnections
from labsupport.experiments.polling import run_polling
from labsupport.experiments.sse import run_sse_cut
from labsupport.experiments.websocket import run_game
from labsupport.plots import (crossover, duplex_lanes, ladder, latency_histogram, mark_x, sweep_plot, tidy_log_axes,
                              timeline, traffic_bars)
from labsupport.widgets import ControlPanel, int_slider, table_widget


def _numbers(values) -> list[float]:
    out = []
    for v in values if values is not None else ():
        if v is None or isinstance(v, str):
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return out


def spans(fig: go.Figure) -> dict[str, tuple[list[float], list[float], str]]:
    """Per axis: the data's values, everything else that sizes it (shapes, annotations), its type."""
    layout = fig.layout
    axes: dict[str, tuple[list, list, str]] = {}

    def axis(name: str):
        key = name[0] + "axis" + name[1:]
        kind = getattr(layout[key], "type", None) or "linear"
        return axes.setdefault(name, ([], [], kind))

    for trace in fig.data:
        if getattr(trace, "type", "") not in ("scatter", "bar", "histogram", "scattergl"):
            continue
        for letter in "xy":
            values = getattr(trace, letter, None)
            if values is None or (trace.type == "histogram" and letter == "y"):
                continue
            axis(getattr(trace, letter + "axis", None) or letter)[0].extend(_numbers(values))
    for note in layout.annotations or ():
        for letter in "xy":
            ref = getattr(note, letter + "ref", None) or letter
            if ref == "paper" or ref.endswith("domain") or getattr(note, letter, None) is None:
                continue
            data, extra, kind = axis(ref)
            value = float(getattr(note, letter))
            extra.append(10 ** value if kind == "log" else value)  # how plotly reads it
    for shape in layout.shapes or ():
        for letter in "xy":
            ref = getattr(shape, letter + "ref", None) or letter
            if ref == "paper" or ref.endswith("domain"):
                continue
            axis(ref)[1].extend(_numbers([getattr(shape, letter + "0"), getattr(shape, letter + "1")]))
    return axes


def assert_axes_fit(fig: go.Figure, *, factor: float = 10.0) -> None:
    for name, (data, extra, kind) in spans(fig).items():
        if not data:
            continue
        everything = data + extra
        if kind == "log":
            data = [v for v in data if v > 0]
            low, high = math.log10(min(data)), math.log10(max(data))
            shown = math.log10(max(everything)) - math.log10(min(v for v in everything if v > 0))
            assert shown <= (high - low) + 1.5, f"{name} (log) spans {shown:.1f} decades for {high - low:.1f} of data"
        else:
            width = max(data) - min(data) or abs(max(data)) or 1.0
            shown = max(everything) - min(everything)
            assert shown <= factor * width, f"{name} spans {shown:g} for data {min(data):g}..{max(data):g}"


# -- the log-axis crossover label ------------------------------------------------------------------

def crossover_figure(at: float, *, fixed: bool) -> go.Figure:
    fig = go.Figure()
    fig.add_scatter(x=[1, 2, 5, 10, 20, 50], y=[5, 5, 5, 5, 5, 5], name="polling")
    fig.add_scatter(x=[1, 2, 5, 10, 20, 50], y=[1, 2, 5, 10, 20, 50], name="long polling")
    if fixed:
        mark_x(fig, at, f"crossover ≈ {at:.1f} events/s", log_x=True)
    else:
        fig.add_vline(x=at, line_dash="dash", annotation_text=f"crossover ≈ {at:.1f} events/s")
    fig.update_layout(xaxis_type="log", yaxis_type="log")
    return tidy_log_axes(fig)


def test_a_crossover_label_on_a_log_axis_sits_by_its_line():
    with pytest.raises(AssertionError):
        assert_axes_fit(crossover_figure(6.0, fixed=False))  # the old way: the axis runs to 10**6
    fig = crossover_figure(6.0, fixed=True)
    assert_axes_fit(fig)
    [label] = fig.layout.annotations
    assert 10 ** label.x == pytest.approx(6.0)
    assert fig.layout.xaxis.dtick == 1  # powers of ten only: no crowd of 2s and 5s


def test_chapter_7s_crossover_plot_fits_its_data():
    rows = [dict(pattern=p, clients=n, rate=r, bytes=(800 * 4 if p == "polling" else 60 * r) * n,
                 requests=4 * n if p == "polling" else 0.01, delivered_share=1.0)
            for p in ("polling", "sse") for n in (4, 16) for r in (1, 4, 16, 64)]
    cross = Crossover(rows=pd.DataFrame(rows), interval=0.25, poll_bytes=800, counted_poll_bytes=800,
                      event_bytes=60)
    for measure in ("bytes", "requests", "delivered_share"):
        assert_axes_fit(crossover(cross, measure))


# -- the chapters' own figures, from small tables -----------------------------------------------------

def test_the_chapters_own_figures_fit_their_data_in_the_shared_margins():
    from types import SimpleNamespace

    import numpy as np

    from labsupport import plots

    crossing = LongPollCrossover(pd.DataFrame({"pattern": ["polling"] * 3 + ["long polling"] * 3,
                                               "rate": [1, 10, 50] * 2, "requests_per_s_per_client": [5, 5, 5, 1, 10, 50]}),
                                 interval=0.2, batch=0.1, crossover_rate=5.0)
    memory = ConnectionMemory(pd.DataFrame({"pattern": ["sse"] * 3, "connections": [0, 50, 100],
                                            "rss_mb": [30.0, 30.5, 31.0]}), {"sse": 10_240.0})
    needs = pd.DataFrame({"cores": [900, 10], "memory_gb": [5, 50], "bandwidth_mbit_s": [4000, 800]},
                         index=["polling", "sse"])
    bins = pd.DataFrame({"t": np.arange(5) * 0.01, "reconnects": [0, 40, 3, 0, 1]})
    storm = SimpleNamespace(policy="fixed delay", per_bin_table=lambda: bins, bin_width=0.01,
                            cpu=pd.DataFrame({"t": [0.0, 0.05], "cpu_share": [0.2, 0.9]}))
    figures = {
        "held": plots.held_memory(HeldConnections(pd.DataFrame({"clients": [0, 100, 200],
                                                                "python_bytes": [2e7, 2.2e7, 2.4e7]}), 2e4)),
        "one poll": plots.one_poll({"request_headers": 120, "response_headers": 180, "payload": 40}),
        "wait": plots.wait_for_poll([0.1, 0.5, 1.0], [50, 240, 510], [100, 490, 990]),
        "304s": plots.poll_bytes(pd.DataFrame({"bytes_down_per_poll": [250, 120], "bytes_per_poll": [400, 300]},
                                              index=["plain", "conditional"])),
        "waiting": plots.waiting_clients(pd.DataFrame({"t": [0, 0.5, 1.0], "open_connections": [300] * 3,
                                                       "held_requests": [300, 0, 300]}), [0.5], "waiting"),
        "lost": plots.events_lost({"with a cursor": 0, "without a cursor": 12}, "lost"),
        "requests": plots.requests_per_client(crossing),
        "memory": plots.connection_memory(memory),
        "needs": plots.needs_at_scale(needs, "needs"),
        "storms": plots.reconnect_storms({"fixed": storm}),
        "webhooks": plots.webhook_attempts(pd.DataFrame({"t": [0, 0.05, 0.1], "answered": [2, 0, 5],
                                                          "failed": [0, 3, 0]}), (0.04, 0.09)),
    }
    for name, fig in figures.items():
        assert fig.data, name
        assert_axes_fit(fig)
        assert fig.layout.margin.l == plots.MARGIN["l"] and fig.layout.margin.t == plots.MARGIN["t"], name
    assert "per 10 ms" in figures["storms"].layout.title.text


# -- the standard figures of real runs ----------------------------------------------------------------

@pytest.fixture(scope="module")
def runs():
    return {
        # Random arrivals: at a fixed rate every event would wait the same time for its poll, and a
        # histogram of near-equal latencies says nothing about whether its axis fits.
        "polling": run_polling(0.2, rate=10, clients=2, duration=1, arrivals="poisson", seed=3),
        "long polling": run_long_polling(rate=5, clients=2, duration=1),
        "sse cut": run_sse_cut(rate=20, duration=1.0, cut_at=0.5),
    }


def test_chapter_figures_fit_their_data(runs):
    polling, long_polling, cut = runs["polling"], runs["long polling"], runs["sse cut"].result
    figures = [timeline(polling), timeline(long_polling), timeline(cut, clients=1),
               latency_histogram({"polling": polling}, marks={"T / 2": 100, "T": 200}),
               latency_histogram({"polling": polling, "long polling": long_polling, "sse": cut}),
               traffic_bars({"polling": polling, "long polling": long_polling}),
               ladder(polling), ladder(long_polling), ladder(cut), ladder({"a": polling, "b": cut}, connections=[0])]
    table = pd.DataFrame({"interval": [0.05, 0.1, 0.5, 1.0], "requests_per_s": [200, 100, 20, 10.0]})
    figures.append(sweep_plot(table, "interval", {"requests_per_s": "measured"}, log_x=True))
    for fig in figures:
        assert_axes_fit(fig)


def test_several_latency_histograms_get_a_panel_each_with_whole_counts(runs):
    fig = latency_histogram({"polling": runs["polling"], "long polling": runs["long polling"]})
    assert {trace.xaxis for trace in fig.data} == {"x", "x2"}  # each its own latency scale
    assert fig.layout.yaxis.dtick >= 1 and float(fig.layout.yaxis.dtick).is_integer()


def test_a_stream_stays_open_on_the_timeline_until_it_is_cut(runs):
    outcome = runs["sse cut"]
    fig = timeline(outcome.result, clients=1)
    [bars] = [t for t in fig.data if t.name == "request open"]
    first_end = bars.x[1]
    assert first_end == pytest.approx(outcome.cut_at, abs=0.05)  # not at the answer's head (about 0 s)
    assert bars.x[4] == pytest.approx(outcome.result.duration)  # the second stream is open to the end


def test_the_game_loops_figures_fit():
    game = run_game(duration=0.5, latency=0.02)
    assert_axes_fit(duplex_lanes(game.table(), seconds=game.duration))
    assert_axes_fit(ladder(game.wire, names=["player"]))


# -- the panels and the lab's own logging ---------------------------------------------------------------

def test_a_refused_request_is_noted_quietly(caplog):
    import urllib.error
    import urllib.request

    from labsupport import Feed, start_server, stop_server
    from labsupport.patterns import polling

    demo = start_server("refused-demo", polling.handlers(Feed(rate=1)))
    try:
        with caplog.at_level(logging.INFO), pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(urllib.request.Request(f"{demo.url}/latest", method="DELETE"), timeout=5)
    finally:
        stop_server("refused-demo")
    assert not [r for r in caplog.records if r.name == "tornado.access"]
    assert lab.refused[-1] == "405 DELETE /latest"


def test_a_wide_table_shows_a_few_rounded_columns_and_folds_the_rest(runs):
    widget = table_widget(runs["polling"].table())
    shown, everything = widget.children
    header = shown.value.split("</thead>")[0]
    assert len(re.findall(r"<th[ >]", header)) - 1 <= 8  # the index's header cell, then at most 8 columns
    assert "latency_p50_ms" in shown.value
    assert all(len(decimals) <= 2 for decimals in re.findall(r"<td>[\d,]+\.(\d+)</td>", shown.value))  # rounded
    assert everything.selected_index is None  # folded until clicked


async def _slow_coro(*, clients: int = 1):
    import asyncio

    await asyncio.sleep(0.05)
    return _Overloaded() if clients > 10 else np.arange(clients)


class _Overloaded:
    def overload(self) -> str:
        return "the lab was overloaded"


_slow = LabCall(_slow_coro)


def test_the_panel_says_running_runs_once_for_a_double_click_and_reports_overload():
    panel = ControlPanel(_slow, {"clients": int_slider("clients", 1, 20, 2)}, show=lambda r: [])
    seen = []
    panel.status.observe(lambda change: seen.append(change["new"]), "value")
    runs = []
    original = panel.run
    panel.run = lambda: runs.append(original())
    panel._clicked(panel.button)
    panel._clicked(panel.button)  # handled just after the first run ended: it was made during it
    assert len(runs) == 1
    assert seen[:2] == ["running…", "done"]
    panel.controls["clients"].value = 20
    original()
    assert "overloaded" in panel.status.value


def test_held_requests_are_counted_at_every_change_not_by_a_starved_sampler():
    from labsupport.experiments.longpolling import run_waiting_clients

    crowd = run_waiting_clients(100, rate=1, duration=1.5)
    s = crowd.samples
    assert len(s) >= 2 * 100  # every arrival and answer, not a few samples of a busy loop
    lasted = np.diff(np.append(s["t"].to_numpy(), crowd.result.duration))
    all_held = lasted[(s["held_requests"] == 100).to_numpy()].sum() / crowd.result.duration
    assert all_held >= 0.3, f"every request held for only {all_held:.0%} of the run"


def test_a_panels_run_gains_a_folded_ladder_drawn_when_opened(runs):
    from labsupport.widgets import ladder_view

    view = ladder_view(runs["polling"])
    assert view.selected_index is None and not view.children[0].children  # nothing drawn while folded
    view.selected_index = 0
    [figure] = view.children[0].children
    assert figure.layout.meta["run"]["request"] > 0
    assert ladder_view({"a": runs["polling"], "b": runs["long polling"]}) is not None
    assert ladder_view(object()) is None
