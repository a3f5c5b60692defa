"""What a connection carried, message by message: the wire meter's captured bytes, parsed.

The wire meter keeps every chunk it relayed with two times: when it read the chunk from the
sender and when it passed it on to the receiver (later, when the link adds latency). This
module turns one direction of one connection into the messages it carried, however the reads
cut the bytes, with no sockets involved:

* HTTP/1.1 requests and responses, split by ``http_messages`` below
  (RFC 9112 section 6: a ``Content-Length`` body, or none);
* a chunked body (RFC 9112 section 7.1): a ``text/event-stream`` one is read event by event
  with the course's SSE parser (``patterns/sse_codec.py``), any other chunk by chunk (a server
  that pushes flushes one chunk per update);
* WebSocket frames after an ``Upgrade`` (RFC 6455 section 5.2), read by the ``websockets``
  library's own frame parser;
* NATS protocol operations (``PUB``, ``MSG``, ``PING`` ...), named for what JetStream uses
  them for: publish, PubAck, fetch, delivery, ack.

Each message knows its size on the wire (framing included), its first bytes, when its first
byte was read and when its last byte was delivered: that is one arrow of a ladder diagram.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Iterable

from websockets.exceptions import ProtocolError
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from .patterns.sse_codec import EventStreamParser

FIRST_BYTES = 160  # kept per message for reading on hover


def http_messages(stream: bytes) -> list[bytes]:
    """Split captured HTTP/1.1 bytes into whole messages: headers, then a Content-Length body if any.

    A message the capture cut short, or one without a length (a chunked stream), is left out.
    """
    messages = []
    while (end := stream.find(b"\r\n\r\n")) >= 0:
        head = stream[:end]
        length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        if length is None and re.search(rb"(?i)\r\ntransfer-encoding:\s*chunked", head):
            break  # a stream: it has no end to find
        size = end + 4 + (int(length.group(1)) if length else 0)
        if size > len(stream):
            break  # the capture stopped inside this message
        messages.append(stream[:size])
        stream = stream[size:]
    return messages


@dataclass(frozen=True)
class Message:
    """One message on one connection: an arrow of the ladder.

    ``direction`` is ``"up"`` (client to server) or ``"down"``; ``kind`` is one of request,
    response, response head, chunk, event, comment, retry, end of body, frame, nats, bytes;
    ``label`` says what it is in a few words; ``sent`` and ``arrived`` are the meter's times.
    """

    direction: str
    kind: str
    label: str
    size: int
    sent: float
    arrived: float
    first: bytes


class DirectionParser:
    """One direction of one connection: ``feed(chunk, read, delivered)`` returns finished messages."""

    def __init__(self, direction: str) -> None:
        if direction not in ("up", "down"):
            raise ValueError(f"direction is 'up' or 'down', not {direction!r}")
        self.direction = direction
        self._buffer = bytearray()   # bytes not yet part of a finished message
        self._base = 0               # wire offset of self._buffer[0]
        self._start = 0              # wire offset where the next message begins
        self._ends: list[int] = []   # wire offset after each chunk fed ...
        self._times: list[tuple[float, float]] = []  # ... and its (read, delivered) times
        self._read = self._read_http
        self._body: _ChunkedBody | None = None
        self._ws: _Frames | None = None

    def feed(self, chunk: bytes, read: float = 0.0, delivered: float | None = None) -> list[Message]:
        if not chunk:
            return []
        self._ends.append(self._base + len(self._buffer) + len(chunk))
        self._times.append((read, read if delivered is None else delivered))
        self._buffer += chunk
        out: list[Message] = []
        while True:
            before = (self._read, self._base, len(out))
            self._read(out)
            if (self._read, self._base, len(out)) == before:
                return out

    def _message(self, kind: str, label: str, end: int, first: bytes, begins: int | None = None) -> Message:
        """The message from where the last one ended to ``end``, timed by the chunks it came in.

        ``begins`` is where its own bytes start when framing that came earlier leads it (the CRLF
        that closes the chunk before an SSE event): it counts in the size, not in the timing.
        """
        start, self._start = self._start, end
        read = self._times[bisect.bisect_right(self._ends, max(start, begins or 0))][0]
        delivered = self._times[bisect.bisect_left(self._ends, end)][1]
        return Message(self.direction, kind, label, end - start, read, delivered, bytes(first[:FIRST_BYTES]))

    def _consume(self, end: int) -> None:
        del self._buffer[:end - self._base]
        self._base = end

    # -- one reader per protocol; each takes what it can from the buffer ------------------------

    def _read_http(self, out: list[Message]) -> None:
        if self._base == 0 and bytes(self._buffer[:5]) in (b"INFO ", b"CONNE"):
            self._read = self._read_nats  # a NATS connection opens with INFO (server), CONNECT (client)
            return
        for message in http_messages(bytes(self._buffer)):
            end = self._base + len(message)
            out.append(self._message(_HTTP_KIND[self.direction], _http_label(message), end, message))
            self._consume(end)
            if _is_upgrade(self.direction, message):
                self._read, self._ws = self._read_frames, _Frames(masked=self.direction == "up")
                return
        head_end = self._buffer.find(b"\r\n\r\n")
        if head_end >= 0 and _CHUNKED.search(self._buffer[:head_end]):
            head = bytes(self._buffer[:head_end + 4])
            self._body = _ChunkedBody(head)
            self._consume(self._base + len(head))
            self._read = self._read_chunked
            out.append(self._message(_HEAD_KIND[self.direction], _http_label(head), self._base, head))

    def _read_chunked(self, out: list[Message]) -> None:
        body = self._body
        try:
            pieces, used = body.pieces(bytes(self._buffer))
        except ValueError:  # a chunk size that is not hexadecimal: not HTTP/1.1 as we know it
            self._read = self._read_bytes
            return
        self._consume(self._base + used)
        for end, data, last in pieces:
            end += self._base - used
            if body.events is None:  # each chunk is what the server flushed at once: show each
                if data:
                    body.first += data[:FIRST_BYTES - len(body.first)]
                elif not last:
                    out.append(self._message("chunk", "chunk", end, body.first))
                    body.first = b""
            else:
                at = end - len(data)
                for line in re.findall(rb"[^\n]*\n|[^\n]+", data):
                    begins = at if body.begins is None else body.begins
                    at += len(line)
                    body.begins = None if line.strip() == b"" else begins  # a blank line ends what it began
                    for kind, label, first in body.read(line):
                        out.append(self._message(kind, label, at, first, begins))
                        body.begins = None
            if last:
                out.append(self._message("end of body", "end of body", end, b"0\r\n\r\n"))
                self._read, self._body = self._read_http, None

    def _read_frames(self, out: list[Message]) -> None:
        data = bytes(self._buffer)
        self._consume(self._base + len(data))
        try:
            for frame, size in self._ws.feed(data):
                out.append(self._message("frame", _frame_label(frame), self._start + size, frame.data))
        except (ProtocolError, EOFError) as error:
            self._read = self._read_bytes
            out.append(self._message("bytes", f"not a WebSocket frame ({error})", self._base, b""))

    def _read_bytes(self, out: list[Message]) -> None:
        if self._buffer:
            first, end = bytes(self._buffer), self._base + len(self._buffer)
            self._consume(end)
            out.append(self._message("bytes", "bytes", end, first))

    def _read_nats(self, out: list[Message]) -> None:
        while (line_end := self._buffer.find(b"\r\n")) >= 0:
            line = bytes(self._buffer[:line_end])
            op, *args = line.split() or [b"?"]
            op = op.upper().decode("latin-1")
            size = line_end + 2
            if op in ("PUB", "HPUB", "MSG", "HMSG"):
                if not (args and args[-1].isdigit()):
                    self._read = self._read_bytes  # not the NATS protocol as documented
                    return
                size += int(args[-1]) + 2  # the payload and its CRLF (NATS client protocol)
                if len(self._buffer) < size:
                    return
            payload = bytes(self._buffer[line_end + 2:max(line_end + 2, size - 2)])
            end = self._base + size
            label = _nats_label(op, [a.decode("latin-1") for a in args], payload)
            out.append(self._message("nats", label, end, bytes(self._buffer[:size])))
            self._consume(end)


def messages(chunks: Iterable[tuple[str, float, float, bytes]]) -> list[Message]:
    """Every message of one connection's logged chunks, both directions, in the order they were sent."""
    parsers = {"up": DirectionParser("up"), "down": DirectionParser("down")}
    found = [m for direction, read, delivered, data in chunks
             for m in parsers[direction].feed(data, read, delivered)]
    return sorted(found, key=lambda m: m.sent)


# -- HTTP -------------------------------------------------------------------------------------

_HTTP_KIND = {"up": "request", "down": "response"}
_HEAD_KIND = {"up": "request head", "down": "response head"}  # a chunked body follows, piece by piece
_CHUNKED = re.compile(rb"(?i)\r\ntransfer-encoding:[^\r\n]*chunked")
_EVENT_STREAM = re.compile(rb"(?i)\r\ncontent-type:\s*text/event-stream")
_UPGRADE = re.compile(rb"(?i)\r\nupgrade:\s*websocket")
# headers worth reading on the arrow itself: they change what the exchange means
_TOLD = re.compile(rb"(?i)(?<=\r\n)(last-event-id: *[^\r]*|connection: *close|upgrade: *[^\r]*|if-none-match)")


def _http_label(message: bytes) -> str:
    """``GET /latest`` for a request, ``200 OK`` for a response."""
    first_line = message.split(b"\r\n", 1)[0].decode("latin-1")
    parts = first_line.split(" ", 2)
    label = " ".join(parts[1:] if first_line.startswith("HTTP/") else parts[:2])
    notes = [m.group(0).decode("latin-1") for m in _TOLD.finditer(message.split(b"\r\n\r\n", 1)[0])]
    return label + (f" ({', '.join(n.strip() for n in notes)})" if notes else "")


def _is_upgrade(direction: str, message: bytes) -> bool:
    if direction == "down":
        return message.startswith(b"HTTP/1.1 101 ")
    return bool(_UPGRADE.search(message))


class _ChunkedBody:
    """A chunked body (RFC 9112 section 7.1), and for an event stream the SSE parser reading it."""

    def __init__(self, head: bytes) -> None:
        self.head = head
        self.first = b""  # the first bytes of the chunk being read (for a body that is not SSE)
        self.events = EventStreamParser() if _EVENT_STREAM.search(head) else None
        self._comments, self._retry = 0, None
        self.begins: int | None = None  # wire offset of the first line of the event being read
        self._left: int | None = None  # data bytes left in the current chunk; None: a size line is next

    def pieces(self, buffer: bytes) -> tuple[list[tuple[int, bytes, bool]], int]:
        """The whole pieces at the start of ``buffer`` as (offset after, data, last chunk?), and bytes used."""
        pieces, at = [], 0
        while True:
            if self._left is None:
                line_end = buffer.find(b"\r\n", at)
                if line_end < 0:
                    return pieces, at
                size = int(buffer[at:line_end].split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    if buffer.find(b"\r\n", line_end + 2) != line_end + 2:
                        return pieces, at  # the blank line that ends the body (no trailers here)
                    pieces.append((line_end + 4, b"", True))
                    return pieces, line_end + 4
                at, self._left = line_end + 2, size
            if self._left:
                data = buffer[at:at + self._left]
                if not data:
                    return pieces, at
                self._left -= len(data)
                at += len(data)
                pieces.append((at, data, False))
            if self._left == 0:
                if len(buffer) < at + 2:
                    return pieces, at  # the CRLF after the data is still to come
                at, self._left = at + 2, None
                pieces.append((at, b"", False))

    def read(self, line: bytes) -> list[tuple[str, str, bytes]]:
        """Feed one line of the event stream; what it completed: events, comments, a new retry."""
        done = [("event", f"{e.event} id={e.id}" if e.id else e.event, e.data.encode())
                for e in self.events.feed(line)]
        if self.events.comments > self._comments:
            self._comments = self.events.comments
            done.append(("comment", "comment (heartbeat)", line))
        if self.events.retry != self._retry:
            self._retry = self.events.retry
            done.append(("retry", f"retry: {self._retry} ms", line))
        return done


# -- WebSocket ----------------------------------------------------------------------------------

class _Compressed:
    """Stands in for permessage-deflate (RFC 7692): notes RSV1 and leaves the payload compressed."""

    name = "permessage-deflate"
    rsv1 = False

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        self.rsv1 = frame.rsv1
        return dataclasses.replace(frame, rsv1=False)


class _Frames:
    """WebSocket frames from the ``websockets`` library's parser, with each frame's size on the wire."""

    def __init__(self, masked: bool) -> None:
        self._reader = StreamReader()
        self._masked = masked  # RFC 6455 section 5.3: every frame from the client is masked
        self._done: list[tuple[Frame, int]] = []
        self._parser = self._parse()
        next(self._parser)

    def _parse(self):
        compressed = _Compressed()
        while True:
            frame = yield from Frame.parse(self._reader.read_exact, mask=self._masked, extensions=[compressed])
            size = len(frame.data)
            header = 2 + (0 if size < 126 else 2 if size < 65536 else 8) + (4 if self._masked else 0)
            self._done.append((dataclasses.replace(frame, rsv1=compressed.rsv1), header + size))

    def feed(self, data: bytes) -> list[tuple[Frame, int]]:
        self._reader.feed_data(data)
        next(self._parser)
        done, self._done = self._done, []
        return done


def _frame_label(frame: Frame) -> str:
    name = {Opcode.CONT: "continuation"}.get(frame.opcode, frame.opcode.name.lower())
    if frame.opcode == Opcode.CLOSE and len(frame.data) >= 2:
        name += f" {int.from_bytes(frame.data[:2], 'big')}"
    return name + (" (compressed)" if frame.rsv1 else "") + ("" if frame.fin else " (more to come)")


# -- NATS -------------------------------------------------------------------------------------

def _nats_label(op: str, args: list[str], payload: bytes) -> str:
    """What JetStream uses the operation for (https://docs.nats.io/reference/reference-protocols)."""
    subject = args[0] if args else ""
    if op in ("PUB", "HPUB"):
        if subject.startswith("$JS.API.CONSUMER.MSG.NEXT."):
            return "fetch"
        if subject.startswith("$JS.ACK."):
            return "ack " + (payload.decode("latin-1").strip() or "+ACK")
        if subject.startswith("$JS.API."):
            return "api " + subject[len("$JS.API."):].split(".")[0].lower()
        return f"publish {subject}"
    if op in ("MSG", "HMSG"):
        reply = args[2] if len(args) >= (4 if op == "MSG" else 5) else ""
        if reply.startswith("$JS.ACK."):
            fields = reply.split(".")
            tries = int(fields[4]) if len(fields) > 4 and fields[4].isdigit() else 1
            return "delivery" if tries == 1 else f"redelivery (try {tries})"
        status = re.match(rb"NATS/1\.0 (\d{3})", payload)
        if op == "HMSG" and status:
            return f"status {status.group(1).decode()}"  # 404 no messages, 408 fetch expired
        try:
            answer = json.loads(payload.split(b"\r\n\r\n")[-1])
        except ValueError:
            answer = None
        if isinstance(answer, dict) and "stream" in answer and "seq" in answer:
            return f"PubAck seq={answer['seq']}"
        if subject.startswith("_INBOX."):
            return "reply" if payload else "reply (empty)"  # an empty reply confirms an ack_sync
        return f"message {subject}"
    return op
