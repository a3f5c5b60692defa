"""HTTP/2: the same poll and the same event stream, carried as streams of one connection.

HTTP/2 (RFC 9113) keeps HTTP's meaning (methods, status codes, headers) and changes the
bytes: every request and response is a *stream* of binary *frames* (9-byte header, then a
payload), and many streams share one TCP connection. Headers travel in HEADERS frames,
compressed with HPACK (RFC 7541): a header the connection has already seen is sent as an
index into a table both ends keep, usually one byte (RFC 7541 §6.1).

Server side: a small ASGI app served by Hypercorn (a real HTTP/1.1 and HTTP/2 server), so the
same routes answer either protocol:

* ``GET /poll``: the latest event as JSON (a poll);
* ``GET /events``: a ``text/event-stream`` of every event after now (SSE, one DATA frame per
  event on HTTP/2, one chunk per event on HTTP/1.1).

It speaks HTTP/2 in clear text with "prior knowledge" (RFC 9113 §3.3): the client starts with
the connection preface at once. Browsers only use HTTP/2 over TLS, but the frames inside are the
same, and in clear text the wire meter can count and decode every byte.

Client side: ``httpx`` with the ``h2`` library. ``client(http2=True)`` speaks HTTP/2 only;
``client(http2=False)`` HTTP/1.1 with keep-alive. ``frames`` decodes captured bytes.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
from hpack import Decoder
from hyperframe.frame import Frame, HeadersFrame
from hypercorn.asyncio import serve
from hypercorn.config import Config

from ..feed import Feed
from ..record import Recorder
from .sse import event_id
from .sse_codec import EventStreamParser, encode_event

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"   # RFC 9113 §3.4: what a client sends first
FRAME_HEADER = 9                                # RFC 9113 §4.1: length 3, type 1, flags 1, stream id 4
MAX_STREAMS = 100                               # Hypercorn's default SETTINGS_MAX_CONCURRENT_STREAMS


def app(feed: Feed):
    """The ASGI app: ``/poll`` and ``/events`` over ``feed``."""

    async def asgi(scope, receive, send) -> None:
        if scope["type"] == "lifespan":  # nothing to set up or tear down; say so at once
            while True:
                message = (await receive())["type"]
                await send({"type": message + ".complete"})
                if message == "lifespan.shutdown":
                    return
        if scope["path"] == "/poll":
            latest = feed.latest
            body = json.dumps(latest.to_json() if latest else {"seq": 0}).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"), (b"cache-control", b"no-cache")]})
            await send({"type": "http.response.body", "body": body})
        elif scope["path"] == "/events":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
            await send({"type": "http.response.body", "body": b"", "more_body": True})  # headers go now
            cursor = feed.last_seq
            gone = asyncio.ensure_future(_disconnected(receive))
            try:
                while True:
                    news = asyncio.ensure_future(feed.wait_after(cursor))
                    await asyncio.wait({news, gone}, return_when=asyncio.FIRST_COMPLETED)
                    if gone.done():  # the client closed the stream: stop waiting for news
                        news.cancel()
                        return
                    for event in news.result():
                        framed = encode_event(json.dumps(event.to_json()), id=event_id(feed, event.seq))
                        await send({"type": "http.response.body", "body": framed, "more_body": True})
                        cursor = event.seq
            finally:
                gone.cancel()
        else:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"no such page"})

    return asgi


async def _disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class Http2Server:
    """Hypercorn serving ``app(feed)`` on 127.0.0.1, an OS-chosen port, HTTP/1.1 and HTTP/2 alike."""

    def __init__(self, feed: Feed, *, max_streams: int = MAX_STREAMS) -> None:
        if not 1 <= max_streams <= 1000:
            raise ValueError(f"max_streams must be between 1 and 1000, not {max_streams!r}.")
        self.feed, self.max_streams = feed, max_streams
        self._socket = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.port = self._socket.getsockname()[1]
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self) -> "Http2Server":
        config = Config()
        config.bind = [f"fd://{self._socket.detach()}"]  # Hypercorn owns the socket from here on
        config.h2_max_concurrent_streams = self.max_streams
        config.accesslog = config.errorlog = None
        config.graceful_timeout = 0.2
        self._task = asyncio.create_task(serve(app(self.feed), config, shutdown_trigger=self._stop.wait))
        await _until_listening(self.port)
        return self

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 5)
            except (asyncio.TimeoutError, Exception):
                self._task.cancel()
        if self._socket.fileno() >= 0:  # never started
            self._socket.close()


async def _until_listening(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.01)


def client(*, http2: bool, streams: int = 200) -> httpx.AsyncClient:
    """An httpx client speaking only HTTP/2 (prior knowledge), or only HTTP/1.1 with keep-alive."""
    limits = httpx.Limits(max_connections=streams, max_keepalive_connections=streams)
    return httpx.AsyncClient(http1=not http2, http2=http2, limits=limits, timeout=httpx.Timeout(10, read=None))


async def listen(http: httpx.AsyncClient, base_url: str, recorder: Recorder) -> None:
    """Follow ``/events`` on ``http`` (whichever protocol it speaks) and record each event."""
    sent = time.monotonic()
    async with http.stream("GET", f"{base_url}/events") as response:
        recorder.request(sent, response.status_code, 0)
        parser = EventStreamParser()
        async for chunk in response.aiter_raw():
            for event in parser.feed(chunk):
                recorder.saw(json.loads(event.data)["seq"])


def frames(stream: bytes) -> list[tuple[Frame, dict | None]]:
    """Decode captured HTTP/2 bytes (one direction) into frames; HEADERS come with their headers.

    The client's connection preface, if present, is skipped. One HPACK decoder follows the
    whole direction, as the receiving end's does. A frame the capture cut short is left out.
    """
    if stream.startswith(PREFACE):
        stream = stream[len(PREFACE):]
    decoder, found = Decoder(), []
    while len(stream) >= FRAME_HEADER:
        frame, length = Frame.parse_frame_header(memoryview(stream[:FRAME_HEADER]))
        if len(stream) < FRAME_HEADER + length:
            break
        frame.parse_body(memoryview(stream[FRAME_HEADER:FRAME_HEADER + length]))
        headers = None
        if isinstance(frame, HeadersFrame):
            headers = dict((k.decode() if isinstance(k, bytes) else k, v.decode() if isinstance(v, bytes) else v)
                           for k, v in decoder.decode(frame.data))
        found.append((frame, headers))
        stream = stream[FRAME_HEADER + length:]
    return found
