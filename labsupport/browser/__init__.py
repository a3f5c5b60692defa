"""The learner's browser as a measured client of the lab's servers (see ``widget.py``)."""

from .clock import Alignment, align
from .widget import BrowserPanel, browser_client

__all__ = ["Alignment", "BrowserPanel", "align", "browser_client"]
