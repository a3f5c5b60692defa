"""HTTP/3: the same poll and event stream over QUIC, on UDP, with the aioquic library.

HTTP/3 (RFC 9114) maps HTTP onto QUIC (RFC 9000), a transport built on UDP with TLS 1.3 inside
it (RFC 9001). What changes from HTTP/2 over TCP:

* **one handshake**: QUIC sets up the connection and its encryption together, so the first
  request leaves after one round trip (TCP then TLS 1.3 take two);
* **independent streams**: QUIC orders bytes per stream (RFC 9000 §2.2), so a lost packet holds
  back only the stream it carried, not every stream as TCP does;
* **connection migration**: a connection is named by connection IDs, not by addresses, so it
  survives the client's address changing (RFC 9000 §9), a phone moving from Wi-Fi to mobile data.

QUIC always encrypts, so the server needs a certificate: ``certificate()`` makes a throw-away
certificate authority and a certificate for 127.0.0.1 at run time (``trustme``).

Server: ``Http3Server`` answers ``GET /poll`` and ``GET /events`` (an SSE stream) like
``http2.app``. Client: ``Http3Client`` sends requests and collects each stream's answer.
``UdpMeter`` relays datagrams on loopback, counting them and their bytes and adding a one-way
delay, as the wire meter does for TCP.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import trustme
from aioquic.asyncio import QuicConnectionProtocol, serve
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent

from ..feed import Feed
from ..lab import cancel_all
from .sse import event_id
from .sse_codec import encode_event

LOOPBACK = "127.0.0.1"


def certificate() -> tuple[QuicConfiguration, bytes]:
    """A server configuration with a fresh certificate for 127.0.0.1, and the CA a client must trust."""
    authority = trustme.CA()
    issued = authority.issue_cert(LOOPBACK)
    server = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    with tempfile.TemporaryDirectory() as folder:
        chain, key = Path(folder) / "chain.pem", Path(folder) / "key.pem"
        issued.cert_chain_pems[0].write_to_path(chain)
        issued.private_key_pem.write_to_path(key)
        server.load_cert_chain(chain, key)
    return server, authority.cert_pem.bytes()


class _ServerProtocol(QuicConnectionProtocol):
    feed: Feed
    tasks: set[asyncio.Task]   # the server's open event streams, shared by its connections

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic)

    def quic_event_received(self, event: QuicEvent) -> None:
        for http_event in self.http.handle_event(event):
            if isinstance(http_event, HeadersReceived):
                path = dict(http_event.headers).get(b":path", b"")
                self._answer(http_event.stream_id, path)

    def _answer(self, stream_id: int, path: bytes) -> None:
        if path == b"/poll":
            latest = self.feed.latest
            body = json.dumps(latest.to_json() if latest else {"seq": 0}).encode()
            self.http.send_headers(stream_id, [(b":status", b"200"), (b"content-type", b"application/json")])
            self.http.send_data(stream_id, body, end_stream=True)
        elif path == b"/events":
            self.http.send_headers(stream_id, [(b":status", b"200"), (b"content-type", b"text/event-stream")])
            task = asyncio.create_task(self._stream(stream_id))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        else:
            self.http.send_headers(stream_id, [(b":status", b"404")], end_stream=True)
        self.transmit()

    async def _stream(self, stream_id: int) -> None:
        cursor = self.feed.last_seq
        while True:
            for event in await self.feed.wait_after(cursor):
                framed = encode_event(json.dumps(event.to_json()), id=event_id(self.feed, event.seq))
                self.http.send_data(stream_id, framed, end_stream=False)
                cursor = event.seq
            self.transmit()



class Http3Server:
    """aioquic serving ``/poll`` and ``/events`` over HTTP/3 on 127.0.0.1, an OS-chosen UDP port."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self.configuration, self.ca_pem = certificate()
        self._server = None
        self._streams: set[asyncio.Task] = set()
        self.port: int | None = None

    async def start(self) -> "Http3Server":
        protocol = type("FeedProtocol", (_ServerProtocol,), {"feed": self.feed, "tasks": self._streams})
        self._server = await serve(LOOPBACK, 0, configuration=self.configuration, create_protocol=protocol)
        self.port = self._server._transport.get_extra_info("sockname")[1]
        return self

    async def stop(self) -> None:
        await cancel_all(self._streams)
        if self._server is not None:
            self._server.close()
            self._server = None


class Http3Client(QuicConnectionProtocol):
    """Sends GETs and collects, per stream, the headers and the data as it arrives (with times)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic)
        self.headers: dict[int, dict] = {}
        self.data: dict[int, list[tuple[float, bytes]]] = defaultdict(list)
        self.ended: dict[int, asyncio.Event] = defaultdict(asyncio.Event)

    def get(self, path: str) -> int:
        stream_id = self._quic.get_next_available_stream_id()
        self.http.send_headers(stream_id, [(b":method", b"GET"), (b":scheme", b"https"),
                                           (b":authority", LOOPBACK.encode()), (b":path", path.encode())],
                               end_stream=True)
        self.transmit()
        return stream_id

    def quic_event_received(self, event: QuicEvent) -> None:
        for http_event in self.http.handle_event(event):
            if isinstance(http_event, HeadersReceived):
                self.headers[http_event.stream_id] = dict(http_event.headers)
            elif isinstance(http_event, DataReceived):
                self.data[http_event.stream_id].append((time.monotonic(), http_event.data))
            if getattr(http_event, "stream_ended", False):
                self.ended[http_event.stream_id].set()


def client_configuration(ca_pem: bytes) -> QuicConfiguration:
    configuration = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    configuration.load_verify_locations(cadata=ca_pem)
    return configuration


class UdpMeter:
    """A UDP relay for one client: counts datagrams and bytes each way, delays each by ``latency`` s."""

    def __init__(self, target_port: int, latency: float = 0.0) -> None:
        self.target_port, self.latency = target_port, latency
        self.datagrams: list[tuple[float, str, int]] = []   # (time, "up" or "down", bytes)
        self._front = self._back = None
        self._client_addr = None
        self.port: int | None = None

    async def start(self) -> "UdpMeter":
        loop = asyncio.get_running_loop()
        meter = self

        class Front(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr) -> None:
                meter._client_addr = addr
                meter._pass("up", data, lambda: meter._back.sendto(data))

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr) -> None:
                meter._pass("down", data, lambda: meter._front.sendto(data, meter._client_addr))

        self._front, _ = await loop.create_datagram_endpoint(Front, local_addr=(LOOPBACK, 0))
        self._back, _ = await loop.create_datagram_endpoint(Back, remote_addr=(LOOPBACK, self.target_port))
        self.port = self._front.get_extra_info("sockname")[1]
        return self

    def _pass(self, direction: str, data: bytes, send) -> None:
        self.datagrams.append((time.monotonic(), direction, len(data)))
        asyncio.get_running_loop().call_later(self.latency, lambda: None if self._front is None else send())

    def bytes(self, direction: str, since: float = 0.0, until: float = float("inf")) -> int:
        return sum(n for t, d, n in self.datagrams if d == direction and since <= t < until)

    async def stop(self) -> None:
        for transport in (self._front, self._back):
            if transport is not None:
                transport.close()
        self._front = self._back = None
