"""labsupport: real servers, clients and measurements for the client-server course.

A notebook imports what it needs from here; everything runs on the lab loop (see ``lab.py``).
"""

from .experiments import Workload, measure, run_pull, run_push, sweep
from .feed import Event, Feed
from .lab import LabError, Server, lab, on_lab_loop, shutdown, start_server, stop_server
from .results import Result
from .wire import Link, WireCounts, WireMeter

__all__ = [
    "Event", "Feed", "LabError", "Link", "Result", "Server", "WireCounts", "WireMeter", "Workload",
    "lab", "measure", "on_lab_loop", "run_pull", "run_push", "shutdown", "start_server",
    "stop_server", "sweep",
]
