"""labsupport: real servers, clients and measurements for the client-server course.

One path per thing (see ``labsupport/README.md`` for the map):

* ``from labsupport import ...``: the lab itself, the same in every chapter: servers and the
  lab loop, wire meters, feeds, ``Workload``/``measure``/``sweep``, results, plots, claims and
  control panels (the names in ``__all__``);
* ``from labsupport.experiments.<chapter> import run_...``: a chapter's experiments;
* ``from labsupport.patterns.<pattern> import ...``: a pattern's server and client;
* ``from labsupport.costs import ...``: the cost model and decision guide (no I/O);
* ``from labsupport.exercises.chNN import q1, ...``: a chapter's exercises.
"""

from .checks import (ClaimFailed, ClaimNotJudged, Exercise, claim_at_least, claim_at_most, claim_between,
                     claim_equal, claim_near, show_progress)
from .experiments.core import Run, Workload, measure, sweep
from .feed import Event, Feed
from .lab import LabCall, LabError, Server, lab, on_lab_loop, shutdown, start_meter, start_server, stop_server
from .plots import ladder, latency_histogram, sweep_plot, timeline, traffic_bars
from .results import Result
from .source import show_source
from .widgets import ControlPanel, int_slider, slider
from .wire import Link, WireCounts, WireMeter
from .wireshark import tshark_view

__all__ = [
    "ClaimFailed", "ClaimNotJudged", "ControlPanel", "Event", "Exercise", "Feed", "LabCall", "LabError", "Link", "Result", "Run",
    "Server", "WireCounts", "WireMeter", "Workload", "claim_at_least", "claim_at_most",
    "claim_between", "claim_equal", "claim_near", "int_slider", "lab", "ladder", "latency_histogram",
    "measure", "on_lab_loop", "show_progress", "show_source", "shutdown", "slider", "start_meter",
    "start_server", "stop_server", "sweep", "sweep_plot", "timeline", "traffic_bars", "tshark_view",
]
