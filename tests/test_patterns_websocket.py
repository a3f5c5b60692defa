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


def test_slow_reader_is_closed_with_1008_when_its_outbox_is_full():
    async def body(server, hub):
        async with aiohttp.ClientSession() as session:
            slow = await session.ws_connect(ws.ws_url(server.url, "/chat?name=slow"))  # never reads
            slow.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
            while not hub.sockets:
                await asyncio.sleep(0.005)
            hub.sockets[0].ws_connection.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
            async with session.ws_connect(ws.ws_url(server.url, "/chat?name=fast")) as fast:
                for _ in range(100):  # 100 x 64 KB: more than the (shrunk) buffers and aiohttp's 512 KiB
                    await fast.send_str("z" * 65536)
                    await fast.receive_str()
            assert hub.sockets[0].ws_connection is None  # the server closed it (the handler lets go at once)
            assert hub.sockets[0].outbox.peak == 5
            async for _ in slow:  # read what was already on its way, then the close frame
                pass
            assert slow.close_code == ws.TOO_SLOW
    run(body, timeout=40)(ws.Hub(outbox_limit=5, policy="close"))


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
    run(body)(websocket_ping_interval=0.1, websocket_ping_timeout=0.1)


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
