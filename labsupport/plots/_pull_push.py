"""Chapter 1's figure: what a push server's memory pays for every connection it holds open."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from ._style import framed


def held_memory(held) -> go.Figure:
    """Python memory (MB) against idle listening clients (``measure_held_connections``'s result)."""
    rows = held.table()
    fig = go.Figure(go.Scatter(x=rows["clients"], y=rows["python_bytes"] / 1e6, mode="lines+markers"))
    return framed(fig, title="Server memory grows with every held connection", xaxis_title="idle listening clients",
                  yaxis_title="MB of Python memory", height=350)
