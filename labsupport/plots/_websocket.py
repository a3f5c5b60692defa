"""Chapter 5's figures: one connection both ways at once, round trips, frame overhead, a slow reader's outbox."""

from __future__ import annotations

from typing import Mapping

import pandas as pd
import plotly.graph_objects as go

from ._style import framed


def duplex_lanes(messages: pd.DataFrame, *, seconds: float, crossings: int | None = None) -> go.Figure:
    """Two lanes, client and server; each message (``direction, n, sent, received`` rows, seconds)
    is a line from its sender to its receiver, for the first ``seconds`` of the run."""
    start = messages["sent"].min()
    shown = messages[messages["sent"] <= start + seconds]
    fig = go.Figure()
    for direction, colour, name in (("down", "#1f77b4", "server → client (game state)"),
                                    ("up", "#d62728", "client → server (player input)")):
        lanes = ("server", "client") if direction == "down" else ("client", "server")
        xs, ys = [], []
        for sent, received in shown.loc[shown["direction"] == direction, ["sent", "received"]].itertuples(index=False):
            xs += [sent - start, received - start, None]
            ys += [*lanes, None]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name,
                                 line=dict(color=colour, width=1.5), marker=dict(size=4)))
    crossed = "" if crossings is None else f" ({crossings} crossings in flight)"
    return framed(fig, title=f"One connection, both directions at once{crossed}", height=300,
                  xaxis_title="seconds", yaxis=dict(categoryorder="array", categoryarray=["client", "server"]))


def round_trip_histogram(times: pd.DataFrame) -> go.Figure:
    """Round-trip times (``path, ms`` rows), one overlaid histogram per path."""
    fig = go.Figure([go.Histogram(x=group["ms"], name=path, opacity=0.6, nbinsx=40)
                     for path, group in times.groupby("path", sort=False)])
    return framed(fig, barmode="overlay", title="Round-trip time", xaxis_title="ms", yaxis_title="messages",
                  height=320)


def frame_overhead_bars(frames: pd.DataFrame) -> go.Figure:
    """Bytes per message beyond the payload (``experiments.websocket.frame_overhead``'s table), per size:
    WebSocket frames each way beside an HTTP request and response."""
    columns = [("WebSocket frame, up", "WebSocket up (client→server)"), ("WebSocket frame, down", "WebSocket down"),
               ("HTTP request", "HTTP request (up)"), ("HTTP response", "HTTP response (down)")]
    fig = go.Figure([go.Bar(name=name, x=[f"{s} B" for s in frames["payload bytes"]], y=frames[column])
                     for name, column in columns])
    return framed(fig, barmode="group", title="Bytes per message beyond the payload", yaxis_title="bytes",
                  xaxis_title="message size", height=350)


def outbox_over_time(samples: Mapping[str, pd.DataFrame], *, title: str) -> go.Figure:
    """Messages waiting in a slow reader's outbox (``t, outbox`` rows), one line per named run."""
    fig = go.Figure([go.Scatter(x=s["t"], y=s["outbox"], mode="lines", name=name) for name, s in samples.items()])
    return framed(fig, title=title, xaxis_title="seconds", yaxis_title="messages in its outbox", height=350)
