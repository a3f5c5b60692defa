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
from typing import Any, Callable, Iterable

import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go
from IPython.display import display
from plotly.basedatatypes import BaseFigure

from .lab import LabCall, LabError, lab


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
        return widgets.HTML(item.to_frame().to_html() if isinstance(item, pd.Series) else item.to_html())
    if hasattr(item, "_repr_html_"):
        return widgets.HTML(item._repr_html_())
    return widgets.HTML(f"<pre>{html.escape(str(item))}</pre>")


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
        self.button.on_click(lambda _: self.run())
        header = [widgets.HTML(f"<b>{title}</b>")] if title else []
        self.widget = widgets.VBox(header + list(controls.values()) +
                                   [widgets.HBox([self.button, self.bar, self.status]), self.results])
        self.result = None

    def values(self) -> dict:
        return {**self.fixed, **{name: w.value for name, w in self.controls.items()}}

    def run(self):
        """Run the experiment with the current settings and show its figures. Returns the result."""
        settings = self.values()
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
        self.status.value = "done"
        for old in self.results.children:
            old.close()
        self.results.children = [as_widget(item) for item in self.show(self.result)]
        return self.result

    def _ipython_display_(self) -> None:
        display(self.widget)
