"""The lab's Tornado servers: sockets the lab binds, connections that read WebSocket frames strictly.

Tornado's WebSocket server (6.6) aborts the TCP connection, with no close code, on most frames RFC
6455 says to refuse, accepts unmasked client frames, and on a message over its limit sends 1009
and closes at once, so that the kernel resets the connection and the client often never reads the
1009. Every connection of a lab server is therefore a ``StrictStream``: once the server has
answered ``101 Switching Protocols``, each byte the client sends passes through
``patterns/rfc6455.ClientFrames`` before Tornado reads it, and a faulty frame never reaches
Tornado. The connection is failed as RFC 6455 7.1.7 asks (and as the ``websockets`` library's
``Protocol.fail`` does): a close frame with the code, the end of our stream after it, then
whatever the client still sends is read and dropped until it closes too, or ``CLOSE_TIMEOUT``
passes. The handler then sees an ordinary close (``on_close``).

Only public Tornado interfaces are used: ``IOStream.read_from_fd`` and ``write`` (an IOStream's
methods for subclasses), ``netutil.add_accept_handler`` and ``HTTPServer.handle_stream``.
"""

from __future__ import annotations

import asyncio
import re
import socket
from dataclasses import dataclass, field
from typing import Callable

import tornado.httpserver
import tornado.iostream
import tornado.netutil
import tornado.web

from .patterns.rfc6455 import PROTOCOL_ERROR, ClientFrames, FrameError, close_frame
from .wire import BACKLOG, LOOPBACK

CLOSE_TIMEOUT = 5.0                     # seconds a failed client has to close, as Tornado gives on close
MAX_MESSAGE_SIZE = 10 * 2**20           # Tornado's documented default for ``websocket_max_message_size``
LINGER = 2.0                            # seconds a closed connection still drains what its client sends (nginx: 5 to 30)
MAX_HEAD = 128 * 1024                   # bytes of request head a lab server reads before it hangs up (Tornado: 64 KiB)
_HEAD_END = re.compile(rb"\r?\n\r?\n")  # where an HTTP request head ends, as Tornado reads it
_SWITCHING = b"HTTP/1.1 101 "


class StrictStream(tornado.iostream.IOStream):
    """A server connection that, once upgraded to a WebSocket, lets through only sound client frames."""

    def __init__(self, connection: socket.socket, *, max_message_size: int, **options) -> None:
        super().__init__(connection, **options)
        self.max_message_size = max_message_size
        self.frames: ClientFrames | None = None   # set when the server answers 101
        self.early = 0                            # bytes received since the last request head ended
        self.head_tail = b""                      # the last bytes received, for a head end split in two
        self.failed = False                       # our close frame is on its way: nothing more goes out

    def read_from_fd(self, buf: bytearray | memoryview) -> int | None:
        count = super().read_from_fd(buf)
        if not count:
            return count                          # None: nothing to read; 0: the client closed
        if self.failed:
            return None                           # dropped: the client has its close code
        data = bytes(memoryview(buf)[:count])  # a copy: nothing here holds on to Tornado's buffer
        if self.frames is None:
            self.note_request_bytes(data)
            return count
        try:
            self.frames.receive(data)
        except FrameError as error:
            self.fail(error)
            return error.sound or None            # Tornado gets the sound bytes before the fault
        return count

    def note_request_bytes(self, data: bytes) -> None:
        """Count what arrives after the latest request head: a client sends nothing after its
        upgrade request until it has the answer (RFC 6455 4.1)."""
        seen = self.head_tail + data
        ends = [match.end() for match in _HEAD_END.finditer(seen)]
        self.early = len(seen) - ends[-1] if ends else self.early + len(data)
        self.head_tail = seen[-3:]

    def write(self, data: bytes | memoryview) -> asyncio.Future:
        if self.failed:  # RFC 6455 5.5.1: nothing follows a close frame
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        if self.frames is None and bytes(data[:len(_SWITCHING)]) == _SWITCHING:
            return self.upgrade(bytes(data))
        return super().write(data)

    def upgrade(self, answer: bytes) -> asyncio.Future:
        """The server said 101: from here on the client sends frames."""
        head = answer.split(b"\r\n\r\n", 1)[0].lower()
        deflate = b"sec-websocket-extensions:" in head and b"permessage-deflate" in head  # RFC 7692 5
        self.frames = ClientFrames(self.max_message_size, deflate=deflate)
        written = super().write(answer)
        if self.early:
            self.fail(FrameError(PROTOCOL_ERROR, "data sent before the handshake's answer (RFC 6455 4.1)"))
        return written

    def fail(self, error: FrameError) -> None:
        """RFC 6455 7.1.7: the close frame with the code, then the end of our stream; drop what comes."""
        self.failed = True
        super().write(close_frame(error.code, error.reason)).add_done_callback(self.end_writing)
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.close)

    def close_fd(self) -> None:
        """Close the socket; if the client is still sending (a body the server refused unread), close
        as nginx does (its "lingering close"): end our side, then read and drop what comes for up to
        ``LINGER`` seconds. Closed with unread data, a socket answers the client with a reset, and
        the client's stack may throw away the answer it had not read yet (RFC 9112 9.6)."""
        sock, self.socket = self.socket, None
        if sock is None:
            return
        try:
            pending = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # nothing pending (BlockingIOError), or the client is gone
            sock.close()
            return
        if not pending:   # the client closed its side already
            sock.close()
            return
        _linger(sock)

    def end_writing(self, flushed: asyncio.Future) -> None:
        if not flushed.cancelled() and flushed.exception() is None and self.socket is not None:  # in the kernel
            try:
                self.socket.shutdown(socket.SHUT_WR)  # FIN after the close frame: no reset, no lost frame
            except OSError:
                pass  # the client is gone already


def _linger(sock: socket.socket) -> None:
    """Drop what ``sock`` receives until its client closes or ``LINGER`` seconds pass, then close it."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # closed from outside the loop (at exit): no one is left to drain
        sock.close()
        return
    fd = sock.fileno()

    def done() -> None:
        loop.remove_reader(fd)
        timer.cancel()
        sock.close()

    def drain() -> None:
        try:
            while sock.recv(65536):
                pass
        except BlockingIOError:
            return            # all read for now: wait for more
        except OSError:
            pass              # reset by the client
        done()                # the client closed, or reset

    timer = loop.call_later(LINGER, done)
    loop.add_reader(fd, drain)


@dataclass
class Listener:
    """A Tornado HTTP server on a socket the lab bound, accepting ``StrictStream`` connections."""

    http_server: tornado.httpserver.HTTPServer
    sockets: list[socket.socket]
    stop_accepting: list[Callable[[], None]] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for stop in self.stop_accepting:
            stop()
        for sock in self.sockets:
            sock.close()
        self.http_server.stop()
        await self.http_server.close_all_connections()


def listen(app: tornado.web.Application, *, send_buffer: int | None = None, **server_options) -> Listener:
    """Serve ``app`` on 127.0.0.1 at an OS-chosen port (call on the loop that will serve it).

    ``send_buffer`` sets each connection's kernel send buffer (``SO_SNDBUF``), so that a slow
    reader's backlog shows in the server's own queues within a second instead of hiding in the kernel.
    The head of a request is read up to ``MAX_HEAD`` bytes, past Tornado's 64 KiB, so that a handler
    can answer an oversized one with 431 (``patterns/_input.SizeLimits``) where Tornado would hang up.
    """
    http_server = tornado.httpserver.HTTPServer(app, **{"max_header_size": MAX_HEAD, **server_options})
    sockets = tornado.netutil.bind_sockets(0, LOOPBACK, backlog=BACKLOG)
    max_message_size = app.settings.get("websocket_max_message_size", MAX_MESSAGE_SIZE)

    def accepted(connection: socket.socket, address) -> None:
        if send_buffer is not None:
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        stream = StrictStream(connection, max_message_size=max_message_size,
                              max_buffer_size=http_server.max_buffer_size,
                              read_chunk_size=http_server.read_chunk_size)
        http_server.handle_stream(stream, address)

    return Listener(http_server, sockets, [tornado.netutil.add_accept_handler(s, accepted) for s in sockets])
