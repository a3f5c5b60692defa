"""Chapter 4's experiments: Server-Sent Events on the wire, under load, across a cut, and talking back."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import asdict, dataclass

import aiohttp

from ..feed import Feed
from ..lab import cancel_all, on_lab_loop
from ..patterns import sse
from ..patterns.sse_codec import ServerSentEvent
from ..record import Recorder
from ..results import Result
from ..server_process import ServerProcess
from .core import CutOutcome, Routes, Workload, expected_seconds, measure, measure_cut, metered, served


BACKENDS = ("lab", "process")


def _options(history: int, heartbeat: float | None, retry_ms: int) -> dict:
    return {"history": history, "heartbeat": heartbeat, "retry": retry_ms}


def _run_sse_seconds(kwargs: dict) -> float:
    """``expected_seconds``, plus about a second to start a server process."""
    return expected_seconds(kwargs) + (1.0 if kwargs.get("backend") == "process" else 0.0)


@on_lab_loop(expected=_run_sse_seconds)
async def run_sse(*, rate: float = 5.0, clients: int = 1, duration: float = 2.0, latency: float = 0.0,
                  history: int = sse.HISTORY, heartbeat: float | None = sse.HEARTBEAT,
                  retry_ms: int = sse.RETRY_MS, arrivals: str = "fixed", value: str = "ticker",
                  seed: int | None = None, backend: str = "lab") -> Result:
    """Clients follow one event stream each (see ``patterns/sse.py``).

    ``backend="process"`` runs the server in a process of its own (``ServerProcess``), so that a
    fan-out to hundreds of clients does not share the server's thread with those clients.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}.")
    if backend == "process" and value != "ticker":
        raise ValueError("a server process publishes the ticker: use value='ticker' with backend='process'.")
    workload = Workload(rate, clients, duration, latency, arrivals, value, seed)
    options = _options(history, heartbeat, retry_ms)
    server = (ServerProcess(sse.PATTERN, rate=rate, arrivals=arrivals, seed=seed, options=options)
              if backend == "process" else None)
    return await measure("sse", lambda feed: sse.handlers(feed, **options), sse.listen, workload,
                         drain=2 * latency + 0.1 + clients / 1000, ready_first=True, backend=server,
                         server=backend, **options)


# -- S2: framing bytes per event --------------------------------------------------------------

@dataclass(frozen=True)
class Framing:
    """Where the stream's bytes went: the response head, the payloads, and the framing around them."""

    events: int
    head_bytes: int          # the HTTP response head, once per stream
    body_bytes: int          # everything after the head
    payload_bytes: int       # the JSON the application asked to send
    sse_per_event: float     # by the rules: "id: ...", "data: " and the blank line, per event
    chunk_per_event: float   # by the rules: chunked encoding's size line and CRLF, per event
    start_bytes: int         # by the rules: the first chunk, the retry line, once per stream
    ids: tuple[str, ...] = ()            # each event's id, in order, to redo the sums by hand
    payload_sizes: tuple[int, ...] = ()  # each event's payload in bytes, in order

    @property
    def wire_per_event(self) -> float:
        """Measured bytes on the wire per event beyond its payload (head left out)."""
        return (self.body_bytes - self.payload_bytes) / self.events

    @property
    def predicted_body_bytes(self) -> int:
        """What the format's rules say the body holds (the server's own encoder plays no part)."""
        return round(self.start_bytes + self.payload_bytes + self.events * (self.sse_per_event + self.chunk_per_event))

    def table(self):
        import pandas as pd
        return pd.DataFrame([
            ("payload (JSON)", self.payload_bytes / self.events),
            ("SSE framing: id line, 'data: ', blank line", self.sse_per_event),
            ("chunked encoding: size line and CRLF", self.chunk_per_event),
            ("stream start (retry line), shared by all events", self.start_bytes / self.events),
            ("measured on the wire, beyond the payload", self.wire_per_event),
        ], columns=["bytes per event", "bytes"]).round(2)


def sse_framing_bytes(id: str) -> int:
    """Bytes the SSE format puts around one data line with ``id`` (WHATWG HTML, 9.2.5):
    ``id: <id>`` and its line end, ``data: ``, the data line's end and the blank line."""
    return len(f"id: {id}\n") + len("data: ") + len("\n") + len("\n")


def chunk_framing_bytes(size: int) -> int:
    """Bytes HTTP/1.1 chunked encoding puts around a chunk of ``size`` bytes (RFC 9112, 7.1):
    the size in hex and CRLF before it, CRLF after it."""
    return len(f"{size:x}\r\n") + len("\r\n")


@on_lab_loop(expected=lambda kw: kw.get("duration", 1.0) + 0.5)
async def sse_framing(*, rate: float = 100.0, duration: float = 1.0) -> Framing:
    """Stream ``rate * duration`` events to one client and account for every byte of the stream."""
    feeds: list[Feed] = []

    def handlers(feed: Feed) -> list:
        feeds.append(feed)
        return sse.handlers(feed, heartbeat=None)  # no heartbeats: only events in the body

    result = await measure("sse", handlers, sse.listen, Workload(rate, 1, duration), drain=0.2, ready_first=True)
    events = feeds[0].events
    if result.summary()["missed"]:
        raise RuntimeError("the client missed events, so the byte count would be wrong; run it again")
    payloads = [json.dumps(e.to_json()).encode() for e in events]
    ids = [f"{feeds[0].stream}-{e.seq}" for e in events]  # the stream's life and the event's number
    sse_bytes = [sse_framing_bytes(id) for id in ids]  # by the rules, not by the server's encoder
    head = result.heads[0][1]
    head_bytes = head.index(b"\r\n\r\n") + 4
    start = len(f"retry: {sse.RETRY_MS}\n\n")
    return Framing(
        events=len(events), head_bytes=head_bytes,
        body_bytes=int(result.connections["bytes_down"].iloc[0]) - head_bytes,
        payload_bytes=sum(map(len, payloads)),
        sse_per_event=sum(sse_bytes) / len(events),
        chunk_per_event=sum(chunk_framing_bytes(len(p) + n) for p, n in zip(payloads, sse_bytes)) / len(events),
        start_bytes=start + chunk_framing_bytes(start),
        ids=tuple(ids), payload_sizes=tuple(map(len, payloads)),
    )


# -- S4: cut the connection mid-stream --------------------------------------------------------

@on_lab_loop(expected=lambda kw: kw.get("duration", 2.0) + kw.get("retry_ms", 200) / 1000 + 0.5)
async def run_sse_cut(*, rate: float = 50.0, clients: int = 1, duration: float = 2.0, cut_at: float = 0.8,
                      retry_ms: int = 200, history: int = sse.HISTORY) -> CutOutcome:
    """Cut every stream ``cut_at`` seconds in; clients reconnect after ``retry_ms`` and resume.

    With a short ``history`` and a long ``retry_ms`` the server no longer holds every event the
    client missed, and says so with a ``missed`` event.
    """
    notices: list[dict] = []

    def client(url: str, recorder: Recorder):
        def on_event(event: ServerSentEvent) -> None:
            if event.event == "missed":
                notices.append(json.loads(event.data))
        return sse.listen(url, recorder, on_event=on_event)

    options = _options(history, None, retry_ms)
    outcome = await measure_cut("sse", lambda feed: sse.handlers(feed, **options), client,
                                Workload(rate, clients, duration), cut_at=cut_at, drain=retry_ms / 1000 + 0.3,
                                **options)
    outcome.missed_notices = notices
    return outcome


# -- resuming by hand: what the server answers to a given Last-Event-ID ----------------------

@on_lab_loop
async def resume_with(last_event_id: str, *, published: int = 20, history: int = 5,
                      stream: str | None = None) -> tuple[int, str]:
    """Open ``/events`` with ``Last-Event-ID`` on a stream of ``published`` events keeping ``history``.

    ``stream`` names the stream's life (its ids are ``<stream>-<seq>``); by default a random one.
    Returns the status and the first text the server sent (what a client would parse).
    """
    feed = Feed(1.0)
    feed.stream = stream or feed.stream
    for _ in range(published):
        feed.publish()
    async with served(Routes("sse-resume", sse.handlers(feed, history=history))) as server:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.url}/events", headers={"Last-Event-ID": last_event_id}) as response:
                body = await asyncio.wait_for(response.content.readany(), timeout=5)
                return response.status, body.decode("utf-8", "replace")


# -- S5: the way back up is an ordinary request -----------------------------------------------

@dataclass(frozen=True)
class TalkBack:
    """A listener on the stream and a client posting values: what went up, and how."""

    messages: int
    came_back: int               # posted values that came down the stream
    round_trip_ms: list[float]   # POST sent -> event seen on the stream
    stream_request_bytes: int    # the stream connection's request head
    stream_bytes_up: int         # all bytes the stream connection carried up
    post_requests: int
    post_bytes_up: int
    connections: int

    def summary(self) -> dict:
        d = asdict(self)
        d["round_trip_ms"] = round(statistics.median(self.round_trip_ms), 2) if self.round_trip_ms else float("nan")
        return d


@on_lab_loop(expected=lambda kw: kw.get("messages", 5) * kw.get("every", 0.05) + 0.5)
async def run_talk_back(*, messages: int = 5, every: float = 0.05) -> TalkBack:
    """One client listens on the stream while another POSTs ``messages`` values to the server."""
    feed = Feed(1.0)  # never started: only the POSTs publish
    recorder = Recorder(0)
    async with metered(Routes("sse-talk-back", sse.handlers(feed)), capture=2048, log_bytes=0) as meter:
        listener = asyncio.create_task(sse.listen(meter.url, recorder))
        try:
            await asyncio.wait_for(recorder.ready.wait(), timeout=10)
            posted: dict[int, float] = {}
            async with aiohttp.ClientSession() as session:
                for i in range(messages):
                    sent = time.monotonic()
                    posted[await sse.publish(meter.url, 100.0 + i, session)] = sent
                    await asyncio.sleep(every)
            await asyncio.sleep(0.1)
        finally:
            await cancel_all([listener])
    seen = dict(recorder.seen)
    stream, *posts = meter.connections
    return TalkBack(
        messages=messages, came_back=sum(seq in seen for seq in posted),
        round_trip_ms=[(seen[seq] - sent) * 1000 for seq, sent in posted.items() if seq in seen],
        stream_request_bytes=bytes(stream.head_up).index(b"\r\n\r\n") + 4, stream_bytes_up=stream.bytes_up,
        post_requests=messages, post_bytes_up=sum(c.bytes_up for c in posts), connections=len(meter.connections),
    )


# -- S5: what the way back up must refuse ---------------------------------------------------------

@on_lab_loop
async def bad_posts() -> list[dict]:
    """POST what a careless client or a hostile page would send; what came back, and was it published?"""
    feed = Feed(1.0)  # never started: only accepted POSTs publish
    rows = []
    async with served(Routes("sse-bad-posts", sse.handlers(feed))) as server:
        cases = [
            ("another site's page", {"Origin": "http://evil.example", "Content-Type": "text/plain"}, b'{"value": 1}'),
            ("a 5 MB body", {}, b'{"value": 1, "pad": "' + b"x" * 5_000_000 + b'"}'),
            ("NaN, which is not JSON", {}, b'{"value": NaN}'),
            ("a string for a number", {}, b'{"value": "101"}'),
            ("a good value from this page", {"Origin": server.url}, b'{"value": 101.5}'),
        ]
        async with aiohttp.ClientSession() as session:
            for case, headers, body in cases:
                before = feed.last_seq
                async with session.post(f"{server.url}/events", data=body, headers=headers) as response:
                    rows.append({"sent": case, "status": response.status, "answer": (await response.text())[:90],
                                 "published": feed.last_seq > before})
    return rows
