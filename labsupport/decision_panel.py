"""The decision guide behind sliders: a learner describes a workload and reads the recommendation.

The guide itself (``costs.recommend``) is arithmetic with no I/O; this is only its panel.
"""

from __future__ import annotations

import ipywidgets as widgets
import pandas as pd

from .costs import Need, Recommendation, recommend
from .widgets import ControlPanel


def decision_panel(units: pd.DataFrame):
    """Describe a workload with sliders; ``run()`` (or the button) shows the guide's recommendation."""
    def advise(**need) -> Recommendation:
        return recommend(Need("your workload", **need), units)

    wide = {"description_width": "initial"}
    controls = {
        "clients": widgets.IntText(value=10_000, description="clients"),
        "updates_per_minute": widgets.FloatLogSlider(value=1, base=10, min=-2, max=4, step=0.1, style=wide,
                                                     description="updates per minute", continuous_update=False),
        "max_delay_s": widgets.FloatLogSlider(value=5, base=10, min=-1, max=3, step=0.1, style=wide,
                                              description="acceptable delay (s)", continuous_update=False),
        "two_way": widgets.Checkbox(value=False, description="clients send often too"),
        "every_update_matters": widgets.Checkbox(value=True, description="every update matters"),
        "background_work": widgets.Checkbox(value=False, description="background work for another service"),
    }
    return ControlPanel(advise, controls, show=lambda answer: [answer], title="Describe your workload",
                        button="Recommend")
