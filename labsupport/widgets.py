"""Control panels: sliders bound to an experiment's settings, a Run button, progress, plots.

A panel only calls the same plain function a cell can call (``run_polling``, ``run_push``, or any
plain function such as the decision guide's),
so ``panel.run()`` in a cell does exactly what the button does; that is how CI exercises it.
Bad settings show a short message in the panel, never a traceback.

Results are shown as widgets inside the panel (plotly ``FigureWidget``, HTML tables), not
through an ``Output`` widget: output captured into an ``Output`` widget makes headless
runners such as ``jupyter nbconvert --execute`` stall (nbclient's stand-in for the widget
talks to the kernel on the same socket it waits on), and the widgets work the same in
JupyterLab.
"""

from __future__ import annotations

import html
import math
import time
from typing import Any, Callable, Iterable

import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go
from IPython.display import display
from plotly.basedatatypes import BaseFigure

from .lab import LabCall, LabError, lab

QUEUED_CLICK = 0.3  # s: a click handled this soon after a run ended was made during it


def slider(description: str, low: float, high: float, step: float, value: float, *, unit: str = "") -> widgets.FloatSlider:
    """A float slider that only reruns on release, labelled with its unit."""
    return widgets.FloatSlider(value=value, min=low, max=high, step=step, description=description,
                               readout_format=".2f", continuous_update=False,
                               style={"description_width": "initial"},
                               tooltip=unit, layout=widgets.Layout(width="420px"))


def int_slider(description: str, low: int, high: int, value: int, step: int = 1) -> widgets.IntSlider:
    return widgets.IntSlider(value=value, min=low, max=high, step=step, description=description,
                             continuous_update=False, style={"description_width": "initial"},
                             layout=widgets.Layout(width="420px"))


def as_widget(item: Any) -> widgets.Widget:
    """A widget that shows ``item``: a live plotly figure, an HTML table, or its HTML form."""
    if isinstance(item, widgets.Widget):
        return item
    if isinstance(item, BaseFigure):
        return go.FigureWidget(item)
    if isinstance(item, (pd.DataFrame, pd.Series)):
        return table_widget(item.to_frame() if isinstance(item, pd.Series) else item)
    if hasattr(item, "_repr_html_"):
        return widgets.HTML(item._repr_html_())
    return widgets.HTML(f"<pre>{html.escape(str(item))}</pre>")


# the columns of a run's summary a learner reads first; the others are a click away
KEY_COLUMNS = ("pattern", "clients", "events", "delivered", "missed", "latency_p50_ms", "latency_p95_ms",
               "requests_per_s", "empty_share", "connections_opened", "bytes_per_event", "errors")
MAX_COLUMNS = 8


def _html_table(frame: pd.DataFrame) -> str:
    """Numbers rounded for reading; a wide table scrolls instead of being cut off."""
    shown = frame.round(2).to_html(float_format=lambda v: f"{v:,.2f}".rstrip("0").rstrip("."))
    return f'<div style="overflow-x: auto; max-width: 100%">{shown}</div>'


def table_widget(frame: pd.DataFrame) -> widgets.Widget:
    """A table with at most ``MAX_COLUMNS`` columns (the key ones first); the full table folds open."""
    if len(frame.columns) <= MAX_COLUMNS:
        return widgets.HTML(_html_table(frame))
    key = [c for c in KEY_COLUMNS if c in frame.columns] or list(frame.columns)
    key = key[:MAX_COLUMNS]
    everything = widgets.Accordion(children=[widgets.HTML(_html_table(frame))],
                                   titles=(f"all {len(frame.columns)} columns",), selected_index=None)
    return widgets.VBox([widgets.HTML(_html_table(frame[key])), everything])


def ladder_view(result: Any) -> widgets.Widget | None:
    """A folded "sequence diagram" view of a run (or of several, side by side), drawn when opened."""
    from .plots import ladder
    from .results import Result

    runs = result if isinstance(result, dict) else {"": result}
    if not runs or not all(isinstance(r, Result) for r in runs.values()):
        return None
    holder = widgets.VBox()
    view = widgets.Accordion(children=[holder], titles=("sequence diagram: who sent what, when",), selected_index=None)

    def draw(change) -> None:
        if change["new"] == 0 and not holder.children:
            holder.children = [as_widget(ladder(result, connections=[0]) if isinstance(result, dict) else ladder(result))]

    view.observe(draw, "selected_index")
    return view


class ControlPanel:
    """Controls for one experiment; the Run button runs it and redraws its figures."""

    def __init__(self, experiment: Callable, controls: dict[str, widgets.ValueWidget],
                 show: Callable[[Any], Iterable], *, fixed: dict | None = None, title: str = "",
                 button: str = "Run") -> None:
        self.experiment = experiment
        self.controls = controls
        self.show = show
        self.fixed = fixed or {}
        self.button = widgets.Button(description=button, button_style="primary", icon="play")
        self.bar = widgets.FloatProgress(min=0.0, max=1.0, layout=widgets.Layout(width="300px"))
        self.status = widgets.HTML()
        self.results = widgets.VBox()
        self._finished = -math.inf  # when the last run started by a click ended (time.monotonic)
        self.button.on_click(self._clicked)
        header = [widgets.HTML(f"<b>{title}</b>")] if title else []
        self.widget = widgets.VBox(header + list(controls.values()) +
                                   [widgets.HBox([self.button, self.bar, self.status]), self.results])
        self.result = None

    def values(self) -> dict:
        return {**self.fixed, **{name: w.value for name, w in self.controls.items()}}

    def _clicked(self, _button) -> None:
        """Run, unless the click was queued while the last run went on (a double click).

        The kernel handles one message at a time, so a second click made during a run arrives
        just after it ends; disabling the button cannot stop a click already sent.
        """
        if time.monotonic() - self._finished > QUEUED_CLICK:
            try:
                self.run()
            finally:
                self._finished = time.monotonic()

    def run(self):
        """Run the experiment with the current settings and show its figures. Returns the result."""
        settings = self.values()
        self.status.value = "running…"
        self.button.disabled = True
        try:
            if isinstance(self.experiment, LabCall):  # work on the lab loop: show its progress here
                seconds = self.experiment.seconds(**settings)
                self.result = lab.run(self.experiment.coro(**settings), expected_seconds=seconds, label="running",
                                      bar=self.bar)
            else:
                self.result = self.experiment(**settings)
        except (LabError, ValueError) as problem:
            self.status.value = f'<span style="color:#a11">Could not run with these settings: {problem}</span>'
            return None
        finally:
            self.button.disabled = False
        overload = self.result.overload() if hasattr(self.result, "overload") else ""
        self.status.value = (f'<span style="color:#a60">done, but {html.escape(overload)}</span>' if overload
                             else "done")
        for old in self.results.children:
            old.close()
        views = [as_widget(item) for item in self.show(self.result)]
        self.results.children = views + [view for view in [ladder_view(self.result)] if view is not None]
        return self.result

    def _ipython_display_(self) -> None:
        display(self.widget)
