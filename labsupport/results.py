"""What an experiment measured: tidy tables, the wire counters, and a one-line summary.

Times in the tables are seconds since the feed started, so plots of different runs line up.
Latency is ``seen - created`` for the first time a client sees an event. *Staleness* asks a
different question: after an update exists, how long until the client holds it *or something
newer*? Polling for a latest value can skip updates (they are *missed*) yet stay fresh enough;
staleness captures that, latency alone does not.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .capture import http_messages
from .feed import Event
from .pcap import save_capture
from .record import Recorder
from .wire import Connection, WireCounts

OVERLOADED_BEHIND = 0.2  # s the feed may fall behind its schedule before a run counts as overloaded


class Rows:
    """What a result whose data is one table shares: its ``rows`` field (a DataFrame), ``table()`` to
    read them, and the table as a notebook shows it. Facts beside the rows are named fields, never
    ``DataFrame.attrs``, which most pandas operations drop."""

    rows: pd.DataFrame

    def table(self) -> pd.DataFrame:
        return self.rows

    def _repr_html_(self) -> str:
        return self.rows.to_html(index=not isinstance(self.rows.index, pd.RangeIndex))


@dataclass
class Result:
    """One run of one pattern under one workload."""

    pattern: str
    settings: dict[str, Any]
    events: pd.DataFrame          # seq, created
    deliveries: pd.DataFrame      # client, seq, created, seen, latency
    requests: pd.DataFrame        # client, sent, answered, status, new_events, empty
    connections: pd.DataFrame     # id, opened, closed, bytes_up, bytes_down, cut, client_port, meter_port, end_up, end_down
    wire: WireCounts
    duration: float
    heads: list[tuple[bytes, bytes]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    window: WireCounts | None = None      # the meter's counts over the feed's window alone
    server_cpu_s: float | None = None     # the server's CPU time in that window (own process only)
    server_rss: int | None = None         # the server's resident memory at its end (own process only)
    served: pd.DataFrame | None = None  # connection, arrived: each request as the server saw it, if counted
    captures: dict[int, list] = field(default_factory=dict)  # connection id -> the meter's logged chunks
    started_at: float = 0.0  # the wall clock (s since the epoch) at time 0, the feed's start

    @classmethod
    def build(cls, pattern: str, settings: dict, events: list[Event], recorders: list[Recorder],
              connections: list[Connection], wire: WireCounts, started: float, duration: float) -> "Result":
        created = {e.seq: e.created - started for e in events}
        ev = pd.DataFrame({"seq": list(created), "created": list(created.values())})
        rows = [(r.client, seq, seen - started) for r in recorders for seq, seen in r.seen]
        dl = pd.DataFrame(rows, columns=["client", "seq", "seen"])
        dl = dl.drop_duplicates(["client", "seq"]).reset_index(drop=True)  # first sighting counts
        dl.insert(2, "created", dl["seq"].map(created))
        dl["latency"] = dl["seen"] - dl["created"]
        rq = pd.DataFrame(
            [(r.client, q.sent - started, q.answered - started, q.status, q.new_events)
             for r in recorders for q in r.requests],
            columns=["client", "sent", "answered", "status", "new_events"],
        )
        rq["empty"] = rq["new_events"] == 0

        def ended(c: Connection, direction: str) -> float | None:  # when its end of stream crossed the client's leg
            read, passed = c.ends.get(direction, (None, None))
            at = read if direction == "up" else passed
            return None if at is None else at - started

        cn = pd.DataFrame(
            [(c.id, c.opened - started, None if c.closed is None else c.closed - started,
              c.bytes_up, c.bytes_down, c.cut, *c.ports, ended(c, "up"), ended(c, "down")) for c in connections],
            columns=["id", "opened", "closed", "bytes_up", "bytes_down", "cut", "client_port", "meter_port",
                     "end_up", "end_down"],
        )
        heads = [(bytes(c.head_up), bytes(c.head_down)) for c in connections]
        errors = [e for r in recorders for e in r.errors]
        captures = {c.id: [(way, read - started, delivered - started, data) for way, read, delivered, data in c.chunks]
                    for c in connections if c.chunks}
        return cls(pattern, settings, ev, dl, rq, cn, wire, duration, heads, errors, captures=captures,
                   started_at=time.time() - time.monotonic() + started)

    # -- derived measures -----------------------------------------------------------------

    @property
    def clients(self) -> int:
        return int(self.settings.get("clients", 1))

    def staleness(self) -> pd.DataFrame:
        """For every (client, event): seconds until the client held that event or a newer one.

        NaN where the client never caught up before the run ended.
        """
        frames = []
        for client in range(self.clients):
            mine = self.deliveries[self.deliveries["client"] == client].sort_values("seen")
            newest = np.maximum.accumulate(mine["seq"].to_numpy()) if len(mine) else np.array([])
            idx = np.searchsorted(newest, self.events["seq"].to_numpy(), side="left")
            seen = np.append(mine["seen"].to_numpy(dtype=float), np.nan)[idx]
            frames.append(pd.DataFrame({
                "client": client, "seq": self.events["seq"].to_numpy(),
                "staleness": seen - self.events["created"].to_numpy(),
            }))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            columns=["client", "seq", "staleness"])

    def summary(self) -> dict[str, Any]:
        """The headline numbers of the run, in the units a learner reads (ms, per second, bytes)."""
        lat = self.deliveries["latency"].to_numpy() * 1000
        pairs = len(self.events) * self.clients
        in_window = self.requests[self.requests["sent"].between(0, self.duration)]
        delivered = len(self.deliveries)
        stale = self.staleness()["staleness"].to_numpy() * 1000

        def pct(values, q):
            return float(np.percentile(values, q)) if len(values) else float("nan")

        return {
            "pattern": self.pattern,
            "clients": self.clients,
            "events": len(self.events),
            "delivered": delivered,
            "missed": pairs - delivered,
            "missed_share": (pairs - delivered) / pairs if pairs else 0.0,
            "latency_p50_ms": pct(lat, 50),
            "latency_p95_ms": pct(lat, 95),
            "latency_p99_ms": pct(lat, 99),
            "latency_max_ms": float(lat.max()) if len(lat) else float("nan"),
            "latency_mean_ms": float(lat.mean()) if len(lat) else float("nan"),
            "staleness_mean_ms": float(np.nanmean(stale)) if np.isfinite(stale).any() else float("nan"),
            "requests": len(self.requests),
            "requests_per_s": len(in_window) / self.duration,
            "served_per_s": self.served_per_s(),
            "empty_share": float(in_window["empty"].mean()) if len(in_window) else float("nan"),
            "connections_opened": self.wire.connections_opened,
            "peak_open_connections": self.wire.peak_open,
            "bytes_up": self.wire.bytes_up,
            "bytes_down": self.wire.bytes_down,
            "bytes_per_event": self.wire.bytes_total / delivered if delivered else float("nan"),
            "errors": len(self.errors),
        }

    def served_per_s(self) -> float:
        """Requests a second that reached the server in the feed's window, counted one by one where
        they arrived (NaN where the server did not count them): a poll a client skipped is missing
        from the count."""
        if self.served is None:
            return float("nan")
        return float(self.served["arrived"].between(0, self.duration).sum()) / self.duration

    @property
    def feed_behind(self) -> float:
        """The most the feed fell behind its schedule (s): a sign the lab was overloaded."""
        return float(self.events["late"].max()) if "late" in self.events and len(self.events) else 0.0

    def overload(self) -> str:
        """What to tell the learner when the lab could not keep up with the run, or "" when it could.

        The feed publishes on the lab loop's clock; when it falls behind, the loop was too busy
        (too many clients or events for one Python thread), and latencies measure that, not the pattern.
        """
        if self.feed_behind <= max(OVERLOADED_BEHIND, 0.05 * self.duration):
            return ""
        return (f"the lab was overloaded: the feed fell {self.feed_behind:.1f} s behind its schedule, so "
                "latencies measure a busy Python thread more than the pattern. Lower the event rate or the "
                "number of clients (or shorten the run).")

    # -- showing it -----------------------------------------------------------------------

    def table(self) -> pd.DataFrame:
        """The summary as a one-row table (rounded for reading)."""
        return pd.DataFrame([self.summary()]).round(3)

    def _repr_html_(self) -> str:
        return f"<b>{self.pattern}</b> {self.settings}<br>" + self.table().to_html(index=False)

    def save_capture(self, path: str | Path) -> Path:
        """Write the run's connections to ``path`` as a pcapng file for Wireshark (see ``pcap.py``).

        One TCP conversation per connection, on the client's leg of the wire meter (client <-> meter,
        127.0.0.1, real ports): what the client sent timed when the meter read it, what it received
        timed when the meter passed it on. Needs the meter's byte log, which runs built on ``measure``
        keep (up to 2 MB each).
        """
        return save_capture(path, self, pattern=self.pattern, run=str(self.settings))

    def first_exchange(self) -> tuple[str, str]:
        """The first request and its answer on the first connection, decoded for reading.

        An answer that never completes (a stream) is shown as far as the meter kept it.
        """
        up, down = self.heads[0] if self.heads else (b"", b"")
        first = [(http_messages(raw) or [raw])[0] for raw in (up, down)]
        return first[0].decode("latin-1"), first[1].decode("latin-1")
