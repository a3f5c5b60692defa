"""Exercises for chapter 4, Server-Sent Events."""

from __future__ import annotations

import asyncio
import inspect
import json
import random

import aiohttp

from ..checks import Exercise, Measurement
from ..experiments.core import Workload
from ..experiments.sse import run_sse_cut, sse_framing, sse_framing_bytes
from ..patterns import sse
from ..patterns.sse_codec import EventStreamParser
from .tryout import TryOutFailed, judge_return, try_out

# q1: the framing of one event, counted by hand from the format's rules (not from the server's encoder)
Q1_PAYLOAD, Q1_ID = '{"seq": 7, "value": 100.5}', "7"
Q1_BYTES = sse_framing_bytes(Q1_ID)


def _check_framing(answer) -> tuple[bool, str]:
    n = int(answer)
    if n == Q1_BYTES:
        return True, f"'id: 7' + newline (6), 'data: ' (6), the newline ending it and the blank line (2): {Q1_BYTES} bytes."
    if n == Q1_BYTES - 6:
        return False, "That is the framing without the id line. The server sends an id with every event."
    return False, "Write the event out line by line (encode_event shows it) and count what is not the payload."


q1 = Exercise(
    "Count the framing",
    checker=_check_framing,
    hint="Run encode_event(payload, id='7') and compare its length with the payload's. Newlines count.",
    solution=f"'id: 7' and its newline (6) + 'data: ' (6) + the newline ending the data line (1) + the blank line (1) "
             f"= {Q1_BYTES}; len(encode_event(payload, id='7')) - len(payload) agrees.",
    answer=Q1_BYTES,
    measure=lambda: _measure_framing(),
)


def _measure_framing() -> Measurement:
    """A real stream's bytes beyond its payloads, less the chunked encoding's: the SSE framing, per event."""
    f = sse_framing(rate=100.0, duration=0.5)
    chunked = f.chunk_per_event + f.start_bytes / f.events  # by the rules of RFC 9112, 7.1
    on_wire = f.wire_per_event - chunked
    exact = 0.5 / f.events  # the meter counts every byte: half a byte in the whole run, below one stray byte
    return Measurement(
        claim="an event's SSE framing is its id line, 'data: ' and two newlines, nothing more",
        theory=f"{Q1_BYTES} bytes for id 7 ({f.sse_per_event:.2f} on average for this run's ids, {f.ids[0]} to {f.ids[-1]})",
        measured=f"{on_wire:.2f} bytes per event on the wire ({f.wire_per_event:.2f} beyond the payloads, less "
                 f"{chunked:.2f} of chunked encoding and the stream's opening retry line)",
        how=f"{f.events} events streamed to a real client, every byte counted by the wire meter.",
        id="S2 q1 framing", value=on_wire, expected=f.sse_per_event, low=f.sse_per_event - exact,
        high=f.sse_per_event + exact, unit="B",
    )


# q2: read a stream as a standard parser does
Q2_STREAM = b"data: up\r\ndata: 3%\r\n\r\n: heartbeat\n\nevent: news\ndata: half"


def _events(stream: bytes) -> list[str]:
    return [e.data for e in EventStreamParser().feed(stream)]


def _check_parse(answer) -> tuple[bool, str]:
    expected = _events(Q2_STREAM)
    if list(answer) == expected:
        return True, "One event with two data lines joined by a newline; the comment is not an event; the last one never got its blank line."
    if "half" in answer:
        return False, "The stream ends before the last event's blank line, so that event is never dispatched."
    return False, "Each blank line ends an event; data lines in one event are joined with a newline."


q2 = Exercise(
    "Parse a stream",
    checker=_check_parse,
    hint="Split the bytes into lines (CRLF, LF and CR all end a line), then collect data lines until a blank line.",
    solution=f"{_events(Q2_STREAM)!r}: check it with EventStreamParser().feed(stream).",
    answer=_events(Q2_STREAM),
)

# q3: size the history so a reconnect loses nothing, checked by cutting a real stream
Q3_RATE, Q3_RETRY_MS = 40.0, 500


def _check_history(answer) -> tuple[bool, str]:
    history = int(answer)
    if not 1 <= history <= 10_000:
        return False, "Give the number of events the server keeps, between 1 and 10,000."
    outcome = run_sse_cut(rate=Q3_RATE, duration=1.5, cut_at=0.5, retry_ms=Q3_RETRY_MS, history=history)
    measured = f"measured: {outcome.lost} events lost, {outcome.announced} announced as missed"
    if outcome.lost:
        return False, f"Too short ({measured}). Events keep coming while the client waits to reconnect."
    if history > 4 * Q3_RATE * Q3_RETRY_MS / 1000:
        return False, f"Nothing lost ({measured}), but that keeps far more than needed. Try a smaller history."
    return True, f"Nothing lost, with a modest history ({measured})."


q3 = Exercise(
    "Size the history",
    checker=_check_history,
    hint="While the client is away for the retry delay, events keep arriving at the feed's rate. Add a margin.",
    solution=f"{Q3_RATE:.0f} events/s x {Q3_RETRY_MS / 1000} s = {Q3_RATE * Q3_RETRY_MS / 1000:.0f} events, plus a "
             "margin for the reconnect itself: about 30.",
    answer=30,
)


# q4 and q5 change an SSE client and an SSE handler, and run them against a real server.
Q4_WORKLOAD = Workload(rate=50.0, clients=1, duration=1.5)
Q4_CUT_AT, Q4_RETRY = 0.6, 0.2


async def _model_listen(base_url: str, recorder) -> None:
    last_id = ""
    async with aiohttp.ClientSession() as session:
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_id:
                headers["Last-Event-ID"] = last_id
            try:
                async with session.get(f"{base_url}/events", headers=headers) as response:
                    recorder.ready.set()
                    parser = EventStreamParser()
                    async for chunk in response.content.iter_any():
                        for event in parser.feed(chunk):
                            if event.event == "message":
                                recorder.saw(json.loads(event.data)["seq"])
                        last_id = parser.last_event_id
            except aiohttp.ClientError:
                pass  # the stream broke: wait, then reconnect
            await asyncio.sleep(Q4_RETRY)


def _check_resume(listen) -> tuple[bool, str]:
    if not inspect.iscoroutinefunction(listen):
        return False, "Pass your client, an `async def` function of (base_url, recorder)."

    async def cut(run) -> None:
        await asyncio.sleep(Q4_CUT_AT)
        await run.meter.cut_all()

    try:
        result = try_out(sse.handlers, listen, Q4_WORKLOAD, drain=Q4_RETRY + 0.3, scenario=cut)
    except TryOutFailed as failure:
        return False, str(failure)
    s = result.summary()
    streams = len(result.connections)
    measured = f"{s['delivered']} of {s['events']} events seen on {streams} stream{'s' if streams != 1 else ''}"
    if streams < 2:
        return False, f"The client never came back after the cut ({measured}): reconnect in a loop."
    if s["delivered"] == 0:
        return False, f"Nothing reached the client ({measured}): record the seq of every message event."
    if s["missed"]:
        return False, (f"{s['missed']} events were lost across the cut ({measured}): they were sent while your "
                       f"client waited {Q4_RETRY * 1000:.0f} ms to reconnect, and a request without Last-Event-ID "
                       "starts from now. Send the id of the last event you saw.")
    return True, f"The cut cost a pause, not a single event ({measured})."


q4 = Exercise(
    "Resume after a cut",
    checker=_check_resume,
    hint="Every event carries an id, and the parser keeps the last one in parser.last_event_id. Which request "
         "header hands it back to the server?",
    solution='if last_id:\n    headers["Last-Event-ID"] = last_id',
    answer=_model_listen,
)

# q5: the server tells every client when to come back: all at once, or spread out?
Q5_CLIENTS, Q5_RESTART_AT, Q5_WINDOW = 40, 0.3, 0.1
Q5_WORKLOAD = Workload(rate=5.0, clients=Q5_CLIENTS, duration=2.0)


class _SpreadRetry(sse.EventStreamHandler):
    def initialize(self, feed, **options) -> None:
        super().initialize(feed, **options)
        self.retry = random.randint(500, 1500)  # ms, a different delay for each connection


def _check_retry(handler_class) -> tuple[bool, str]:
    if not (isinstance(handler_class, type) and issubclass(handler_class, sse.EventStreamHandler)):
        return False, "Pass your handler class itself (MyEvents), a subclass of sse.EventStreamHandler."

    return judge_return(lambda feed: [(r"/events", handler_class, {"feed": feed})], sse.listen, Q5_WORKLOAD,
                        restart=(Q5_RESTART_AT, 0.05), window=Q5_WINDOW, drain=0.5, ready_first=True,
                        came_back="reconnected", late_advice="Keep every retry within about 1.5 s.",
                        wave_advice="They all lost the stream together and all got the same retry. "
                                    "Give each connection its own random retry.")


q5 = Exercise(
    "Spread the reconnects",
    checker=_check_retry,
    hint="self.retry is the delay (in ms) this connection's retry: line asks for. initialize() runs once per request.",
    solution="import random\n"
             "class MyEvents(sse.EventStreamHandler):\n"
             "    def initialize(self, feed, **options):\n"
             "        super().initialize(feed, **options)\n"
             "        self.retry = random.randint(500, 1500)",
    answer=_SpreadRetry,
)
