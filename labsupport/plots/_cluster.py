"""Chapter 9's figures: events through the gateways over time, acks while the cluster fails, one event's trip."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from ._style import fault_marks


def deliveries_over_time(deliveries: pd.DataFrame, marks: list[tuple[float, str]], *, title: str = "") -> go.Figure:
    """Each client's events over time (``client, kind, seq, t`` rows), coloured by client; marks show the faults."""
    fig = go.Figure()
    for client, rows in deliveries.groupby("client"):
        fig.add_scatter(x=rows["t"], y=rows["seq"], mode="markers", marker={"size": 3},
                        name=f"client {client} ({rows['kind'].iloc[0]})", showlegend=client < 6)
    fault_marks(fig, marks)
    fig.update_layout(title=title, xaxis_title="seconds since the run began", yaxis_title="event (stream sequence)",
                      height=380)
    return fig


def publish_gaps(gaps: pd.DataFrame, marks: list[tuple[float, str]], *, title: str = "") -> go.Figure:
    """Time between consecutive acknowledgements (``t, gap_s`` rows): flat at 1 / rate, a spike while the
    cluster cannot ack."""
    fig = go.Figure(go.Scatter(x=gaps["t"], y=gaps["gap_s"], mode="lines+markers", marker={"size": 3},
                               name="gap between acks"))
    fault_marks(fig, marks)
    fig.update_layout(title=title, xaxis_title="seconds since the run began", yaxis_title="seconds",
                      height=360, yaxis_type="log")
    return fig


def sequence_diagram(table: pd.DataFrame, *, title: str = "One event's trip") -> go.Figure:
    """A sequence diagram of a ladder table (``from, to, sent, arrived, label`` rows, seconds): one lane
    per party, time running down, one arrow per message."""
    lanes = list(dict.fromkeys([lane for pair in zip(table["from"], table["to"]) for lane in pair]))
    x = {lane: i for i, lane in enumerate(lanes)}
    fig = go.Figure()
    top, bottom = 1000 * table["sent"].min(), 1000 * table["arrived"].max()
    for lane in lanes:
        fig.add_scatter(x=[x[lane]] * 2, y=[top, bottom], mode="lines", line={"color": "#bbb"},
                        showlegend=False, hoverinfo="skip")
    for _, m in table.iterrows():
        if m["from"] == m["to"]:   # something that happened at one party
            fig.add_scatter(x=[x[m["to"]]], y=[1000 * m["sent"]], mode="markers+text", text=[m["label"]],
                            marker={"symbol": "x", "size": 12, "color": "#a11"}, textposition="middle right",
                            showlegend=False)
            continue
        fig.add_annotation(x=x[m["to"]], y=1000 * m["arrived"], ax=x[m["from"]], ay=1000 * m["sent"],
                           xref="x", yref="y", axref="x", ayref="y", showarrow=True, arrowhead=2, text="")
        fig.add_scatter(x=[(x[m["to"]] + x[m["from"]]) / 2], y=[500 * (m["arrived"] + m["sent"])], mode="text",
                        text=[m["label"]], textposition="top center", textfont={"size": 10}, showlegend=False,
                        hovertext=f"{m['from']} → {m['to']}: {1000 * (m['arrived'] - m['sent']):.2f} ms")
    fig.update_xaxes(tickvals=list(x.values()), ticktext=lanes, range=[-0.5, len(lanes) - 0.5])
    fig.update_yaxes(autorange="reversed", title_text="ms since the run began")
    fig.update_layout(title=title, height=420)
    return fig
