"""A run's figures: what happened when, how late updates arrived, what went over the wire, a sweep."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ._style import EMPTY, EVENT, MARGIN, NEW, tidy_log_axes, whole_step

STREAMS = ("push", "sse", "websocket")  # patterns whose one request opens a stream that stays open


def timeline(result, *, clients: int = 3, seconds: float | None = None) -> go.Figure:
    """A ``Result``'s events created on the server (top lane) and, per client, its requests and what it saw.

    A grey line joins each event to the moment a client first saw it: its length is the latency.
    """
    end = seconds if seconds is not None else result.duration
    fig = go.Figure()
    ev = result.events[result.events["created"] <= end]
    lanes = ["server: events"] + [f"client {c}" for c in range(min(clients, result.clients))]
    fig.add_trace(go.Scatter(x=ev["created"], y=[lanes[0]] * len(ev), mode="markers", name="event created",
                             marker=dict(color=EVENT, symbol="diamond", size=8),
                             hovertext=[f"event {s}" for s in ev["seq"]]))
    for c, lane in enumerate(lanes[1:]):
        rq = result.requests[(result.requests["client"] == c) & (result.requests["sent"] <= end)]
        closes = rq["answered"]
        if result.pattern in STREAMS:  # the answer starts a stream: open until a connection drops or it asks again
            closed = result.connections["closed"].dropna().sort_values().to_numpy()
            dropped = [closed[i] if (i := closed.searchsorted(t)) < len(closed) else end for t in rq["sent"]]
            closes = rq["sent"].shift(-1).fillna(end).combine(pd.Series(dropped, index=rq.index), min)
        xs, ys = [], []
        for sent, answered in zip(rq["sent"], closes.clip(upper=end)):
            xs += [sent, answered, None]
            ys += [lane, lane, None]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=EMPTY, width=6),
                                 name="request open", showlegend=c == 0, legendgroup="req"))
        fig.add_trace(go.Scatter(x=rq["sent"], y=[lane] * len(rq), mode="markers", name="request sent",
                                 marker=dict(symbol="line-ns-open", size=16, color="#555"),
                                 showlegend=c == 0, legendgroup="sent"))
        dl = result.deliveries[(result.deliveries["client"] == c) & (result.deliveries["seen"] <= end)]
        lx, ly = [], []
        for created, seen in zip(dl["created"], dl["seen"]):
            lx += [created, seen, None]
            ly += [lanes[0], lane, None]
        fig.add_trace(go.Scatter(x=lx, y=ly, mode="lines", line=dict(color="#999", width=0.7),
                                 name="created → seen", showlegend=c == 0, legendgroup="lat", hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=dl["seen"], y=[lane] * len(dl), mode="markers", name="event seen",
                                 marker=dict(color=NEW, size=7), showlegend=c == 0, legendgroup="seen",
                                 hovertext=[f"event {s}, {l * 1000:.1f} ms late" for s, l in
                                            zip(dl["seq"], dl["latency"])]))
    fig.update_layout(title=f"{result.pattern}: what happened when", xaxis_title="seconds since the feed started",
                      yaxis=dict(categoryorder="array", categoryarray=lanes[::-1]), height=220 + 45 * len(lanes),
                      margin=MARGIN)
    return fig


def latency_histogram(results, *, marks: Mapping[str, float] | None = None) -> go.Figure:
    """Distribution of delivery latency (ms) of one ``Result``, or of each in a dict (by name); ``marks``
    draws labelled vertical lines (ms).

    Several results get one panel each, with its own latency scale: on a shared axis the fast
    patterns (a few ms) would be slivers beside polling (hundreds). Counts are whole numbers.
    """
    if not isinstance(results, Mapping):
        results = {results.pattern: results}
    fig = make_subplots(rows=max(len(results), 1), cols=1, subplot_titles=[
        f"{name}: median {r.deliveries['latency'].median() * 1000:.1f} ms" for name, r in results.items()]
        if len(results) > 1 else None, vertical_spacing=0.12 if len(results) > 1 else 0.0)
    for row, (name, result) in enumerate(results.items(), start=1):
        ms = result.deliveries["latency"].to_numpy() * 1000
        fig.add_trace(go.Histogram(x=ms, name=name, nbinsx=40, showlegend=len(results) == 1), row=row, col=1)
        tallest = int(np.histogram(ms, bins=40)[0].max()) if len(ms) else 1
        fig.update_yaxes(title_text="updates", tick0=0, dtick=whole_step(tallest), rangemode="tozero", row=row, col=1)
        for label, x in (marks or {}).items():
            fig.add_vline(x=x, line_dash="dash", annotation_text=label, row=row, col=1)
    fig.update_xaxes(title_text="latency (ms)", row=len(results), col=1)
    fig.update_layout(title="How late did updates arrive?", height=max(350, 220 * len(results)),
                      margin=dict(l=10, r=10, t=60, b=40))
    return fig


def traffic_bars(results: Mapping) -> go.Figure:
    """Requests, connections and kilobytes each way, side by side for several ``Result``s (by name)."""
    rows = pd.DataFrame({name: {
        "requests": r.summary()["requests"],
        "connections opened": r.wire.connections_opened,
        "KB up": r.wire.bytes_up / 1000,
        "KB down": r.wire.bytes_down / 1000,
    } for name, r in results.items()})
    fig = go.Figure([go.Bar(name=name, x=rows.index, y=rows[name]) for name in rows.columns])
    fig.update_layout(barmode="group", title="What went over the wire", height=350,
                      margin=MARGIN)
    return fig


def sweep_plot(table: pd.DataFrame, x: str, ys: Mapping[str, str], *, theory: Mapping[str, list] | None = None,
               title: str = "", x_title: str | None = None, y_title: str = "", log_x: bool = False) -> go.Figure:
    """Measured columns of a sweep table against one setting, with optional theory curves.

    ``ys`` maps column name to a legend label; ``theory`` maps a label to y values, one per row.
    """
    fig = go.Figure()
    for column, label in ys.items():
        fig.add_trace(go.Scatter(x=table[x], y=table[column], mode="lines+markers", name=label))
    for label, values in (theory or {}).items():
        fig.add_trace(go.Scatter(x=table[x], y=values, mode="lines", name=label, line=dict(dash="dash")))
    fig.update_layout(title=title, xaxis_title=x_title or x, yaxis_title=y_title, height=380,
                      margin=MARGIN)
    if log_x:
        fig.update_xaxes(type="log")
    return tidy_log_axes(fig)

