"""The Server-Sent Events wire format, with no I/O: an encoder and an incremental parser.

An event stream is UTF-8 text made of lines. A line ``field: value`` sets a field, a line
that starts with ``:`` is a comment (servers send them as heartbeats), and an empty line
ends the event and hands it to the application. Four fields exist:

* ``data``: the payload; several ``data`` lines join with a newline;
* ``event``: the event's type (``"message"`` when absent);
* ``id``: the id the client sends back as ``Last-Event-ID`` when it reconnects;
* ``retry``: how many milliseconds the client waits before reconnecting.

The rules here follow the HTML standard's "event stream interpretation": a line may end in
LF, CR or CRLF (and a CRLF may be split across two reads), one byte-order mark at the very
start is dropped, an ``id`` containing NUL is ignored, ``retry`` counts only if it is all
ASCII digits, an event without data is not dispatched, and an event cut off by the end of
the stream is discarded. Keeping this free of sockets makes it easy to test byte by byte.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

_LINE_END = re.compile(r"\r\n|\r|\n")
_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event: its type, its data and the last event id seen so far."""

    data: str
    event: str = "message"
    id: str = ""


def encode_event(data: str, *, event: str | None = None, id: str | None = None,
                 retry: int | None = None) -> bytes:
    """The bytes of one event. Newlines in ``data`` become several ``data:`` lines."""
    lines = []
    for name, value in (("event", event), ("id", id)):
        if value is not None:
            if _LINE_END.search(value):
                raise ValueError(f"An SSE {name} cannot contain a line break: {value!r}")
            if name == "id" and "\0" in value:
                raise ValueError("An SSE id cannot contain NUL: clients would ignore it")
            lines.append(f"{name}: {value}")
    if retry is not None:
        lines.append(_retry_line(retry))
    lines += [f"data: {line}" for line in _LINE_END.split(data)]
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def encode_retry(milliseconds: int) -> bytes:
    """A stream line that only sets the client's reconnection delay."""
    return (_retry_line(milliseconds) + "\n\n").encode("ascii")


def encode_comment(text: str = "") -> bytes:
    """A comment: clients ignore it, but it keeps an idle connection visibly alive."""
    if _LINE_END.search(text):
        raise ValueError(f"An SSE comment cannot contain a line break: {text!r}")
    return f": {text}\n\n".encode("utf-8") if text else b":\n\n"


def _retry_line(milliseconds: int) -> str:
    if not isinstance(milliseconds, int) or milliseconds < 0:
        raise ValueError(f"retry is a whole number of milliseconds, 0 or more, not {milliseconds!r}")
    return f"retry: {milliseconds}"


class EventStreamParser:
    """Turns the bytes of one connection's stream into events, however the reads split them.

    ``feed(chunk)`` returns the events completed by that chunk. ``last_event_id`` is what a
    reconnecting client sends as ``Last-Event-ID``; ``retry`` is the reconnection delay the
    server asked for (milliseconds, or None); ``comments`` counts comment lines (heartbeats).
    Use a new parser for each connection, passing on ``last_event_id``.
    """

    def __init__(self, last_event_id: str = "") -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")  # drops one BOM
        self._text = ""
        self._after_cr = False  # the last line ended in CR: a LF that follows belongs to it
        self._data: list[str] = []
        self._event_type = ""
        self._id_buffer = last_event_id
        self.last_event_id = last_event_id
        self.retry: int | None = None
        self.comments = 0

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        text = self._decoder.decode(chunk)
        if self._after_cr and text:
            if text[0] == "\n":
                text = text[1:]
            self._after_cr = False
        self._text += text
        events, start = [], 0
        for end in _LINE_END.finditer(self._text):
            event = self._line(self._text[start:end.start()])
            if event is not None:
                events.append(event)
            start = end.end()
            self._after_cr = end.group() == "\r" and start == len(self._text)
        self._text = self._text[start:]
        return events

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event_type = value
        elif name == "id":
            if "\0" not in value:
                self._id_buffer = value
        elif name == "retry":
            if _DIGITS.fullmatch(value):
                self.retry = int(value)
        return None  # any other field is ignored

    def _dispatch(self) -> ServerSentEvent | None:
        self.last_event_id = self._id_buffer
        data, event_type = self._data, self._event_type
        self._data, self._event_type = [], ""
        if not data:
            return None
        return ServerSentEvent("\n".join(data), event_type or "message", self.last_event_id)
