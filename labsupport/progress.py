"""A progress bar for work that takes more than a couple of seconds.

In a notebook it is an ipywidgets bar with a label; anywhere else (plain Python, pytest) it
shows nothing. Progress is estimated from elapsed time against the expected duration, which
every experiment knows in advance.
"""

from __future__ import annotations

SHOW_AFTER_SECONDS = 2.0
OVERRUN = 2.0  # a run taking this many times its expected duration (plus a second) is overloaded


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class Progress:
    """A bar that fills as elapsed time approaches the expected duration."""

    def __init__(self, label: str, expected_seconds: float, bar=None) -> None:
        self.label = label
        self.expected = max(expected_seconds, 1e-6)
        self.bar = bar

    @classmethod
    def maybe(cls, label: str, expected_seconds: float | None, bar=None) -> "Progress":
        """A visible bar if the work is long enough (or a bar widget is given), else a silent one."""
        if bar is None and expected_seconds and expected_seconds >= SHOW_AFTER_SECONDS and _in_kernel():
            import ipywidgets as widgets
            from IPython.display import display

            bar = widgets.FloatProgress(min=0.0, max=1.0, description=label, style={"description_width": "initial"},
                                        layout=widgets.Layout(width="auto", max_width="640px"))
            display(bar)
        if bar is not None:
            bar.value, bar.bar_style = 0.0, ""
        return cls(label, expected_seconds or 0.0, bar)

    def update(self, elapsed: float) -> None:
        if self.bar is not None:
            self.bar.value = min(0.99, elapsed / self.expected)
            if elapsed > OVERRUN * self.expected + 1.0 and self.bar.bar_style != "warning":
                self.bar.bar_style = "warning"
                self.bar.description = "overloaded"
                self.bar.tooltip = (f"{self.label}: more than twice the {self.expected:.0f} s expected; the lab "
                                    "cannot keep up with these settings")

    def close(self, done: bool) -> None:
        if self.bar is not None:
            self.bar.value = 1.0 if done else self.bar.value
            self.bar.bar_style = "success" if done else "danger"
