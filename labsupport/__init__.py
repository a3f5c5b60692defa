"""labsupport: real servers, clients and measurements for the client-server course.

A notebook imports what it needs from here; everything runs on the lab loop (see ``lab.py``).
Each chapter's experiments live in ``labsupport.experiments``; its exercises in
``labsupport.exercises``.
"""

from .checks import ClaimFailed, Exercise, claim, show_progress
from .experiments import Run, Workload, measure, run_polling, run_push, sweep
from .feed import Event, Feed
from .lab import LabError, Server, lab, on_lab_loop, shutdown, start_meter, start_server, stop_server
from .plots import latency_histogram, sweep_plot, timeline, traffic_bars
from .results import Result
from .source import show_source
from .widgets import ControlPanel, int_slider, slider
from .wire import Link, WireCounts, WireMeter

__all__ = [
    "ClaimFailed", "ControlPanel", "Event", "Exercise", "Feed", "LabError", "Link", "Result", "Run",
    "Server", "WireCounts", "WireMeter", "Workload", "claim", "int_slider", "lab", "latency_histogram",
    "measure", "on_lab_loop", "run_polling", "run_push", "show_progress", "show_source", "shutdown", "slider",
    "start_meter", "start_server", "stop_server", "sweep", "sweep_plot", "timeline", "traffic_bars",
]
