"""Chapter 8's figures: a reconnect storm per backoff policy, webhook attempts across a receiver outage."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from ._style import framed

POLICY_COLOURS = {"fixed": "#d62728", "jitter": "#2ca02c"}


def reconnect_storms(storms: dict) -> go.Figure:
    """Reconnects per bin after the cut, one bar series per policy, server CPU on a second axis.

    ``storms`` maps a policy key to its ``Storm``: its ``per_bin_table()`` and its ``cpu`` table.
    Every storm is counted in bins of the same width.
    """
    fig = go.Figure()
    width_ms = 0.0
    for key, storm in storms.items():
        bins = storm.per_bin_table()
        width_ms = 1000 * storm.bin_width
        fig.add_bar(x=bins["t"] * 1000, y=bins["reconnects"], name=f"reconnects, {storm.policy}",
                    marker_color=POLICY_COLOURS.get(key), opacity=0.7)
        fig.add_scatter(x=storm.cpu["t"] * 1000, y=storm.cpu["cpu_share"] * 100, yaxis="y2", mode="lines",
                        name=f"server CPU %, {storm.policy}", line=dict(color=POLICY_COLOURS.get(key), dash="dot"))
    return framed(fig, barmode="overlay", height=420, legend=dict(orientation="h", y=-0.2),
                  title=f"Reconnect storm: new connections per {width_ms:g} ms after every client was cut",
                  xaxis_title="ms after the cut", yaxis_title=f"reconnects per {width_ms:g} ms",
                  yaxis2=dict(title="server CPU (% of one core)", overlaying="y", side="right", range=[0, 110]))


def webhook_attempts(bins: pd.DataFrame, outage: tuple[float, float] | None, *, width: float = 0.05) -> go.Figure:
    """Webhook attempts per bin (``attempts_per_bin``'s ``t, answered, failed``), stacked, the outage shaded."""
    fig = go.Figure([go.Bar(x=bins["t"], y=bins["answered"], name="answered 2xx"),
                     go.Bar(x=bins["t"], y=bins["failed"], name="failed (receiver down)")])
    if outage is not None:
        fig.add_vrect(x0=outage[0], x1=outage[1], fillcolor="#ddd", opacity=0.4, annotation_text="receiver down")
    return framed(fig, barmode="stack", title=f"Webhook attempts per {width * 1000:g} ms", xaxis_title="seconds",
                  yaxis_title="attempts", height=350)
