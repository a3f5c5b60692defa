"""Chapter 6's figures: jobs on the broker over time, and how long each publish waited for its ack."""

from __future__ import annotations

import plotly.graph_objects as go

from ._style import framed


def queue_depth(run, title: str | None = None) -> go.Figure:
    """Jobs on the broker over time (waiting + in flight), with published and emailed so far.

    ``run`` is a ``QueueRun``: its ``depth``, ``published`` and ``emails`` tables and its ``marks``.
    """
    fig = go.Figure()
    d = run.depth
    fig.add_trace(go.Scatter(x=d["t"], y=d["waiting"], name="waiting in the queue", stackgroup="q",
                             mode="lines", line=dict(color="#ff7f0e")))
    fig.add_trace(go.Scatter(x=d["t"], y=d["in_flight"], name="in flight (delivered, not acked)",
                             stackgroup="q", mode="lines", line=dict(color="#d62728")))
    for column, frame, label, colour in (("acked", run.published, "published so far", "#1f77b4"),
                                         ("at", run.emails, "emails sent so far", "#2ca02c")):
        times = frame[column].sort_values().to_numpy()
        fig.add_trace(go.Scatter(x=times, y=list(range(1, len(times) + 1)), name=label, mode="lines",
                                 line=dict(color=colour, dash="dot", shape="hv")))
    for at, label in run.marks:
        fig.add_vline(x=at, line_dash="dash", line_color="#555", annotation_text=label,
                      annotation_textangle=-90, annotation_position="top left")
    return framed(fig, title=title or f"{run.experiment}: jobs on the broker over time", height=380,
                  xaxis_title="seconds since the run began", yaxis_title="jobs")


def publish_latency(published) -> go.Figure:
    """How long each publish waited for the broker's acknowledgement, against when it was sent.

    ``published`` is a ``QueueRun.published`` table: ``service, sent, latency_ms`` per job.
    """
    fig = go.Figure()
    for service, rows in published.groupby("service", sort=False):
        fig.add_trace(go.Scatter(x=rows["sent"], y=rows["latency_ms"], mode="markers", name=service,
                                 marker=dict(size=6)))
    return framed(fig, title="Publish latency: time until the broker has the job", height=340,
                  xaxis_title="seconds since the run began", yaxis_title="ms")
