"""Chapter 7's figures: every pattern on one workload, where polling and push cross, what held connections cost."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ._style import framed, mark_x, tidy_log_axes

COLOURS = {"polling": "#7f7f7f", "polling, keep-alive": "#bcbd22", "cursor polling": "#17becf", "long polling": "#ff7f0e", "sse": "#1f77b4",
           "websocket": "#2ca02c", "pub/sub": "#9467bd"}
CROSSOVER_MEASURES = {"bytes": "bytes per client per second", "requests": "requests per client per second",
                      "connections_held": "connections held per client",
                      "delivered_share": "share of events delivered"}


def comparison(compared) -> go.Figure:
    """Six panels side by side: requests, bytes, connections, latency, missed events, server CPU.

    ``compared`` is a ``Comparison``: its ``table()``, its ``workload`` and the polling ``interval``.
    """
    t = compared.table()
    names = list(t.index)
    colours = [COLOURS.get(n, "#333") for n in names]
    fig = make_subplots(rows=2, cols=3, subplot_titles=(
        "requests", "bytes on the wire (up + down)", "connections held at once",
        "latency p50 and p99 (ms)", "events missed (client × event)", "server CPU time (ms)"))
    bars = [("requests", 1, 1), ("connections held (peak)", 1, 3), ("events missed", 2, 2),
            ("server CPU (ms)", 2, 3)]
    for column, row, col in bars:
        fig.add_bar(x=names, y=t[column], marker_color=colours, showlegend=False, row=row, col=col)
    fig.add_bar(x=names, y=t["bytes up"], name="up", marker_color="#aec7e8", row=1, col=2)
    fig.add_bar(x=names, y=t["bytes down"], name="down", marker_color="#1f77b4", row=1, col=2)
    fig.add_bar(x=names, y=t["latency p50 (ms)"], name="p50", marker_color="#98df8a", row=2, col=1)
    fig.add_bar(x=names, y=t["latency p99 (ms)"], name="p99", marker_color="#2ca02c", row=2, col=1)
    w = compared.workload
    framed(fig, barmode="group", height=560, margin=dict(l=10, r=10, t=70, b=40),
           title=f"One workload, every pattern: {w.clients} clients, {w.rate:g} events/s for {w.duration:g} s "
                 f"(polling every {compared.interval:g} s)")
    fig.update_yaxes(type="log", row=1, col=2)
    return tidy_log_axes(fig)


def crossover(cross, measure_name: str = "bytes") -> go.Figure:
    """One measure of a ``Crossover`` against the event rate, a line per pattern and client count, theory dashed."""
    label = CROSSOVER_MEASURES[measure_name]
    fig = go.Figure()
    most = cross.table()["clients"].max()
    for (pattern, clients), rows in cross.table().groupby(["pattern", "clients"]):
        fig.add_scatter(x=rows["rate"], y=rows[measure_name], mode="lines+markers",
                        name=f"{pattern}, {clients} clients",
                        line=dict(color=COLOURS[pattern], dash="solid" if clients == most else "dot"))
    rates = np.array(sorted(cross.table()["rate"].unique()), dtype=float)
    if measure_name == "bytes":
        fig.add_scatter(x=rates, y=[cross.counted_poll_bytes / cross.interval] * len(rates), mode="lines",
                        name="theory: poll bytes / interval", line=dict(color="#333", dash="dash", width=1))
        fig.add_scatter(x=rates, y=rates * cross.event_bytes, mode="lines", name="theory: rate × event bytes",
                        line=dict(color="#1f77b4", dash="dash", width=1))
        mark_x(fig, cross.theory_rate, f"theory: cross at {cross.theory_rate:.1f} events/s", log_x=True, dash="dot")
    framed(fig, title=f"{label} (polling every {cross.interval:g} s)", height=380,
           xaxis_title="events per second", yaxis_title=label, xaxis_type="log",
           yaxis_type="log" if measure_name in ("bytes", "requests") else "linear")
    return tidy_log_axes(fig)


def connection_memory(memory) -> go.Figure:
    """Server memory against idle connections held, a line per pattern (``measure_connection_memory``'s result)."""
    fig = go.Figure()
    for pattern, rows in memory.table().groupby("pattern"):
        fig.add_scatter(x=rows["connections"], y=rows["rss_mb"] - rows["rss_mb"].iloc[0], mode="lines+markers",
                        name=f"{pattern}: {memory.per_connection[pattern] / 1000:.1f} kB each")
    return framed(fig, title="Server memory (RSS) against idle connections held", height=380,
                  xaxis_title="connections held", yaxis_title="MB above the server at rest")


def idle_connections(holding) -> go.Figure:
    """A ``Holding``: the server's memory at each step up to thousands of idle connections."""
    t = holding.table()
    fig = go.Figure(go.Scatter(x=t["connections"], y=t["rss_bytes"] / 1e6, mode="lines+markers",
                               name=holding.pattern))
    each_kb = holding.bytes_per_connection / 1000
    return framed(fig, title=f"{holding.pattern}: {holding.count:,} idle connections, {each_kb:.1f} kB each, "
                             f"opened in {holding.open_seconds:.1f} s",
                  height=360, xaxis_title="idle connections held", yaxis_title="server memory (RSS, MB)")


def needs_at_scale(needs: pd.DataFrame, title: str) -> go.Figure:
    """What each pattern needs (rows: patterns; cores, memory, bandwidth), grouped bars on a log axis."""
    fig = go.Figure()
    for column, label in (("cores", "cores (this Python server)"), ("memory_gb", "memory (GB)"),
                          ("bandwidth_mbit_s", "bandwidth (Mbit/s)")):
        fig.add_bar(x=needs.index, y=needs[column], name=label)
    return framed(fig, title=title, height=380, barmode="group", yaxis_type="log")
