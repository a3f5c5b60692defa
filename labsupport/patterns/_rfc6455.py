"""What Tornado's WebSocket server leaves out of RFC 6455, added in one place.

Tornado 6 reads client frames without checking that they are masked, although RFC 6455 5.1
says a server MUST fail the connection on an unmasked client frame. On a protocol error it
closes the TCP connection without a close frame. On a message over ``websocket_max_message_size``
it sends 1009 and closes the socket at once. The rest of that message is still unread then, so the
kernel answers with a reset, and the client often never reads the 1009 (it sees 1006).

This module fails such a connection the way the ``websockets`` library does (its
``Protocol.fail``, RFC 6455 7.1.7): send a close frame with the code, half-close so the
client reads the frame and then the end of the stream, and discard whatever the client
still sends until it closes too (or Tornado's close timeout of 5 s ends it).

``FrameChecker`` judges frame headers with no I/O; ``StrictProtocol`` plugs it into Tornado.
"""

from __future__ import annotations

import socket

import tornado.websocket

PROTOCOL_ERROR = 1002    # RFC 6455 7.4.1: the peer broke the framing rules
INVALID_DATA = 1007      # RFC 6455 7.4.1: data that does not fit the message type (text that is not UTF-8)
MESSAGE_TOO_BIG = 1009   # RFC 6455 7.4.1: a message too big to process
_RESERVED_OPCODES = {0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF}  # RFC 6455 5.2


class FrameError(Exception):
    """A client frame that breaks the protocol: the close code and the reason to send."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code, self.reason = code, reason


def close_reason(text: str) -> str:
    """``text`` cut to fit a close frame: a control frame carries at most 125 bytes, 2 of them the code."""
    data = text.encode("utf-8")[:123]
    return data.decode("utf-8", "ignore")  # drop a character the cut split in two


class FrameChecker:
    """Checks each client frame's header, in order, before its payload is read (no I/O).

    Call ``header`` with a frame's first two bytes, then ``length`` with its payload length
    (from those bytes, or from the extended length that follows when they say 126 or 127).
    RSV bits must be 0, except RSV1 on the first frame of a data message once permessage-deflate
    was agreed (``deflate``; RFC 7692 6.1).
    """

    def __init__(self, max_message_size: int) -> None:
        self.max_message_size = max_message_size
        self.fragmented = False   # inside a message sent as several frames (RFC 6455 5.4)
        self.message_size = 0     # payload bytes of that message so far
        self._frame: tuple[bool, bool, int] = (False, True, 0)   # control?, final?, opcode
        self.deflate = False      # permessage-deflate agreed in the handshake

    def header(self, first_two: bytes) -> int | None:
        """The payload length, or None when an extended length follows. Raises ``FrameError``."""
        fin, reserved, opcode = first_two[0] & 0x80, first_two[0] & 0x70, first_two[0] & 0x0F
        masked, length = first_two[1] & 0x80, first_two[1] & 0x7F
        if not masked:
            raise FrameError(PROTOCOL_ERROR, "client frames must be masked (RFC 6455 5.1)")
        compressed = reserved == 0x40 and self.deflate and opcode in (0x1, 0x2)
        if reserved and not compressed:
            raise FrameError(PROTOCOL_ERROR, "RSV bits set that no negotiated extension defines (RFC 6455 5.2, RFC 7692 6.1)")
        if opcode in _RESERVED_OPCODES:
            raise FrameError(PROTOCOL_ERROR, f"opcode {opcode:#x} is reserved (RFC 6455 5.2)")
        control = opcode >= 0x8
        if control and (not fin or length > 125):
            raise FrameError(PROTOCOL_ERROR, "a control frame must be final and at most 125 bytes (RFC 6455 5.5)")
        if opcode == 0x0 and not self.fragmented:
            raise FrameError(PROTOCOL_ERROR, "a continuation frame with no message to continue (RFC 6455 5.4)")
        if opcode in (0x1, 0x2) and self.fragmented:
            raise FrameError(PROTOCOL_ERROR, "a new message began before the last one ended (RFC 6455 5.4)")
        self._frame = (control, bool(fin), opcode)
        if length >= 126:
            return None
        self.length(length)
        return length

    def length(self, payload_length: int) -> None:
        """Account for the frame's payload; a message over the limit raises 1009."""
        control, final, opcode = self._frame
        if control:
            return
        size = payload_length + (self.message_size if opcode == 0x0 else 0)
        if size > self.max_message_size:
            raise FrameError(MESSAGE_TOO_BIG, f"message over the limit of {self.max_message_size} bytes")
        self.fragmented, self.message_size = (False, 0) if final else (True, size)


class StrictProtocol(tornado.websocket.WebSocketProtocol13):
    """Tornado's RFC 6455 protocol, failing bad frames with a close code instead of a reset.

    PRIVATE TORNADO API: this class relies on how Tornado 6.x reads a frame: ``_receive_frame``
    reads everything through ``_read_bytes``, in RFC order (two header bytes, then the extended
    length if any, the mask, the payload), and hands complete messages to ``_handle_message``.
    ``tests/test_patterns_websocket.py::test_tornado_frame_reader_is_the_one_we_hook`` pins those
    methods' source, so a Tornado upgrade that changes them fails loudly there; re-read them
    and this class before updating the pin.
    """

    def __init__(self, handler, mask_outgoing: bool, params) -> None:
        super().__init__(handler, mask_outgoing, params)
        self.checker = FrameChecker(params.max_message_size)
        self._next_read: str | None = None

    async def _receive_frame(self) -> None:
        self._next_read = "header"
        try:
            await super()._receive_frame()
        except FrameError as error:
            await self._fail(error)

    async def _read_bytes(self, n: int) -> bytes:
        data = await super()._read_bytes(n)
        step, self._next_read = self._next_read, None
        self.checker.deflate = self._decompressor is not None  # set by Tornado when permessage-deflate was agreed
        if step == "header" and self.checker.header(data) is None:
            self._next_read = "length"
        elif step == "length":
            self.checker.length(int.from_bytes(data, "big"))
        return data

    def _handle_message(self, opcode: int, data: bytes):
        if opcode == 0x1 and self._frame_compressed:  # check the text as sent, not as compressed
            return super()._handle_message(opcode, data)  # Tornado drops bad UTF-8 there (1006)
        if opcode == 0x1:  # Tornado would drop the connection without a word
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                raise FrameError(INVALID_DATA, "text message is not valid UTF-8") from None
        return super()._handle_message(opcode, data)

    async def _fail(self, error: FrameError) -> None:
        """RFC 6455 7.1.7: a close frame with the code, then end of stream, then ignore the client."""
        self.close(error.code, close_reason(error.reason))  # also starts Tornado's 5 s timer that aborts the connection
        try:
            await self.stream.write(b"")  # resolves once the close frame is in the kernel
            self.stream.socket.shutdown(socket.SHUT_WR)  # FIN after the close frame: no reset, no lost frame
            while True:
                await self.stream.read_bytes(65536, partial=True)  # discarded: memory stays flat
        except OSError:  # the client closed (Tornado's StreamClosedError is an OSError), or the timer fired
            self._abort()


def strict(protocol: tornado.websocket.WebSocketProtocol | None,
           handler: tornado.websocket.WebSocketHandler) -> StrictProtocol | None:
    """Tornado's protocol for this handler, rebuilt as ``StrictProtocol`` (None: not RFC 6455)."""
    if protocol is None:
        return None
    return StrictProtocol(handler, False, protocol.params)  # False: a server does not mask its frames
