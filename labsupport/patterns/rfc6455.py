"""What RFC 6455 asks a server to refuse in its client's frames, judged with no I/O.

A server MUST close the connection on an unmasked client frame, and MAY send 1002 first (RFC
6455 5.1); it MUST fail the connection on reserved bits that no extension defines or a reserved
opcode (5.2), a control frame that is fragmented or longer than 125 bytes (5.5), a continuation
with nothing to continue or a new message before the last one ended (5.4), and text that is not
UTF-8 (8.1). It fails a connection by sending a close frame with a code (1002 for the framing,
1007 for the text, 1009 for a message over its limit; 7.4.1), then closing (7.1.7).

``FrameChecker`` judges one frame header; ``ClientFrames`` walks a client's bytes as they come,
keeping none of them, and says how many are sound. The Tornado servers of the course read each
client through ``ClientFrames`` (``serving.py``), so a bad frame gets its close code before
Tornado reads it.
"""

from __future__ import annotations

import codecs

from websockets.frames import apply_mask  # the library's C speedup when it is built

PROTOCOL_ERROR = 1002    # RFC 6455 7.4.1: the peer broke the framing rules
INVALID_DATA = 1007      # RFC 6455 7.4.1: data that does not fit the message type (text that is not UTF-8)
MESSAGE_TOO_BIG = 1009   # RFC 6455 7.4.1: a message too big to process
RESERVED_OPCODES = {0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF}  # RFC 6455 5.2
TEXT, CONTINUATION = 0x1, 0x0


class FrameError(Exception):
    """A client frame that breaks the protocol: the close code, the reason to send, and how many
    of the bytes just received came before the fault (``sound``)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code, self.reason = code, reason
        self.sound = 0


def close_reason(text: str) -> str:
    """``text`` cut to fit a close frame: a control frame carries at most 125 bytes, 2 of them the code."""
    data = text.encode("utf-8")[:123]
    return data.decode("utf-8", "ignore")  # drop a character the cut split in two


def close_frame(code: int, reason: str) -> bytes:
    """A server's close frame (RFC 6455 5.5.1): final, opcode 8, unmasked, the code then the reason."""
    payload = code.to_bytes(2, "big") + close_reason(reason).encode("utf-8")
    return bytes([0x88, len(payload)]) + payload


class FrameChecker:
    """Checks each client frame's header, in order, before its payload is read (no I/O).

    Call ``header`` with a frame's first two bytes, then ``length`` with its payload length
    (from those bytes, or from the extended length that follows when they say 126 or 127).
    RSV bits must be 0, except RSV1 on the first frame of a data message once permessage-deflate
    was agreed (``deflate``; RFC 7692 6.1).
    """

    def __init__(self, max_message_size: int, *, deflate: bool = False) -> None:
        self.max_message_size = max_message_size
        self.deflate = deflate    # permessage-deflate agreed in the handshake
        self.fragmented = False   # inside a message sent as several frames (RFC 6455 5.4)
        self.message_size = 0     # payload bytes of that message so far
        self.control = self.final = self.compressed = False   # the frame being read
        self.opcode = 0

    def header(self, first_two: bytes) -> int | None:
        """The payload length, or None when an extended length follows. Raises ``FrameError``."""
        fin, reserved, opcode = first_two[0] & 0x80, first_two[0] & 0x70, first_two[0] & 0x0F
        masked, length = first_two[1] & 0x80, first_two[1] & 0x7F
        if not masked:
            raise FrameError(PROTOCOL_ERROR, "client frames must be masked (RFC 6455 5.1)")
        compressed = reserved == 0x40 and self.deflate and opcode in (0x1, 0x2)
        if reserved and not compressed:
            raise FrameError(PROTOCOL_ERROR, "RSV bits set that no negotiated extension defines (RFC 6455 5.2, RFC 7692 6.1)")
        if opcode in RESERVED_OPCODES:
            raise FrameError(PROTOCOL_ERROR, f"opcode {opcode:#x} is reserved (RFC 6455 5.2)")
        control = opcode >= 0x8
        if control and (not fin or length > 125):
            raise FrameError(PROTOCOL_ERROR, "a control frame must be final and at most 125 bytes (RFC 6455 5.5)")
        if opcode == CONTINUATION and not self.fragmented:
            raise FrameError(PROTOCOL_ERROR, "a continuation frame with no message to continue (RFC 6455 5.4)")
        if opcode in (0x1, 0x2) and self.fragmented:
            raise FrameError(PROTOCOL_ERROR, "a new message began before the last one ended (RFC 6455 5.4)")
        self.control, self.final, self.opcode, self.compressed = control, bool(fin), opcode, compressed
        if length >= 126:
            return None
        self.length(length)
        return length

    def length(self, payload_length: int) -> None:
        """Account for the frame's payload; a message over the limit raises 1009."""
        if self.control:
            return
        size = payload_length + (self.message_size if self.opcode == CONTINUATION else 0)
        if size > self.max_message_size:
            raise FrameError(MESSAGE_TOO_BIG, f"message over the limit of {self.max_message_size} bytes")
        self.fragmented, self.message_size = (False, 0) if self.final else (True, size)


class ClientFrames:
    """A client's bytes after the handshake, walked frame by frame as they arrive; none is kept.

    ``receive(data)`` returns ``len(data)`` while every frame is sound; at the first fault it
    raises ``FrameError``, whose ``sound`` says how many bytes of ``data`` came before the faulty
    frame (or, for text that is not UTF-8, before the chunk that showed it): a reader given only
    those never sees the fault whole. Text is decoded as it comes, so a message too big to keep
    is still checked; a compressed message is checked once inflated, by whoever inflates it.
    """

    def __init__(self, max_message_size: int, *, deflate: bool = False) -> None:
        self.checker = FrameChecker(max_message_size, deflate=deflate)
        self.head = bytearray()    # the frame's header so far: 2 bytes, the extended length, the mask
        self.wanted = 2            # header bytes still to come
        self.extended = 0          # bytes of extended length this frame's header carries (0, 2 or 8)
        self.remaining = 0         # payload bytes of the frame still to come
        self.mask, self.offset = b"", 0
        self.text = None           # the UTF-8 decoder of the text message under way

    def receive(self, data: bytes | memoryview) -> int:
        view = memoryview(data)
        at, frame_start = 0, -len(self.head)
        while at < len(view):
            if self.wanted:
                take = min(self.wanted, len(view) - at)
                self.head += view[at:at + take]
                at, self.wanted = at + take, self.wanted - take
                if self.wanted:
                    break
                try:
                    self.header_read()
                except FrameError as error:
                    error.sound = max(frame_start, 0)
                    raise
            else:
                take = min(self.remaining, len(view) - at)
                try:
                    self.payload(view[at:at + take], last=take == self.remaining)
                except FrameError as error:
                    error.sound = at
                    raise
                at, self.remaining = at + take, self.remaining - take
            if not self.wanted and not self.remaining:
                self.head, self.wanted, frame_start = bytearray(), 2, at   # the next frame
        return len(view)

    def header_read(self) -> None:
        """The header so far is complete up to its next part: judge it, and ask for the rest."""
        if len(self.head) == 2:
            length = self.checker.header(self.head)
            self.extended = {126: 2, 127: 8}.get(self.head[1] & 0x7F, 0)
            self.wanted = self.extended or 4   # the extended length first, judged before the mask comes
            if length is not None:
                self.remaining = length
            return
        if len(self.head) == 2 + self.extended:
            self.remaining = int.from_bytes(self.head[2:], "big")
            self.checker.length(self.remaining)
            self.wanted = 4
            return
        self.mask, self.offset = bytes(self.head[-4:]), 0
        checker = self.checker
        if not checker.control and checker.opcode == TEXT and not checker.compressed:
            self.text = codecs.getincrementaldecoder("utf-8")()
        if not self.remaining:
            self.payload(b"", last=True)

    def payload(self, chunk: memoryview | bytes, *, last: bool) -> None:
        checker = self.checker
        if self.text is None or checker.control:
            return
        turn = self.offset % 4  # the mask continues where the last chunk of this frame stopped
        data = apply_mask(chunk, self.mask[turn:] + self.mask[:turn])
        self.offset += len(chunk)
        ending = last and checker.final
        try:
            self.text.decode(data, final=ending)
        except UnicodeDecodeError:
            raise FrameError(INVALID_DATA, "text message is not valid UTF-8 (RFC 6455 8.1)") from None
        if ending:
            self.text = None
