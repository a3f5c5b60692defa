"""Ladder (sequence) diagrams of a run, drawn from the wire meter's captures: time runs down."""

from __future__ import annotations

import html
import re
from collections import Counter, defaultdict
from typing import Mapping

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..capture import messages as parse

LADDER_COLOURS = {"request": "#1f77b4", "response": "#2ca02c", "response head": "#2ca02c", "304 Not Modified": "#8fd18f", "event": "#d62728",
                  "chunk": "#d62728", "comment": "#999999", "retry": "#999999", "end of body": "#555555", "frame up": "#9467bd",
                  "frame down": "#ff7f0e", "publish": "#1f77b4", "PubAck": "#2ca02c", "fetch": "#9467bd",
                  "delivery": "#d62728", "redelivery": "#8c0000", "ack": "#2ca02c", "status": "#999999",
                  "reply": "#999999", "message": "#d62728", "nats control": "#cccccc", "bytes": "#bbbbbb"}
MINOR_KEYS = ("nats control", "comment", "reply", "status", "end of body")  # labelled only where room is left
NATS_KEYS = ("publish", "PubAck", "fetch", "delivery", "redelivery", "ack", "status", "reply", "message")
HELD = 0.01  # a request the server answers later than this (s) is drawn as held
MAX_LANES = 6  # client connections drawn at most; the figure says when there were more


def ladder(source, *, connections=None, start: float | None = None, end: float | None = None,
           names: list[str] | None = None, server: str = "server", fold: bool = True, max_arrows: int = 80,
           labels: bool | None = None, held: bool | None = None, title: str | None = None) -> go.Figure:
    """A sequence diagram of a run, drawn from what the wire meter relayed: time runs down.

    ``source`` is a ``Result``, a list of the meter's connections, or a dict of either (drawn side
    by side). One lane per client connection (or one "client" lane when the run had one client),
    the link when it added latency or was cut, and the server. One arrow per message (see
    ``capture.py``), slanted by the time it spent on the link; a cut connection ends in a cross;
    a request the server held is a bar spanning the wait (by default for long polling, the one
    pattern whose server holds requests; ``held=True`` asks for it). ``connections`` (ids) and ``start``/
    ``end`` (seconds) pick what to draw; with ``fold``, runs of identical exchanges past
    ``max_arrows`` arrows are folded to their first two and last one, and the figure says so.
    ``fig.layout.meta`` counts what was drawn.
    """
    panels = source if isinstance(source, Mapping) else {"": source}
    fig = make_subplots(rows=1, cols=len(panels), shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=[str(n) for n in panels] if len(panels) > 1 else None)
    meta, notes, legend = {}, [], set()  # legend: the entries shown so far, once each across panels
    height = 440 if len(panels) > 1 else 520
    for col, (name, item) in enumerate(panels.items(), start=1):
        lanes = _ladder_lanes(item, names)
        if connections is not None:
            lanes = [lane for lane in lanes if lane["id"] in connections]
        holds = held if held is not None else "long" in str(getattr(item, "pattern", ""))
        say = labels if labels is not None or len(panels) <= 3 else False  # narrow panels: hover only
        counts, note = _draw_ladder(fig, col, lanes, server, start, end, fold, max_arrows, say, holds,
                                    plot_px=height - 160, legend=legend)
        meta[name or "run"] = counts
        notes += [f"{name}: {n}" if name else n for n in note]
    fig.update_annotations(yshift=22)  # the panels' titles, above the lane names
    pattern = getattr(source, "pattern", None)
    fig.update_yaxes(autorange="reversed", title_text="seconds", row=1, col=1)
    fig.update_layout(title=dict(text=title or (f"{pattern}: who sent what, when" if pattern else "Who sent what, when"),
                                 y=0.99, yanchor="top"),
                      height=height, margin=dict(l=10, r=10, t=110 if len(panels) > 1 else 70, b=40 + 18 * len(notes)),
                      meta=meta,
                      legend=dict(orientation="h", y=-0.08 if not notes else -0.08 - 0.04 * len(notes)))
    for i, text in enumerate(notes):
        fig.add_annotation(text=text, xref="paper", yref="paper", x=0, y=1.0, yshift=-4 - 16 * i,
                           xanchor="left", yanchor="top", showarrow=False, font=dict(size=11, color="#555"),
                           bgcolor="rgba(255,255,255,0.8)")
    return fig


def _ladder_lanes(item, names: list[str] | None) -> list[dict]:
    """Connections as lanes: id, name, opened, closed, cut, latency, the logged chunks, bytes seen."""
    if hasattr(item, "captures"):  # a Result; otherwise the meter's connections
        one_client = item.clients == 1
        table = item.connections
        lanes = [dict(id=int(row.id), opened=row.opened, closed=None if pd.isna(row.closed) else row.closed,
                      cut=bool(row.cut), chunks=item.captures.get(int(row.id), []),
                      bytes=int(row.bytes_up + row.bytes_down)) for row in table.itertuples()]
        latency = float(item.settings.get("latency") or 0.0)
        for lane in lanes:
            lane["name"] = "client" if one_client else f"connection {lane['id']}"
            lane["latency"] = latency
        return lanes
    conns = list(item)
    origin = min((c.opened for c in conns), default=0.0)
    lanes = []
    for i, c in enumerate(conns):
        chunks = [(way, read - origin, delivered - origin, data) for way, read, delivered, data in (c.chunks or [])]
        latency = max((d - r for _, r, d, _ in chunks), default=0.0)
        lanes.append(dict(id=c.id, opened=c.opened - origin, closed=None if c.closed is None else c.closed - origin,
                          cut=c.cut, chunks=chunks, bytes=c.bytes_up + c.bytes_down, latency=latency,
                          name=names[i] if names and i < len(names) else f"connection {c.id}"))
    return lanes


def _ladder_key(m) -> str:
    """The legend entry of a message: its kind; which way for frames; what it does for NATS."""
    if m.kind == "frame":
        return f"frame {m.direction}"
    if m.kind == "response" and m.label.startswith("304"):
        return "304 Not Modified"  # an answer without a body: worth telling apart at a glance
    if m.kind == "nats":
        word = m.label.split(" ")[0]
        return word if word in NATS_KEYS else "nats control"
    return m.kind


def _fold_key(messages) -> tuple:
    """What makes two exchanges 'the same' for folding: who sent what, with ids and sizes left out."""
    return tuple((m.direction, m.kind, re.sub(r"\d+", "#", m.label)) for m in messages)


def _exchanges(messages) -> list[list]:
    """Messages grouped into exchanges: a request with its answers, or one pushed message."""
    groups: list[list] = []
    for m in messages:
        if groups and groups[-1][0].kind in ("request", "request head") and m.kind in ("response", "response head"):
            groups[-1].append(m)
        else:
            groups.append([m])
    return groups


def _draw_ladder(fig, col, lanes, server, start, end, fold, max_arrows, labels, holds, plot_px,
                 legend: set) -> tuple[dict, list[str]]:
    def first(name: str) -> bool:
        """Whether ``name`` is new to the legend (each entry once, whichever panel has it first)."""
        new = name not in legend
        legend.add(name)
        return new

    parsed = {lane["id"]: parse(lane["chunks"]) for lane in lanes}
    everything = [m for ms in parsed.values() for m in ms]
    t0 = start if start is not None else min([0.0] + [lane["opened"] for lane in lanes])
    t1 = end if end is not None else max([t0 + 0.001] + [m.arrived for m in everything] +
                                         [lane["closed"] or 0 for lane in lanes])
    lanes = [lane for lane in lanes if lane["opened"] <= t1 and (lane["closed"] is None or lane["closed"] >= t0)]
    notes = []
    lane_names = list(dict.fromkeys(lane["name"] for lane in lanes))
    if len(lane_names) > MAX_LANES:
        notes.append(f"{MAX_LANES} of {len(lane_names)} connections drawn: pick others with connections=[ids] "
                     "or a shorter window with start= and end=")
        lane_names = lane_names[:MAX_LANES]
        lanes = [lane for lane in lanes if lane["name"] in lane_names]
    parsed = {lane["id"]: parsed[lane["id"]] for lane in lanes}
    show_link = any(lane["latency"] > 0 or lane["cut"] for lane in lanes)
    x_of = {name: i for i, name in enumerate(lane_names)}
    link_x = len(lane_names) if show_link else None
    server_x = len(lane_names) + (1 if show_link else 0)
    in_window = {cid: [m for m in ms if t0 <= m.sent <= t1] for cid, ms in parsed.items()}
    total = sum(map(len, in_window.values()))
    folded_count = 0
    drawn: dict[int, list] = {}
    folds = []  # (lane x, from t, to t, how many, what)
    for cid, ms in in_window.items():
        groups, keep = _exchanges(ms), []
        i = 0
        while i < len(groups):
            j = i
            while j + 1 < len(groups) and _fold_key(groups[j + 1]) == _fold_key(groups[i]):
                j += 1
            run = groups[i:j + 1]
            if fold and total > max_arrows and len(run) > 4:
                hidden = run[2:-1]
                n = sum(map(len, hidden))
                folded_count += n
                lane = next(lane for lane in lanes if lane["id"] == cid)
                folds.append((x_of[lane["name"]], hidden[0][0].sent, hidden[-1][-1].arrived, len(hidden),
                              " → ".join(m.kind for m in run[0])))
                run = run[:2] + run[-1:]
            keep += [m for g in run for m in g]
            i = j + 1
        drawn[cid] = keep
    lane_of = {lane["id"]: lane for lane in lanes}
    shown = sum(map(len, drawn.values()))
    if labels is None:
        labels = shown <= 60
    row = dict(row=1, col=col)

    # lifelines: the server and the link across the window, each connection while it was open
    top, bottom = t0, t1
    fig.add_trace(go.Scatter(x=[server_x, server_x], y=[top, bottom], mode="lines", line=dict(color="#444", width=2),
                             hoverinfo="skip", showlegend=False), **row)
    if show_link:
        fig.add_trace(go.Scatter(x=[link_x, link_x], y=[top, bottom], mode="lines", showlegend=False,
                                 line=dict(color="#aaa", width=1, dash="dot"), hoverinfo="skip"), **row)
    xs, ys, hover = [], [], []
    for lane in lanes:
        a, b = max(lane["opened"], t0), min(lane["closed"] if lane["closed"] is not None else t1, t1)
        if a <= b:
            xs += [x_of[lane["name"]]] * 2 + [None]
            ys += [a, b, None]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="#999", width=3), opacity=0.5,
                             hoverinfo="skip", name="connection open", showlegend=first("connection open")), **row)
    starts = [lane for lane in lanes if t0 <= lane["opened"] <= t1]
    fig.add_trace(go.Scatter(x=[x_of[lane["name"]] for lane in starts], y=[lane["opened"] for lane in starts],
                             mode="markers", marker=dict(symbol="circle-open", size=9, color="#777"),
                             name="new connection", showlegend=first("new connection"),
                             hovertext=[f"connection {lane['id']} opened at {lane['opened']:.3f} s" for lane in starts],
                             hoverinfo="text"), **row)

    # arrows, one trace per kind so the legend reads as a key
    traces: dict[str, dict] = defaultdict(lambda: dict(x=[], y=[], text=[], size=[], mx=[], my=[], label=[]))
    counts: Counter = Counter()
    for cid, ms in drawn.items():
        lane = lane_of[cid]
        cx = x_of[lane["name"]]
        for m in ms:
            key = _ladder_key(m)
            counts[key] += 1
            a, b = (cx, server_x) if m.direction == "up" else (server_x, cx)
            t = traces[key]
            t["x"] += [a, b, None]
            t["y"] += [m.sent, m.arrived, None]
            t["size"] += [0, 11, 0]
            first_bytes = html.escape(m.first.decode("latin-1")[:120]).replace("\r\n", "↵<br>").replace("\n", "↵<br>")
            tip = (f"<b>{html.escape(m.label)}</b>, {m.size} B, {'up' if m.direction == 'up' else 'down'}<br>"
                   f"sent {m.sent * 1000:.1f} ms, arrived {m.arrived * 1000:.1f} ms<br><br>{first_bytes}")
            t["text"] += [tip, tip, None]
            t["mx"].append(cx + (0.5 if cx < server_x else -0.5))  # beside its own lane, clear of the others
            t["my"].append((m.sent + m.arrived) / 2)
            t["label"].append(f"{m.label} · {m.size} B")
    line = (t1 - t0) * 14 / plot_px  # one line of label text, in seconds of the time axis
    for key, t in traces.items():
        colour = LADDER_COLOURS.get(key, "#333")
        fig.add_trace(go.Scatter(x=t["x"], y=t["y"], mode="lines+markers", name=key, legendgroup=key,
                                 showlegend=first(key), line=dict(color=colour, width=1.5),
                                 marker=dict(symbol="arrow", angleref="previous", size=t["size"], color=colour),
                                 hovertext=t["text"], hoverinfo="text"), **row)
    if labels:
        kept = defaultdict(list)
        taken: dict = defaultdict(list)  # per x: [label, top, bottom] of the labels placed
        for minor in (False, True):  # what a message does first; greetings and heartbeats where room is left
            for my, mx, text, key in sorted((p for key, t in traces.items() if (key in MINOR_KEYS) == minor
                                             for p in zip(t["my"], t["mx"], t["label"], [key] * len(t["my"]))),
                                            key=lambda p: p[0]):
                clash = [slot for slot in taken[mx] if slot[1] - line < my < slot[2]]
                if not clash:
                    kept[key].append([mx, my, text])
                    taken[mx].append([kept[key][-1], my, my + line])
                elif not minor and clash[0][0][2].count("<br>") < 2 and not any(
                        other is not clash[0] and clash[0][2] < other[1] < clash[0][2] + line for other in taken[mx]):
                    clash[0][0][2] += "<br>" + text  # a request and its answer, a millisecond apart: one label
                    clash[0][2] += line
        for key, points in kept.items():
            mx, my, text = zip(*points)
            fig.add_trace(go.Scatter(x=mx, y=my, mode="text", text=text, showlegend=False, legendgroup=key,
                                     hoverinfo="skip", textposition="bottom center",
                                     textfont=dict(size=10, color=LADDER_COLOURS.get(key, "#333"))), **row)

    # held requests: a bar on the server's lane from the request's arrival to the answer's departure
    bx, by, btip = [], [], []
    for cid, ms in drawn.items() if holds else ():
        for group in _exchanges(ms):
            if group[0].kind in ("request", "request head") and len(group) > 1 and group[1].sent - group[0].arrived > HELD:
                wait = group[1].sent - group[0].arrived
                bx += [server_x, server_x, None]
                by += [group[0].arrived, group[1].sent, None]
                btip += [f"request held {wait * 1000:.0f} ms"] * 2 + [None]
                counts["held"] += 1
    if bx:
        fig.add_trace(go.Scatter(x=bx, y=by, mode="lines", line=dict(color="rgba(31,119,180,0.35)", width=12),
                                 name="request held", showlegend=first("request held"), hovertext=btip, hoverinfo="text"), **row)

    # cuts: a cross where the link dropped the connection
    cuts = [lane for lane in lanes if lane["cut"] and lane["closed"] is not None and t0 <= lane["closed"] <= t1]
    if cuts:
        counts["cut"] += len(cuts)
        fig.add_trace(go.Scatter(x=[link_x] * len(cuts), y=[lane["closed"] for lane in cuts], mode="markers",
                                 marker=dict(symbol="x", size=16, color="#d62728"), name="connection cut",
                                 showlegend=first("connection cut"), hovertext=[f"{lane['name']} cut at {lane['closed']:.3f} s" for lane in cuts],
                                 hoverinfo="text"), **row)

    # a cut connection, then the same client's next connection: the wait before it reconnected
    for name in lane_names:
        mine = sorted((lane for lane in lanes if lane["name"] == name), key=lambda lane: lane["opened"])
        for before, after in zip(mine, mine[1:]):
            if before["cut"] and before["closed"] is not None and t0 <= before["closed"] <= t1:
                x = x_of[name]
                fig.add_trace(go.Scatter(x=[x, x], y=[before["closed"], after["opened"]], mode="lines",
                                         line=dict(color="#d62728", width=2, dash="dot"), showlegend=False,
                                         hoverinfo="skip"), **row)
                fig.add_annotation(x=x, y=(before["closed"] + after["opened"]) / 2, showarrow=False, xanchor="right",
                                   xshift=-6, text=f"waits {(after['opened'] - before['closed']) * 1000:.0f} ms,<br>"
                                   "reconnects", font=dict(size=10, color="#d62728"), **row)

    for x, a, b, n, what in folds:
        fig.add_trace(go.Scatter(x=[x, x], y=[a, b], mode="lines", line=dict(color="#bbb", width=10),
                                 opacity=0.5, showlegend=False, hoverinfo="text",
                                 hovertext=f"{n} more exchanges like “{what}”, folded"), **row)
        fig.add_annotation(x=x, y=(a + b) / 2, text=f"⋮ {n} × {html.escape(what)} folded", showarrow=False,
                           xanchor="left", xshift=8, font=dict(size=10, color="#777"), **row)
    if folded_count:
        notes.append(f"{folded_count} of {total} arrows folded: repeated exchanges show their first two and last one")
    logged = sum(len(c[3]) for lane in lanes for c in lane["chunks"])
    if logged < sum(lane["bytes"] for lane in lanes):
        notes.append(f"the meter's log kept {logged:,} of {sum(lane['bytes'] for lane in lanes):,} bytes: "
                     "later messages are not drawn")
    ticks = lane_names + (["link"] if show_link else []) + [server]
    fig.update_xaxes(tickvals=list(range(len(ticks))), ticktext=ticks, range=[-0.5, len(ticks) - 0.5],
                     showgrid=False, zeroline=False, side="top", **row)
    fig.update_yaxes(range=[t1 + 0.02 * (t1 - t0), t0 - 0.02 * (t1 - t0)], **row)
    counts["folded"] = folded_count
    return dict(counts), notes
