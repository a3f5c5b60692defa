"""Plotly figures, built from a run's tables: the one part of ``labsupport`` that speaks plotly.

Each builder returns a ``go.Figure``; a notebook shows it by leaving it as the cell's value. The
figures every chapter uses are also on the package's face (``from labsupport import timeline``);
a chapter's own come from here (``from labsupport.plots import queue_depth``). Experiments
return data, and a figure is built from it here. What every figure shares (margins, marks, log
axes) is in ``_style``.
"""

from ._choosing import comparison, connection_memory, crossover, idle_connections, needs_at_scale
from ._cluster import deliveries_over_time, publish_gaps, sequence_diagram
from ._ladder import ladder
from ._polling import events_lost, one_poll, poll_bytes, requests_per_client, wait_for_poll, waiting_clients
from ._production import reconnect_storms, webhook_attempts
from ._pull_push import held_memory
from ._queues import publish_latency, queue_depth
from ._runs import latency_histogram, sweep_plot, timeline, traffic_bars
from ._style import MARGIN, framed, mark_x, tidy_log_axes
from ._websocket import duplex_lanes, frame_overhead_bars, outbox_over_time, round_trip_histogram

__all__ = [
    "MARGIN", "comparison", "connection_memory", "crossover", "deliveries_over_time", "duplex_lanes", "events_lost",
    "frame_overhead_bars", "framed", "held_memory", "idle_connections", "ladder", "latency_histogram", "mark_x",
    "needs_at_scale", "one_poll", "outbox_over_time", "poll_bytes", "publish_gaps", "publish_latency", "queue_depth",
    "reconnect_storms", "requests_per_client", "round_trip_histogram", "sequence_diagram", "sweep_plot",
    "tidy_log_axes", "timeline", "traffic_bars", "wait_for_poll", "waiting_clients", "webhook_attempts",
]
