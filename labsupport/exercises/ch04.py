"""Exercises for chapter 4, Server-Sent Events."""

from __future__ import annotations

from ..checks import Exercise
from ..experiments.sse import run_sse_cut
from ..patterns.sse_codec import EventStreamParser, encode_event

# q1: the framing of one event, counted by hand
Q1_PAYLOAD, Q1_ID = '{"seq": 7, "value": 100.5}', "7"
Q1_BYTES = len(encode_event(Q1_PAYLOAD, id=Q1_ID)) - len(Q1_PAYLOAD.encode())


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
    solution=f"len(encode_event(payload, id='7')) - len(payload) = {Q1_BYTES}.",
    answer=Q1_BYTES,
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
