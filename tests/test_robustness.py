"""Abuse from outside, with third-party clients: every bad client gets a clear answer, costs bounded memory, and
leaves the server serving others with no traceback in its log.

The servers run in this process, in the lab, as in a notebook. The clients are not the course's own: raw sockets,
the ``websockets`` library, h11 and curl. Where memory is measured the abusive client runs in a child process, so
the resident memory (RSS) of this process is the server's (plus the test's small, steady share).
"""

import asyncio
import json
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time

import h11
import psutil
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from conftest import scaled
from labsupport import lab
from labsupport.feed import Feed
from labsupport.patterns import longpolling, polling, sse
from labsupport.patterns import websocket as ws

MB = 2**20


# -- the harness ----------------------------------------------------------------------------------

@pytest.fixture
def log(caplog):
    """Everything the servers log; the test fails if a traceback or an error reached it."""
    caplog.set_level(logging.INFO)
    yield caplog
    bad = [r for r in caplog.records
           if r.exc_info or r.levelno >= logging.ERROR or "Traceback" in r.getMessage()]
    assert not bad, "the server logged a traceback or an error:\n" + "\n".join(
        f"{r.name}: {r.getMessage()[:300]}" for r in bad)


def serve(name, handlers, **settings):
    return lab.run(lab.serve(name, handlers, **settings))


def stop(server):
    lab.run(lab.stop_server(server.name))


class Memory:
    """This process's resident memory: at the start, its peak while watched, and now."""

    def __init__(self):
        self.process = psutil.Process()
        self.start = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def stop(self):
        self._stop.set()
        self._thread.join()

    def settled(self, within: int, seconds: float = 5.0) -> int:
        """Growth over the start once memory has come back within ``within`` bytes (or time ran out)."""
        deadline = time.monotonic() + scaled(seconds)
        while True:
            grown = self.process.memory_info().rss - self.start
            if grown <= within or time.monotonic() > deadline:
                return grown
            time.sleep(0.05)


def child(script: str, *args, timeout: float = 30) -> str:
    """Run a client in a child Python process; its stdout."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
                          capture_output=True, text=True, timeout=scaled(timeout))
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def abuse(script: str, *args) -> tuple[str, int, int]:
    """An abusive client in a child process: its output, then this process's peak growth while it ran
    and its growth once memory came back (within 15 MB, or 5 s passed)."""
    memory = Memory()
    output = child(script, *args)
    memory.stop()
    return output, memory.peak - memory.start, memory.settled(within=15 * MB)


def echo_served_within(server, bound: float) -> float:
    """Seconds a fresh ``websockets`` client takes to get an echo back; fails past ``bound``."""
    async def go():
        started = time.monotonic()
        async with connect(ws.ws_url(server.url, "/echo"), proxy=None, compression=None) as conn:
            await conn.send("still there?")
            assert await conn.recv() == "still there?"
        return time.monotonic() - started
    took = lab.run(asyncio.wait_for(go(), scaled(bound)))
    assert took < scaled(bound)
    return took


# -- raw WebSocket frames ---------------------------------------------------------------------------

def ws_handshake(port: int, path: str = "/echo") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def raw_frame(opcode: int, payload: bytes, *, fin=True, rsv=0, masked=True, length: int | None = None) -> bytes:
    n = len(payload) if length is None else length
    first = (0x80 if fin else 0) | rsv | opcode
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = struct.pack("!BB", first, mask_bit | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def read_until_closed(sock: socket.socket) -> tuple[int | None, str, bool]:
    """Read frames until the server's close frame and the end of the stream: (code, reason, clean end)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
        clean = True
    except ConnectionResetError:
        clean = False
    code, reason = None, ""
    while len(data) >= 2:  # walk the server's (unmasked) frames
        opcode, n = data[0] & 0x0F, data[1] & 0x7F
        start = 2
        if n == 126:
            n, start = struct.unpack("!H", data[2:4])[0], 4
        elif n == 127:
            n, start = struct.unpack("!Q", data[2:10])[0], 10
        payload, data = data[start:start + n], data[start + n:]
        if opcode == 0x8 and len(payload) >= 2:
            code, reason = struct.unpack("!H", payload[:2])[0], payload[2:].decode()
    return code, reason, clean


@pytest.mark.parametrize("frame, words", [
    (raw_frame(0x1, b"unmasked hello", masked=False), "masked"),
    (raw_frame(0x1, b"hello", rsv=0x40), "RSV"),
    (raw_frame(0x3, b"hello"), "reserved"),
    (raw_frame(0x9, b"p" * 126), "control frame"),
    (raw_frame(0x9, b"ping", fin=False), "control frame"),
    (raw_frame(0x0, b"orphan"), "continuation"),
    (raw_frame(0x1, b"half", fin=False) + raw_frame(0x2, b"new"), "began before"),
], ids=["unmasked", "rsv-bit", "reserved-opcode", "long-ping", "fragmented-ping", "orphan-continuation",
        "interleaved-message"])  # named: the frames' masks are random, and parallel workers must agree on ids
def test_protocol_errors_get_1002_with_a_close_frame(log, frame, words):
    server = serve("robust-frames", ws.handlers(ws.Hub()))
    try:
        sock = ws_handshake(server.port)
        sock.sendall(raw_frame(0x1, b"fine"))  # a good frame first: echoed
        sock.sendall(frame)
        code, reason, clean = read_until_closed(sock)
        sock.close()
        assert (code, clean) == (1002, True) and words in reason
        echo_served_within(server, 2.0)
    finally:
        stop(server)


# -- WebSocket memory: bounded in bytes, freed on close ------------------------------------------------

NEVER_READS = """
    import asyncio, sys
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async def main(url, count, size):
        # max_queue=1: the library stops reading the socket once one message waits for recv()
        async with connect(url, max_queue=1, max_size=None, compression=None, proxy=None,
                           open_timeout=20) as conn:
            try:
                for _ in range(count):
                    await conn.send("x" * size)
                while True:
                    await conn.recv()  # only now: read what waited, then the close
            except ConnectionClosed as closed:
                print(closed.rcvd.code if closed.rcvd else None, flush=True)

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


def test_a_client_that_never_reads_echo_costs_its_byte_bound_and_is_closed_with_1013(log):
    hub = ws.Hub()
    server = serve("robust-echo", ws.handlers(hub))
    try:
        code, peak, grown = abuse(NEVER_READS, ws.ws_url(server.url, "/echo"), 100, 2 * MB)  # 200 MB, never read
        print(f"echo, never reading, 100 x 2 MB: peak +{peak / MB:.0f} MB, after +{grown / MB:.0f} MB")
        assert code == "1013"
        assert peak < ws.OUTBOX_BYTES + 40 * MB  # not 200 MB
        assert grown < 15 * MB and not hub.sockets
        echo_served_within(server, 2.0)
    finally:
        stop(server)


CHAT_NEVER_READS = """
    import asyncio, sys
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async def member(url, name):
        async with connect(f"{url}?name={name}", max_queue=1, max_size=None, compression=None, proxy=None) as conn:
            await asyncio.sleep(float(sys.argv[4]))  # never reads while the talker talks
            try:
                while True:
                    await conn.recv()
            except ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else None

    async def main(url, count, size):
        members = [asyncio.create_task(member(url, f"m{i}")) for i in range(6)]
        await asyncio.sleep(0.5)
        async with connect(f"{url}?name=talker", max_size=None, compression=None, proxy=None) as talker:
            for _ in range(count):
                await talker.send("y" * size)
                await talker.recv()  # the talker reads: it hears itself
        print(*(await asyncio.gather(*members)), flush=True)

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


def test_six_members_who_never_read_cost_their_bounds_and_leave_nothing_behind(log):
    hub = ws.Hub()
    server = serve("robust-chat", ws.handlers(hub))
    try:
        codes, peak, grown = abuse(CHAT_NEVER_READS, ws.ws_url(server.url, "/chat"), 100, MB, 2.0)
        print(f"chat, 6 never reading, 100 x 1 MB: peak +{peak / MB:.0f} MB, after +{grown / MB:.0f} MB")
        assert codes.split() == ["1013"] * 6
        assert peak < 6 * ws.OUTBOX_BYTES + 60 * MB  # not 600 MB
        assert grown < 15 * MB
        deadline = time.monotonic() + scaled(5)
        while (hub.sockets or hub.room) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not hub.sockets and not hub.room  # everyone left, nothing kept
        echo_served_within(server, 2.0)
    finally:
        stop(server)


# -- WebSocket handlers that validate their input ------------------------------------------------------

def test_bad_game_inputs_get_1007_and_bad_feed_cursors_1008(log):
    feed = Feed(1.0)
    feed.publish()
    server = serve("robust-handlers", ws.handlers(ws.Hub(feed)))

    async def closed_with(path, message=None):
        async with connect(ws.ws_url(server.url, path), proxy=None, compression=None) as conn:
            if message is not None:
                await conn.send(message)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(conn.recv(), scaled(5))
            return closed.value.rcvd.code

    try:
        for message in ("not json", '{"x": 1}', "[1, 2]", '{"n": NaN, "t": 1}', "[" * 100_000):
            assert lab.run(closed_with("/game", message)) == 1007, message
        for after in ("%C2%B2", "9" * 5000, "%D9%A1", "0_0", "%2B0"):
            assert lab.run(closed_with(f"/feed?after={after}")) == 1008, after
        echo_served_within(server, 2.0)
    finally:
        stop(server)


SENDS_TOO_MUCH = """
    import sys
    from websockets.sync.client import connect  # threads, not asyncio: CPython 3.11's transport can crash
    from websockets.exceptions import ConnectionClosed  # on close when the peer ends while it still writes

    with connect(sys.argv[1], max_size=None, compression=None, proxy=None, open_timeout=20) as conn:
        try:
            conn.send("z" * int(sys.argv[2]))
            conn.recv(timeout=10)
        except ConnectionClosed as closed:
            print(closed.rcvd.code if closed.rcvd else None, flush=True)
"""


def test_an_oversized_message_gets_1009_every_time(log):
    server = serve("robust-big", ws.handlers(ws.Hub()))  # Tornado's default limit: 10 MiB
    try:
        runs = [abuse(SENDS_TOO_MUCH, ws.ws_url(server.url, "/echo"), int(11.5e6)) for _ in range(5)]
        print(f"5 x 11.5 MB messages: peaks {[round(peak / MB) for _, peak, _ in runs]} MB")
        assert [code for code, _, _ in runs] == ["1009"] * 5
        assert all(peak < 10 * MB for _, peak, _ in runs)  # the rest of each message is discarded as it comes
        echo_served_within(server, 2.0)
    finally:
        stop(server)


# -- the SSE talk-back POST --------------------------------------------------------------------------

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed (Debian: apt-get install curl)")


def curl(*args) -> tuple[int, str]:
    done = subprocess.run(["curl", "-sS", "--noproxy", "*", "-o", "-", "-w", "\n%{http_code}", *args],
                          capture_output=True, text=True, timeout=scaled(30))
    body, _, status = done.stdout.rpartition("\n")
    return int(status), body


@pytest.fixture
def sse_server():
    feed = Feed(1.0)
    server = serve("robust-sse", sse.handlers(feed))
    yield server, feed
    stop(server)


@needs_curl
def test_talk_back_refuses_a_huge_body_with_413_before_reading_it(log, sse_server, tmp_path):
    server, feed = sse_server
    huge = tmp_path / "huge.json"
    with open(huge, "wb") as out:
        out.write(b'{"value": 1, "pad": "' + b"x" * (50 * MB) + b'"}')
    memory = Memory()
    status, body = curl("-X", "POST", "-H", "Content-Type: application/json", "--data-binary", f"@{huge}",
                        f"{server.url}/events")
    memory.stop()
    print(f"50 MB POST: peak +{(memory.peak - memory.start) / MB:.1f} MB")
    assert status == 413 and str(sse.MAX_BODY) in body
    assert memory.peak - memory.start < 10 * MB  # not 150 MB
    assert feed.last_seq == 0  # nothing published
    assert curl("-X", "POST", "--data-binary", '{"value": 1}', f"{server.url}/events")[0] == 202


@needs_curl
def test_talk_back_refuses_a_chunked_body_that_grows_too_big(log, sse_server):
    server, feed = sse_server
    chunks = subprocess.run(["curl", "-sS", "--noproxy", "*", "-o", "-", "-w", "\n%{http_code}", "-X", "POST",
                             "-H", "Transfer-Encoding: chunked", "--data-binary", "@-", f"{server.url}/events"],
                            input=b'{"value": 1, "pad": "' + b"x" * (2 * MB) + b'"}', capture_output=True,
                            timeout=scaled(30))
    assert chunks.stdout.rsplit(b"\n", 1)[1] == b"413" and feed.last_seq == 0


@needs_curl
@pytest.mark.parametrize("body, words", [
    (b'{"value": NaN}', "NaN"), (b'{"value": Infinity}', "Infinity"), (b'{"value": "nan"}', "finite"),
    (b"not json", "not JSON"), (b"[1, 2]", "object"),
])
def test_talk_back_parses_strictly_with_a_reason(log, sse_server, body, words):
    server, feed = sse_server
    status, text = curl("-X", "POST", "--data-binary", body.decode(), f"{server.url}/events")
    assert status == 400 and words in text and feed.last_seq == 0


@needs_curl
def test_talk_back_deep_nesting_gets_400_not_a_recursion_traceback(log):
    feed = Feed(1.0)
    server = serve("robust-sse-deep", sse.handlers(feed, max_body=200_000))
    try:
        status, text = curl("-X", "POST", "--data-binary", "[" * 100_000, f"{server.url}/events")
        assert status == 400 and "nested too deeply" in text
    finally:
        stop(server)


@needs_curl
def test_talk_back_refuses_another_sites_page_with_403(log, sse_server):
    server, feed = sse_server
    status, text = curl("-X", "POST", "-H", "Origin: http://evil.example", "-H", "Content-Type: text/plain",
                        "--data-binary", '{"value": 1}', f"{server.url}/events")
    assert status == 403 and "evil.example" in text and feed.last_seq == 0


@needs_curl
def test_listeners_are_still_served_during_the_abuse(log, sse_server):
    server, feed = sse_server

    async def listen_then_publish():
        import aiohttp
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.url}/events") as stream:
                await stream.content.readuntil(b"\n\n")  # the retry line: the stream is open
                bad = await asyncio.create_subprocess_exec(
                    "curl", "-sS", "--noproxy", "*", "-o", "/dev/null", "-X", "POST", "--data-binary", "@-",
                    f"{server.url}/events", stdin=asyncio.subprocess.PIPE)
                writer = asyncio.create_task(bad.communicate(b"x" * (20 * MB)))
                started = time.monotonic()
                feed.publish(1.0)
                line = await asyncio.wait_for(stream.content.readuntil(b"\n\n"), scaled(2))
                took = time.monotonic() - started
                await writer
                return line, took
    line, took = lab.run(listen_then_publish())
    assert b'"seq": 1' in line and took < scaled(0.5)


# -- cursors and request heads (h11, raw sockets) ----------------------------------------------------

def h11_get(port: int, target: str, headers=()) -> tuple[int, bytes]:
    conn = h11.Connection(h11.CLIENT)
    sock = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
    try:
        sock.sendall(conn.send(h11.Request(method="GET", target=target,
                                           headers=[("Host", "127.0.0.1"), *headers])))
        sock.sendall(conn.send(h11.EndOfMessage()))
        status, body = None, b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return status, body
    finally:
        sock.close()


@pytest.fixture
def long_poll_server():
    feed = Feed(1.0)
    feed.publish()
    server = serve("robust-lp", longpolling.handlers(feed, hold=0.2))
    yield server
    stop(server)


@pytest.mark.parametrize("after", ["%D9%A1", "0_0", "%2B0", "%C2%B2", "9" * 5000])
def test_long_poll_cursors_are_ascii_digits_only(log, long_poll_server, after):
    status, body = h11_get(long_poll_server.port, f"/events?after={after}")
    assert status == 400 and "cursor" in json.loads(body)["error"]
    assert h11_get(long_poll_server.port, "/events?after=0")[0] == 200


def test_long_targets_get_414_and_big_headers_431(log, long_poll_server):
    port = long_poll_server.port
    assert h11_get(port, "/events?after=0&pad=" + "p" * 20_000)[0] == 414
    assert h11_get(port, "/events?after=0", [("X-Pad", "p" * 20_000)])[0] == 431
    assert h11_get(port, "/events?after=0")[0] == 200


def test_a_head_past_64_kib_still_gets_431_and_past_the_lab_limit_the_connection_closes(log, long_poll_server):
    """Tornado alone hangs up past 64 KiB of request head; the lab's servers read up to 128 KiB
    (``serving.MAX_HEAD``) so that the handler can answer 431. Past that no status line is possible."""
    assert h11_get(long_poll_server.port, "/events?after=0", [("X-Pad", "p" * 100_000)])[0] == 431
    sock = socket.create_connection(("127.0.0.1", long_poll_server.port), timeout=scaled(10))
    sock.sendall(b"GET /events?after=0 HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 140_000 + b"\r\n\r\n")
    try:
        answer = sock.recv(100)
    except ConnectionResetError:
        answer = b""
    sock.close()
    assert answer == b""
    assert h11_get(long_poll_server.port, "/events?after=0")[0] == 200


@pytest.fixture
def poll_server():
    feed = Feed(1.0)
    feed.publish()
    server = serve("robust-poll", polling.handlers(feed))
    yield server
    stop(server)


def test_a_big_post_to_a_get_only_endpoint_is_refused_before_its_body_is_read(log, poll_server):
    """The answer comes while 49 of the 50 MB are still unsent: the body was never read."""
    sock = socket.create_connection(("127.0.0.1", poll_server.port), timeout=scaled(10))
    try:
        sock.sendall(b"POST /latest HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n" + b"x" * 1_000_000)
        answer = sock.recv(4096)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 405 ") and b"\r\nAllow: GET\r\n" in answer
    assert h11_get(poll_server.port, "/latest")[0] == 200


@pytest.mark.parametrize("path", ["/latest", "/events", "/chat"])
def test_a_client_still_sending_a_refused_body_reads_the_answer(log, path):
    """The server closes as nginx does, draining what comes, so the client reads its 405 and no reset."""
    import aiohttp

    feed = Feed(1.0)
    feed.publish()
    routes = {"/latest": polling.handlers(feed), "/events": longpolling.handlers(feed, hold=0.2),
              "/chat": ws.handlers(ws.Hub(feed))}[path]
    server = serve("robust-get-only", routes)

    async def post():
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{server.url}{path}", data=b"x" * 50_000_000) as answer:
                return answer.status, answer.headers.get("Allow"), await answer.json()
    try:
        status, allow, body = lab.run(post(), timeout=scaled(30))
    finally:
        stop(server)
    assert (status, allow) == (405, "GET") and body["error"].endswith("only GET.")
