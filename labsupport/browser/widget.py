"""The browser client widget: the learner's own browser as one more measured client.

``browser_client("sse")`` returns a panel to display. When JupyterLab shows it, the page runs
the real browser API (``client.js``) against a lab server, directly and through
jupyter-server-proxy, beside a Python client of the same server; when the run is over the
panel shows the claims it checked, a table and the timeline of all clients.

Without a browser (nbval, ``nbconvert --execute``) nothing starts: the panel's plain text says
in one line that the browser's side was not run, and ``panel.verdicts`` lists its checks as not
run (``None``), never as passed.
"""

from __future__ import annotations

import html
import pathlib

import anywidget
import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go
import traitlets

from ..lab import LabError, lab
from ..plots import timeline
from ..results import Result
from .session import BrowserRun
from .verdicts import Verdict, judge

NOT_RUN = "open this notebook in JupyterLab to run the browser's side"


class BrowserClient(anywidget.AnyWidget):
    """The front end of one browser run; speaks to ``client.js`` with custom messages."""

    _esm = pathlib.Path(__file__).with_name("client.js")
    plan = traitlets.Dict().tag(sync=True)
    state = traitlets.Unicode("waiting").tag(sync=True)   # waiting, running, done, failed
    status = traitlets.Unicode("").tag(sync=True)
    report = traitlets.Unicode("").tag(sync=True)


class BrowserPanel(widgets.VBox):
    """The widget, its report and the timeline, bound to one ``BrowserRun``."""

    def __init__(self, run: BrowserRun, *, title: str) -> None:
        self.run = run
        self.title = title
        self.client = BrowserClient(plan={"pattern": run.pattern, "routes": list(run.routes),
                                          "interval_ms": run.interval * 1000, "refuse": run.pattern == "sse",
                                          "hold_ms": run.duration * 1000 / 4},
                                    status=f"{title}: waiting for the browser…")
        self.figure = go.FigureWidget()
        self.plots = widgets.Box([self.figure], layout=widgets.Layout(display="none"))  # shown when done
        self.result: Result | None = None
        self.verdicts: list[Verdict] = [Verdict(s, None, "not run") for s in self.planned()]
        self._begun = False
        self.client.on_msg(self._on_message)
        super().__init__([self.client, self.plots])

    def planned(self) -> list[str]:
        """What this run would check, for the headless report."""
        return [f"the browser ({self.run.spec.api}) connected {route}" for route in self.run.routes] + [
            f"{self.run.pattern}: the browser's own measurements (latency, order, what the server saw)"]

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        data["text/plain"] = f"{self.title}: {NOT_RUN} ({len(self.verdicts)} browser checks not run)."
        return bundle

    # -- messages from the browser --------------------------------------------------------------

    def _on_message(self, _widget, message: dict, _buffers) -> None:
        try:
            self._handle(message)
        except Exception as problem:  # a comm handler has no cell to show a traceback in
            self._fail(f"{type(problem).__name__}: {problem}")

    def _handle(self, message: dict) -> None:
        kind = message.get("kind")
        if kind == "hello":
            if self.client.state != "waiting":
                return  # a second view of a panel that already ran
            self.client.state = "running"
            self.client.status = f"{self.title}: starting the server, aligning clocks…"
            lab.browser_started(self.client.model_id)
            ports = lab.run(self.run.start(str(message.get("origin", ""))), timeout=30)
            self.client.send({"kind": "start", **ports})
            return
        log = self.run.logs.get(message.get("route"))
        if log is None:
            return
        if kind == "clock":
            log.samples = [tuple(map(float, s)) for s in message.get("samples", [])]
        elif kind == "ready":
            log.ready = True
        elif kind == "failed":
            log.failed = f"the browser could not connect {log.route}: {message.get('why', '')}"
            log.done = True
        elif kind in ("log", "done"):
            log.take(message)
            log.done = kind == "done"
        if not self._begun and all(l.ready or l.failed for l in self.run.logs.values()):
            self._begun = True
            lab.run(self.run.begin(), timeout=30)
            self.client.send({"kind": "go", "run_ms": (self.run.duration + self.run.drain) * 1000})
            self.client.status = f"{self.title}: running for {self.run.duration:.0f} s…"
        if self._begun and all(l.done for l in self.run.logs.values()):
            self._finish()

    def _finish(self) -> None:
        self.run.browser_done()
        self.result = lab.run(self.run.result(), timeout=30)
        self.verdicts = judge(self.run, self.result)
        self.client.report = self.report_html()
        self.client.state = "done"
        self.client.status = f"{self.title}: done."
        if self.run.pattern != "chat":
            self._draw()
        lab.browser_ended(self.client.model_id)

    def _fail(self, why: str) -> None:
        self.client.state = "failed"
        self.client.status = f"{self.title}: {why}"
        lab.submit(self.run.stop())
        lab.browser_ended(self.client.model_id)

    # -- showing it -----------------------------------------------------------------------------

    def table(self) -> pd.DataFrame:
        """One row per client: events seen and missed, latency, requests."""
        names = self.run.client_names()
        if self.run.pattern == "chat":  # no feed to be late against: who said and heard what
            heard = {log.route: log.notes.get("heard", []) for log in self.run.logs.values()}
            return pd.DataFrame([{"client": name, "messages heard": len(h)} for name, h in
                                 zip(names, [self.run.bot_heard] + list(heard.values()))])
        rows = []
        for client, name in enumerate(names):
            dl = self.result.deliveries[self.result.deliveries["client"] == client]["latency"] * 1000
            rows.append({"client": name, "events seen": len(dl),
                         "missed": len(self.result.events) - len(dl),
                         "latency p50 (ms)": round(dl.median(), 1) if len(dl) else None,
                         "latency p95 (ms)": round(dl.quantile(0.95), 1) if len(dl) else None,
                         "requests": int(((self.result.requests["client"] == client)
                                          & (self.result.requests["sent"] >= 0)).sum())})  # since the feed began
        return pd.DataFrame(rows)

    def report_html(self) -> str:
        marks = {True: ("&#10004;", "#176f2c", "pass"), False: ("&#10008;", "#a11", "fail"),
                 None: ("&#9675;", "#555", "not-run")}
        lines = []
        for v in self.verdicts:
            mark, colour, word = marks[v.holds]
            lines.append(f'<div class="lab-browser-verdict" data-verdict="{word}" style="color:{colour}">'
                         f'{mark} <b>{html.escape(v.statement)}</b> '
                         f'<span style="color:#555">(measured: {html.escape(v.measured)})</span></div>')
        clock = "".join(
            f"<li>{route}: ±{a.uncertainty * 1000:.2f} ms (best of {a.round_trips} round trips)</li>"
            for route in self.run.logs if (a := self.run.alignment(route)) is not None)
        return ("".join(lines) + f"<div>Clock alignment, half the shortest round trip:<ul>{clock}</ul></div>"
                + self.table().to_html(index=False))

    def _draw(self) -> None:
        names = self.run.client_names()
        fig = timeline(self.result, clients=len(names))
        lanes = {f"client {c}": name for c, name in enumerate(names)}
        for trace in fig.data:
            trace.y = [lanes.get(y, y) for y in trace.y]
        fig.layout.yaxis.categoryarray = [lanes.get(y, y) for y in fig.layout.yaxis.categoryarray]
        with self.figure.batch_update():
            self.figure.data = []
            self.figure.add_traces(fig.data)
            self.figure.layout = fig.layout
        self.plots.layout.display = ""


def browser_client(pattern: str, *, title: str | None = None, **options) -> BrowserPanel:
    """A panel that runs ``pattern`` in the learner's browser ("poll", "longpoll", "stream", "sse", "ws").

    ``options``: ``rate`` (events/s), ``duration`` (s), ``interval`` (s, polling), ``cut_at`` (s,
    cut every connection then), ``routes`` (``("direct", "proxy")`` by default).
    """
    try:
        run = BrowserRun(pattern, **options)
    except (TypeError, ValueError) as problem:
        raise LabError(f"The browser client cannot run with these settings: {problem}") from None
    return BrowserPanel(run, title=title or f"Your browser, {run.spec.api}")
