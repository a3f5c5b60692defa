"""Chapters 2 and 3's figures: what one poll carries, how long an update waits, what long polling holds."""

from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go

from ._style import EVENT, NEW, framed, mark_x, tidy_log_axes


def one_poll(sizes: Mapping[str, int]) -> go.Figure:
    """The bytes of one poll (``exchange_sizes``): request headers, answer headers, payload."""
    headers = sizes["request_headers"] + sizes["response_headers"]
    fig = go.Figure(go.Bar(x=["request headers", "answer headers", "payload"],
                           y=[sizes["request_headers"], sizes["response_headers"], sizes["payload"]],
                           marker_color=["#999", "#999", NEW]))
    return framed(fig, title=f"One poll: {headers} bytes of headers around {sizes['payload']} bytes of news",
                  yaxis_title="bytes", height=320)


def wait_for_poll(intervals: Sequence[float], means: Sequence[float], worst: Sequence[float]) -> go.Figure:
    """Measured mean and worst latency (ms) against the poll interval T (s), with T / 2 and T drawn."""
    fig = go.Figure()
    fig.add_scatter(x=intervals, y=means, mode="lines+markers", name="measured mean")
    fig.add_scatter(x=intervals, y=worst, mode="lines+markers", name="measured worst")
    fig.add_scatter(x=intervals, y=[t * 500 for t in intervals], mode="lines", name="T / 2", line=dict(dash="dash"))
    fig.add_scatter(x=intervals, y=[t * 1000 for t in intervals], mode="lines", name="T", line=dict(dash="dot"))
    return framed(fig, title="How long an update waits for the next poll", xaxis_title="poll interval T (s)",
                  yaxis_title="latency (ms)", height=380)


def poll_bytes(costs: pd.DataFrame, title: str = "What 304s save") -> go.Figure:
    """Bytes down and both ways per poll, one group per row of ``costs`` (``poll_costs`` rows)."""
    fig = go.Figure([go.Bar(name=direction, x=costs.index, y=costs[column])
                     for direction, column in [("bytes down per poll", "bytes_down_per_poll"),
                                               ("bytes both ways per poll", "bytes_per_poll")]])
    return framed(fig, barmode="group", title=title, yaxis_title="bytes", height=340)


def waiting_clients(samples: pd.DataFrame, events: Sequence[float], title: str) -> go.Figure:
    """Open connections and held requests over time (``samples``), a red line at each event."""
    fig = go.Figure()
    fig.add_scatter(x=samples["t"], y=samples["open_connections"], name="open connections (wire meter)")
    fig.add_scatter(x=samples["t"], y=samples["held_requests"], name="requests held by the server",
                    line=dict(dash="dot"))
    for t in events:
        fig.add_vline(x=t, line_color=EVENT, line_dash="dash")
    return framed(fig, title=title, xaxis_title="seconds since the feed started", yaxis_title="count", height=360)


def events_lost(lost: Mapping[str, int], title: str) -> go.Figure:
    """Events lost per variant, one bar each (blue and red in turn)."""
    colours = [(NEW, EVENT)[i % 2] for i in range(len(lost))]
    fig = go.Figure(go.Bar(x=list(lost), y=list(lost.values()), marker_color=colours))
    return framed(fig, title=title, yaxis_title="events lost", height=320)


def requests_per_client(cross) -> go.Figure:
    """Requests per second per client against the event rate, a line per pattern, the crossover marked
    (``run_crossover``'s result)."""
    fig = go.Figure()
    for pattern, rows in cross.table().groupby("pattern", sort=False):
        fig.add_scatter(x=rows["rate"], y=rows["requests_per_s_per_client"], mode="lines+markers", name=pattern)
    rate = cross.crossover_rate
    mark_x(fig, rate, f"crossover ≈ {rate:.1f} events/s", log_x=True)
    framed(fig, title="Requests per second per client as events speed up", xaxis_title="events per second",
           yaxis_title="requests per second per client", xaxis_type="log", yaxis_type="log", height=400)
    return tidy_log_axes(fig)
