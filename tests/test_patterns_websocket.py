"""The WebSocket server and clients, including a second, independent client library (websockets)."""

import asyncio
import json
import socket

import aiohttp
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from conftest import scaled
from labsupport import lab
from labsupport.feed import Feed
from labsupport.patterns import websocket as ws
from labsupport.record import Recorder
from labsupport.wire import WireMeter


def run(coro_fn, timeout=20):
    """Start a WebSocket server (settings passed to Tornado), run the test body, always stop it."""
    async def go(hub, settings):
        server = await lab.serve("test-ws", ws.handlers(hub), **settings)
        try:
            await asyncio.wait_for(coro_fn(server, hub), scaled(timeout))
        finally:
            await lab.stop_server(server.name)

    def runner(hub=None, **settings):
        lab.run(go(hub or ws.Hub(), settings), timeout=scaled(timeout) + 5)
    return runner


def wsconnect(server, path):
    """The websockets library's client: no proxy, no compression, nothing shared with aiohttp."""
    return connect(ws.ws_url(server.url, path), proxy=None, compression=None, open_timeout=scaled(5))


# -- interoperability: a second client library -------------------------------------------------

def test_websockets_library_echo_and_big_messages():
    async def body(server, hub):
        async with wsconnect(server, "/echo") as conn:
            for message in ("hello", "ünïcode ✓", "x" * 70000):
                await conn.send(message)
                assert await conn.recv() == message
            await conn.send(b"\x00\x01binary")
            assert await conn.recv() == b"\x00\x01binary"
    run(body)()


def test_websockets_and_aiohttp_clients_share_a_chat_room():
    async def body(server, hub):
        async with wsconnect(server, "/chat?name=ws") as a, aiohttp.ClientSession() as session:
            async with session.ws_connect(ws.ws_url(server.url, "/chat?name=aio")) as b:
                while len(hub.room) < 2:
                    await asyncio.sleep(0.005)
                await a.send("from websockets")
                await b.send_str("from aiohttp")
                heard_a = [json.loads(await a.recv()) for _ in range(2)]
                heard_b = [json.loads(await b.receive_str()) for _ in range(2)]
                assert heard_a == heard_b  # one room, one order
                assert {m["from"] for m in heard_a} == {"ws", "aio"}
    run(body)()


def test_websockets_library_plays_the_game_in_full_duplex():
    async def body(server, hub):
        async with wsconnect(server, "/game") as conn:
            ticks = []

            async def read():
                while len(ticks) < 10:
                    ticks.append(json.loads(await conn.recv()))
            reader = asyncio.create_task(read())
            for n in range(1, 6):  # inputs go up while ticks come down
                await conn.send(json.dumps({"n": n, "t": 0.0}))
                await asyncio.sleep(0.02)
            await reader
            assert [t["tick"] for t in ticks] == list(range(1, 11))
            assert [n for n, _, _ in hub.inputs] == [1, 2, 3, 4, 5]
            assert ticks[-1]["ack"] >= 1  # the server's state reflects the inputs it has seen
    run(body)(ws.Hub(tick_rate=50))


def test_websockets_library_follows_the_feed_with_a_cursor():
    feed = Feed(1.0)
    for _ in range(5):
        feed.publish()

    async def body(server, hub):
        async with wsconnect(server, "/feed?after=2") as conn:
            assert [json.loads(await conn.recv())["seq"] for _ in range(3)] == [3, 4, 5]
            feed.publish()
            assert json.loads(await conn.recv())["seq"] == 6
    run(body)(ws.Hub(feed))


# -- bad input: a clear close code, and the others carry on --------------------------------------

def test_bad_input_gets_close_codes_and_others_are_served():
    async def body(server, hub):
        async with wsconnect(server, "/echo") as good:
            async with wsconnect(server, "/echo") as bad:
                await bad.send(b"caf\xe9", text=True)  # a text frame that is not UTF-8
                with pytest.raises(ConnectionClosed) as closed:
                    await bad.recv()
                assert closed.value.rcvd.code == 1007
            async with wsconnect(server, "/echo") as bad:
                await bad.send("x" * 5000)
                with pytest.raises(ConnectionClosed) as closed:
                    await bad.recv()
                assert closed.value.rcvd.code == 1009
            await good.send("still there?")
            assert await good.recv() == "still there?"
    run(body)(websocket_max_message_size=4096)


def test_bad_feed_cursor_is_closed_with_a_reason():
    async def body(server, hub):
        for after in ("abc", "99"):
            async with wsconnect(server, f"/feed?after={after}") as conn:
                with pytest.raises(ConnectionClosed) as closed:
                    await conn.recv()
                assert closed.value.rcvd.code == 1008 and "after" in closed.value.rcvd.reason
    run(body)(ws.Hub(Feed(1.0)))


# -- the outbox bound and the ping/pong keepalive -------------------------------------------------

def test_outbox_policies():
    drop = ws.Outbox(3, "drop-oldest")
    assert all(drop.put(n) for n in range(5))
    assert list(drop.queue) == [2, 3, 4] and drop.dropped == 2 and drop.peak == 3
    close = ws.Outbox(3, "close")
    assert [close.put(n) for n in range(4)] == [True, True, True, False]
    unbounded = ws.Outbox(None, "close")
    assert all(unbounded.put(n) for n in range(1000)) and unbounded.peak == 1000
    with pytest.raises(ValueError):
        ws.Outbox(3, "block")


def test_outbox_bounds_bytes_too():
    big = "m" * 1000  # about 1 kB each
    close = ws.Outbox(None, "close", max_bytes=5000)
    assert [close.put(big) for _ in range(5)] == [True, True, True, True, False]
    assert close.bytes <= 5000
    drop = ws.Outbox(None, "drop-oldest", max_bytes=5000)
    assert all(drop.put(big) for _ in range(10)) and drop.bytes <= 5000 and drop.dropped == 6
    alone = ws.Outbox(None, "close", max_bytes=10)  # one message always fits an empty outbox
    assert alone.put(big) and not alone.put(big)
    alone.clear()
    assert alone.bytes == 0 and not alone.queue


def test_slow_reader_is_closed_with_1013_when_its_outbox_is_full():
    async def body(server, hub):
        async with aiohttp.ClientSession() as session:
            slow = await session.ws_connect(ws.ws_url(server.url, "/chat?name=slow"))  # never reads
            slow.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
            while not hub.sockets:
                await asyncio.sleep(0.005)
            slow_socket = hub.sockets[0]
            async with session.ws_connect(ws.ws_url(server.url, "/chat?name=fast")) as fast:
                for _ in range(100):  # 100 x 64 KB: more than the (shrunk) buffers and aiohttp's 512 KiB
                    await fast.send_str("z" * 65536)
                    await fast.receive_str()
            assert slow_socket.ws_connection is None  # the server closed it (the handler lets go at once)
            assert slow_socket.outbox.peak == 5 and not slow_socket.outbox.queue  # bounded, then freed
            async for _ in slow:  # read what was already on its way, then the close frame
                pass
            assert slow.close_code == ws.TRY_AGAIN_LATER
            while hub.sockets:  # closed sockets leave the hub
                await asyncio.sleep(0.01)
    run(body, timeout=40)(ws.Hub(outbox_limit=5, policy="close"), send_buffer=8192)


def test_ping_pong_drops_a_frozen_peer_and_keeps_a_live_one():
    async def body(server, hub):
        async with aiohttp.ClientSession() as session:
            frozen = await session.ws_connect(ws.ws_url(server.url, "/echo"))  # never reads, never pongs
            async with wsconnect(server, "/echo") as live:  # the websockets library answers pings itself
                while len(hub.sockets) < 2:
                    await asyncio.sleep(0.005)
                frozen_socket = hub.sockets[0]
                while frozen_socket.ws_connection is not None and not frozen_socket.ws_connection.is_closing():
                    await asyncio.sleep(0.01)
                await live.send("alive?")
                assert await live.recv() == "alive?"
                assert not hub.sockets[1].ws_connection.is_closing()
            del frozen
    # A pause of the test process longer than the timeout would fail the live peer too (its pong
    # waits behind the server's timer): 0.3 s leaves room for a busy machine.
    run(body)(websocket_ping_interval=0.3, websocket_ping_timeout=0.3)


def test_follow_reconnects_and_resumes_after_a_cut():
    feed = Feed(1.0)

    async def body(server, hub):
        meter = await WireMeter(server.port, capture=512).start()
        recorder = Recorder(0)
        client = asyncio.create_task(ws.follow(meter.url, recorder, after=0, retry=0.05))
        try:
            await recorder.ready.wait()
            for _ in range(3):
                feed.publish()
            while len(recorder.seen) < 3:
                await asyncio.sleep(0.01)
            await meter.cut_all()
            for _ in range(3):
                feed.publish()
            while len(recorder.seen) < 6:
                await asyncio.sleep(0.01)
            assert [seq for seq, _ in recorder.seen] == [1, 2, 3, 4, 5, 6]
            assert b"GET /feed?after=3 " in bytes(meter.connections[1].head_up)
        finally:
            client.cancel()
            await asyncio.gather(client, return_exceptions=True)
            await meter.stop()
    run(body)(ws.Hub(feed))


def test_a_small_send_buffer_holds_writes_back_for_a_reader_that_never_reads():
    """``send_buffer`` reaches every connection: ``write_message``'s future stays pending once the
    kernel's buffers are full, after some tens of kB with 8 KiB, megabytes without it."""
    def flushed_before_stalling(send_buffer):
        taken = []

        async def body(server, hub):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)  # reads nothing after the 101
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
            writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            await reader.readuntil(b"\r\n\r\n")
            while not hub.sockets:
                await asyncio.sleep(0.005)
            message = "w" * 4096
            try:
                while sum(taken) < 64 * 2**20:
                    await asyncio.wait_for(hub.sockets[0].write_message(message), 0.5)
                    taken.append(len(message))
            except asyncio.TimeoutError:
                pass  # the kernel stopped taking frames
            writer.close()
        run(body)(**({} if send_buffer is None else {"send_buffer": send_buffer}))
        return sum(taken)

    small, default = flushed_before_stalling(8192), flushed_before_stalling(None)
    assert small < 200_000 < default, (small, default)


# -- the frame checks Tornado leaves out (labsupport/patterns/rfc6455.py, labsupport/serving.py) --------

def frame(first: int, second: int) -> bytes:
    return bytes([first, second])


@pytest.mark.parametrize("header, code, words", [
    (frame(0x81, 0x05), 1002, "masked"),            # a text frame without the mask bit
    (frame(0xC1, 0x85), 1002, "RSV"),               # RSV1 with no extension negotiated
    (frame(0x83, 0x85), 1002, "reserved"),          # opcode 3
    (frame(0x09, 0x80), 1002, "control"),           # a ping that is not final
    (frame(0x89, 0xFE), 1002, "control"),           # a ping longer than 125 bytes
    (frame(0x80, 0x85), 1002, "continuation"),      # continuing nothing
])
def test_frame_checker_fails_broken_headers(header, code, words):
    from labsupport.patterns.rfc6455 import FrameChecker, FrameError

    with pytest.raises(FrameError) as failed:
        FrameChecker(1000).header(header)
    assert failed.value.code == code and words in failed.value.reason


def test_frame_checker_counts_a_fragmented_message_against_the_limit():
    from labsupport.patterns.rfc6455 import FrameChecker, FrameError

    checker = FrameChecker(100)
    assert checker.header(frame(0x01, 0x80 | 60)) == 60  # first fragment, 60 bytes
    assert checker.header(frame(0x89, 0x80)) == 0  # a ping may come between fragments
    with pytest.raises(FrameError) as failed:
        checker.header(frame(0x81, 0x85))  # a new message before the last one ended
    assert failed.value.code == 1002
    checker = FrameChecker(100)
    checker.header(frame(0x01, 0x80 | 60))
    with pytest.raises(FrameError) as failed:
        checker.header(frame(0x80, 0x80 | 60))  # 60 + 60 > 100
    assert failed.value.code == 1009
    checker = FrameChecker(70000)
    assert checker.header(frame(0x82, 0x80 | 127)) is None  # the length follows in 8 bytes
    with pytest.raises(FrameError):
        checker.length(70001)


def test_close_reasons_fit_a_control_frame():
    from labsupport.patterns.rfc6455 import close_reason

    assert close_reason("short") == "short"
    long = close_reason("é" * 100)
    assert len(long.encode()) <= 123 and set(long) == {"é"}


@pytest.mark.parametrize("message, ok", [
    ('{"n": 1, "t": 2.5}', True), ("not json", False), ('{"x": 1}', False), ("[1, 2]", False),
    ('{"n": 1, "t": NaN}', False), ('{"n": true, "t": 1}', False), ('{"n": 1, "t": "1"}', False),
    ("[" * 100_000, False),
])
def test_game_inputs_are_validated(message, ok):
    assert (ws.game_input(message) is not None) == ok


def test_compressed_client_messages_pass_once_permessage_deflate_is_agreed():
    class CompressedEcho(ws.EchoSocket):
        def get_compression_options(self):
            return {}  # agree to permessage-deflate: client frames then carry RSV1 (RFC 7692)

    async def go():
        server = await lab.serve("test-ws-deflate", [(r"/echo", CompressedEcho, {"hub": ws.Hub()})])
        try:
            async with connect(ws.ws_url(server.url, "/echo"), proxy=None, compression="deflate",
                               open_timeout=scaled(5)) as conn:
                assert "permessage-deflate" in conn.response.headers.get("Sec-WebSocket-Extensions", "")
                for message in ("hello " * 50, "ünïcode ✓" * 20):
                    await conn.send(message)
                    assert await asyncio.wait_for(conn.recv(), scaled(5)) == message
        finally:
            await lab.stop_server(server.name)

    lab.run(go(), timeout=scaled(20))


def masked(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """A client frame, masked as RFC 6455 5.3 asks (short payloads only)."""
    key = b"\x01\x02\x03\x04"
    return bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)]) + key + bytes(
        b ^ key[i % 4] for i, b in enumerate(payload))


def test_client_frames_are_walked_across_any_split():
    from labsupport.patterns.rfc6455 import ClientFrames

    stream = masked(0x1, "héllo".encode(), fin=False) + masked(0x9, b"") + masked(0x0, " wörld".encode())
    stream += masked(0x2, b"\xff\xfe") + masked(0x8, b"\x03\xe8")
    for size in (1, 3, 7, len(stream)):  # one byte at a time, odd chunks, all at once
        frames = ClientFrames(100)
        assert all(frames.receive(stream[at:at + size]) == len(stream[at:at + size])
                   for at in range(0, len(stream), size))


def test_client_frames_say_how_much_came_before_the_fault():
    from labsupport.patterns.rfc6455 import ClientFrames, FrameError

    good = masked(0x1, b"fine")
    with pytest.raises(FrameError) as failed:
        ClientFrames(100).receive(good + bytes([0x81, 0x05]) + b"hello")  # then an unmasked frame
    assert failed.value.code == 1002 and failed.value.sound == len(good)
    text = "ünïcode".encode()
    bad = masked(0x1, text[:-1] + b"\xff")  # a text frame that is not UTF-8 to the end
    for split in (len(good) + 8, len(good) + 6 + len(text) - 1):  # the fault shows in a later chunk
        frames = ClientFrames(100)
        assert frames.receive((good + bad)[:split]) == split
        with pytest.raises(FrameError) as failed:
            frames.receive((good + bad)[split:])
        assert failed.value.code == 1007 and failed.value.sound == 0  # the faulty frame never completes
    with pytest.raises(FrameError) as failed:
        ClientFrames(100).receive(masked(0x1, "é".encode()[:1]))  # a character cut at the message's end
    assert failed.value.code == 1007
    with pytest.raises(FrameError) as failed:
        ClientFrames(100).receive(good + bytes([0x82, 0xFF]) + (10**6).to_bytes(8, "big"))  # 1 MB announced
    assert failed.value.code == 1009 and failed.value.sound == len(good)


def test_frames_sent_before_the_handshakes_answer_get_1002():
    """RFC 6455 4.1: the client waits for the 101 before it sends a frame; one that does not is failed."""
    async def body(server, hub):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                     + masked(0x1, b"too soon"))
        await reader.readuntil(b"\r\n\r\n")
        after = await asyncio.wait_for(reader.read(), scaled(10))  # up to the server's end of stream
        writer.close()
        assert after[:1] == b"\x88" and int.from_bytes(after[2:4], "big") == 1002 and b"before" in after
    run(body)()
