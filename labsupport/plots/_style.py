"""What every figure shares: the margins, the colours of a run's parts, marks and log axes that read well."""

from __future__ import annotations

import math

import plotly.graph_objects as go

MARGIN = dict(l=10, r=10, t=50, b=40)  # a figure's margins: room for the title and the axis labels, no more
NEW, EMPTY, EVENT = "#1f77b4", "#bbbbbb", "#d62728"


def framed(fig: go.Figure, *, title: str = "", height: int = 380, **layout) -> go.Figure:
    """The figure with its title and height, in the course's margins (``layout`` may override them)."""
    fig.update_layout(**{"title": title, "height": height, "margin": MARGIN, **layout})
    return fig


def whole_step(tallest: int) -> int:
    """A tick step for counts: a whole number (1, 2, 5, 10 ...) giving about five ticks."""
    raw = max(tallest / 5, 1)
    power = 10 ** math.floor(math.log10(raw))
    return int(next(m * power for m in (1, 2, 5, 10) if m * power >= raw))


def mark_x(fig: go.Figure, x: float, text: str, *, log_x: bool, dash: str = "dash") -> go.Figure:
    """A dashed vertical line at ``x`` with its label beside it.

    Plotly places a line's shape in data units but an annotation on a log axis in log10 units, so
    ``add_vline(annotation_text=...)`` puts the label at 10**x, stretching the axis far past the
    data; this places the label where the line is.
    """
    fig.add_vline(x=x, line_dash=dash, line_color="#555")
    fig.add_annotation(x=math.log10(x) if log_x else x, y=1, yref="paper", text=text, showarrow=False,
                       xanchor="left", yanchor="top", xshift=4, font=dict(size=11), bgcolor="rgba(255,255,255,0.7)")
    return fig


def tidy_log_axes(fig: go.Figure) -> go.Figure:
    """Label log axes at powers of ten only, with unlabelled minor grid lines between.

    Plotly's default labels every 2 and 5 too on a short log axis, a crowd of small digits.
    """
    for update in (fig.update_xaxes, fig.update_yaxes):
        update(selector=dict(type="log"), dtick=1, minor=dict(ticks="outside", dtick="D1", showgrid=True))
    return fig



def fault_marks(fig: go.Figure, marks: list[tuple[float, str]]) -> None:
    """A dotted red line at each fault (seconds, label), the label written along it."""
    for t, label in marks:
        fig.add_vline(x=t, line_dash="dot", line_color="#a11", annotation_text=label,
                      annotation_textangle=-90, annotation_font_size=10)
