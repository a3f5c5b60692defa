"""The cost model and the decision guide: measured unit costs, multiplied out on paper. No I/O.

Chapter 7 measures what one request, one delivered event and one held connection cost the
server (``unit_costs``, from ``experiments.choosing``'s runs); everything here is arithmetic on
those numbers, with every assumption named in an argument:

* ``project`` multiplies them out to any number of clients, per pattern;
* ``cheaper_on_paper`` asks which of pull and push needs fewer servers over a grid;
* ``published_comparison`` sets the classic published polling figure beside this lab's;
* ``recommend`` is the decision guide: it filters the patterns a need rules out, then picks the
  cheapest of the rest by the projected cost (``decision_panel.py`` puts it behind sliders).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

KEEPALIVE_BYTES, KEEPALIVE_EVERY = 20, 30.0   # an SSE comment, a WebSocket ping/pong, a NATS PING/PONG
REFERENCE_SERVER = {"cores": 8, "memory_gb": 16, "network_gbit": 1.0}


def unit_costs(comparison, memory) -> pd.DataFrame:
    """Measured cost per unit of work, per pattern: what the projections multiply out.

    ``comparison`` is ``run_all_patterns``'s result, ``memory`` ``measure_connection_memory``'s.

    * bytes and server CPU per request (polling, long polling) or per delivered event (push);
    * set-up bytes per connection (a stream's handshake, paid once per client);
    * memory per held connection (slope of the server's RSS, from ``measure_connection_memory``).

    CPU time under three ticks of its clock is left as NaN (unknown): the broker's comes from
    the operating system in 10 ms ticks, too coarse to divide.
    """
    per_connection = memory.per_connection
    rows = {}
    for name, run in comparison.runs.items():
        pulls = name in ("polling", "long polling")
        units = run.requests_in_window() if pulls else run.deliveries_in_window()
        first = run.result.wire.bytes_total - run.window.bytes_total
        cpu_ms = 1000 * run.server_cpu_s / max(units, 1) if run.server_cpu_s > 3 * run.cpu_tick_s else float("nan")
        rows[name] = {
            "unit": "request" if pulls else "delivered event",
            "bytes_per_unit": run.window.bytes_total / max(units, 1),
            "cpu_ms_per_unit": cpu_ms,
            "setup_bytes_per_connection": 0.0 if pulls else first / max(run.result.wire.connections_opened, 1),
            "memory_kb_per_connection": per_connection.get(name, float("nan")) / 1000,
        }
    return pd.DataFrame(rows).T


def project(units: pd.DataFrame, *, clients: int, rate: float, interval: float, hold: float = 20.0,
            keep_alive_timeout: float = 5.0, server: dict = REFERENCE_SERVER) -> pd.DataFrame:
    """Bandwidth, request rate, memory and cores for ``clients`` clients, per pattern, on paper.

    The assumptions, all in the arguments: every client follows the same feed of ``rate``
    events per second; pollers ask every ``interval`` seconds and keep no idle connection when
    the interval is longer than ``keep_alive_timeout`` (servers drop idle connections after
    5 s (Apache) to 75 s (nginx)); a long-polling client makes one request per event and one
    per ``hold`` without news; a held stream sends a keepalive of ``KEEPALIVE_BYTES`` every
    ``KEEPALIVE_EVERY`` s; costs grow linearly (no batching, no compression, no HTTP/2); bytes
    are TCP payload, so TLS records and TCP/IP headers and acknowledgements come on top; CPU is
    this Python server's, so cores are an upper bound for a compiled server and the ratios
    between patterns are what carry over (a Python server uses one core per process, so a
    machine's cores mean as many processes); kernel socket memory is not counted; kB, MB and GB
    are 1000, 10⁶ and 10⁹ bytes. ``servers`` is how many ``server`` machines the busiest resource
    needs, with no headroom.
    """
    rows = {}
    for name, u in units.iterrows():
        if name == "polling":
            requests = clients / interval
            units_per_s, held = requests, clients if interval < keep_alive_timeout else 0
            standing = 0.0
        elif name == "long polling":
            requests = clients * (rate + 1 / hold)
            units_per_s, held, standing = requests, clients, 0.0
        else:
            requests = 0.0
            units_per_s, held = clients * rate, clients
            standing = clients * KEEPALIVE_BYTES / KEEPALIVE_EVERY
        bandwidth = units_per_s * u["bytes_per_unit"] + standing
        memory_gb = held * u["memory_kb_per_connection"] * 1000 / 1e9
        cores = units_per_s * u["cpu_ms_per_unit"] / 1000
        mbit = bandwidth * 8 / 1e6
        servers = max(cores / server["cores"], memory_gb / server["memory_gb"], mbit / 1000 / server["network_gbit"])
        if math.isnan(cores) or math.isnan(memory_gb):
            servers = float("nan")  # a cost that could not be measured: no total either
        rows[name] = {"clients": clients, "requests_per_s": requests, "bandwidth_mbit_s": mbit,
                      "held_connections": held, "memory_gb": memory_gb, "cores": cores, "servers": servers}
    return pd.DataFrame(rows).T


def cheaper_on_paper(units: pd.DataFrame, *, rates: tuple[float, ...], clients: tuple[int, ...], max_delay: float,
                     pull: str = "polling", push: str = "sse", **assumptions) -> pd.DataFrame:
    """A grid of clients × event rate: which of ``pull`` and ``push`` needs fewer servers, and by how much.

    Both deliver every event within ``max_delay`` seconds: the poller asks every
    ``min(max_delay, 1 / rate)`` seconds, so it neither waits too long nor skips events. That
    holds for a poll of the latest value (``/latest``, chapters 1-2), which sees one event per
    request. A poll with a cursor (``?after=n``, chapter 3) gets every event since its last
    request at any interval, for about ``H / T + r × f`` bytes a second; this grid does not cost
    that poller. Cells
    read like "push 3.2×": the winner, and the loser's cost over the winner's. Where both need
    under 1 % of one server, the choice does not matter and the cell says so.
    """
    cells = {}
    for rate in rates:
        column = {}
        for n in clients:
            cost = project(units.loc[[pull, push]], clients=n, rate=rate, interval=min(max_delay, 1 / rate),
                           **assumptions)["servers"]
            if cost.max() < 0.01:
                column[n] = "either (< 1 % of a server)"
            else:
                winner = "pull" if cost[pull] <= cost[push] else "push"
                column[n] = f"{winner} {cost.max() / cost.min():.1f}×"
        cells[rate] = column
    table = pd.DataFrame(cells)
    table.index.name, table.columns.name = "clients", "events per second"
    return table


# The classic figure: Lubbers & Greco, "HTML5 Web Sockets: A Quantum Leap in Scalability for the
# Web" (Kaazing, 2010, on websocket.org). A browser's poll carried 871 bytes of request and
# response headers; their use cases poll once a second; a WebSocket frame costs 2 bytes.
PUBLISHED_HEADER_BYTES, PUBLISHED_FRAME_BYTES = 871, 2


def header_traffic(clients: int, interval: float, header_bytes: float) -> float:
    """Megabits per second of header traffic alone: ``clients`` polls every ``interval`` s."""
    return clients * header_bytes * 8 / interval / 1e6


def published_comparison(poll_bytes: float) -> pd.DataFrame:
    """The published polling figures beside the same sums with this lab's measured bytes per poll."""
    rows = []
    for clients, interval in ((1_000, 1.0), (10_000, 1.0), (100_000, 1.0), (10_000, 60.0)):
        published = header_traffic(clients, interval, PUBLISHED_HEADER_BYTES)
        rows.append({"clients": clients, "poll every (s)": interval,
                     "published: 871 B headers (Mbit/s)": published,
                     "as the article prints it (2^20 bits)": published * 1e6 / 2 ** 20,
                     "this lab's poll (Mbit/s)": header_traffic(clients, interval, poll_bytes),
                     "WebSocket, 2 B frames, one message per interval (Mbit/s)":
                         header_traffic(clients, interval, PUBLISHED_FRAME_BYTES)})
    return pd.DataFrame(rows)


# -- the decision guide ------------------------------------------------------------------------

@dataclass(frozen=True)
class Need:
    """A workload described the way a product owner would: what moves, how fast, to whom."""

    name: str
    clients: int
    updates_per_minute: float          # how often the data changes
    max_delay_s: float                 # how late an update may show up
    two_way: bool = False              # clients send often too (chat, games)
    every_update_matters: bool = True  # False: only the latest value counts (a reading, a price board)
    background_work: bool = False      # work for another service to do later, nobody watching (emails)

    def __post_init__(self) -> None:
        if self.clients < 1:
            raise ValueError(f"a workload has at least 1 client, not {self.clients!r}")
        if self.updates_per_minute <= 0 or self.max_delay_s <= 0:
            raise ValueError("updates per minute and the acceptable delay must both be above 0")


CASES = (
    Need("weather panel", clients=50_000, updates_per_minute=0.1, max_delay_s=300, every_update_matters=False),
    Need("stock ticker", clients=100_000, updates_per_minute=600, max_delay_s=0.5),
    Need("news feed", clients=1_000_000, updates_per_minute=2, max_delay_s=5),
    Need("chat", clients=100_000, updates_per_minute=20, max_delay_s=0.3, two_way=True),
    Need("email jobs", clients=3, updates_per_minute=3000, max_delay_s=60, background_work=True),
)


@dataclass
class Recommendation:
    """The guide's answer: a pattern, why, and the projected cost of every candidate."""

    need: Need
    pattern: str
    reasons: list[str]
    costs: pd.DataFrame = field(default_factory=pd.DataFrame)

    def _repr_html_(self) -> str:
        why = "".join(f"<li>{r}</li>" for r in self.reasons)
        return f"<b>{self.need.name}: {self.pattern}</b><ul>{why}</ul>" + self.costs.round(3).to_html()


def recommend(need: Need, units: pd.DataFrame, *, keep_alive_timeout: float = 5.0,
              server: dict = REFERENCE_SERVER) -> Recommendation:
    """Rule out what the need forbids, then take the cheapest remaining pattern by projected servers.

    The rules: background work for another service goes on a queue; clients that send often
    need a two-way connection (WebSocket); polling cannot show an update sooner than its
    interval, and skips updates when they come faster than it polls. That last rule is for a
    poll of the latest value (``/latest``); a poll with a cursor (``?after=n``, chapter 3) skips
    nothing, and the guide does not cost it. The costs are
    ``project(...)`` with the measured ``units``; polling is costed at the interval the delay
    allows.
    """
    if need.background_work:
        return Recommendation(need, "queue", [
            "the work is for another service to do later, not for someone watching: producers hand jobs to a "
            "queue and carry on, the broker keeps them until a consumer acknowledges them (chapter 6)"])
    rate = need.updates_per_minute / 60
    interval = need.max_delay_s
    costs = project(units, clients=need.clients, rate=rate, interval=interval,
                    keep_alive_timeout=keep_alive_timeout, server=server)
    reasons, allowed = [], ["polling", "long polling", "sse", "websocket"]
    if need.two_way:
        allowed = ["websocket"]
        reasons.append("clients send often too: only a WebSocket carries both directions on one connection")
    elif need.every_update_matters and rate * interval > 1:
        allowed.remove("polling")
        reasons.append(f"updates come {rate * interval:.0f}× per allowed delay and every one matters: "
                       "polling the latest value that slowly would skip them")
    candidates = costs.loc[[p for p in allowed if p in costs.index]]
    best = candidates["servers"].idxmin()
    if not need.two_way:
        # For one direction, SSE does what a WebSocket does over plain HTTP: it wins a near tie.
        if best == "websocket" and candidates.loc["sse", "servers"] <= 1.05 * candidates.loc["websocket", "servers"]:
            best = "sse"
        reasons.append(f"cheapest of {', '.join(candidates.index)}: {candidates.loc[best, 'servers']:.3g} "
                       f"reference servers ({server['cores']} cores, {server['memory_gb']} GB) against "
                       + ", ".join(f"{p} {candidates.loc[p, 'servers']:.3g}" for p in candidates.index if p != best))
    return Recommendation(need, best, reasons, costs)


def guide(units: pd.DataFrame, cases: tuple[Need, ...] = CASES) -> pd.DataFrame:
    """The decision guide over the article's cases: one row each, with the reason."""
    rows = []
    for need in cases:
        answer = recommend(need, units)
        rows.append({"case": need.name, "clients": need.clients, "updates/min": need.updates_per_minute,
                     "delay allowed (s)": need.max_delay_s, "recommended": answer.pattern,
                     "why": "; ".join(answer.reasons)})
    return pd.DataFrame(rows).set_index("case")
