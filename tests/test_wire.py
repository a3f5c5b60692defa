"""The wire meter: exact byte counts, captured heads, added latency, cut connections."""

import asyncio
import time

import pytest

from conftest import scaled
from labsupport import Link, WireMeter, lab

REQUEST = b"x" * 1000
REPLY = b"y" * 2500


async def reply_server():
    """A TCP server that reads exactly 1000 bytes, answers 2500, and keeps the line open."""

    async def handle(reader, writer):
        try:
            await reader.readexactly(len(REQUEST))
            writer.write(REPLY)
            await writer.drain()
            await reader.read()  # until the client (or the meter) closes
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def exchange(meter: WireMeter, close: bool = True):
    reader, writer = await asyncio.open_connection("127.0.0.1", meter.port)
    started = time.monotonic()
    writer.write(REQUEST)
    await writer.drain()
    reply = await reader.readexactly(len(REPLY))
    elapsed = time.monotonic() - started
    if close:
        writer.close()
        await writer.wait_closed()
    return reply, elapsed, (reader, writer)


def run(coro):
    return lab.run(coro, timeout=scaled(20))


def test_byte_counts_are_exact_and_heads_are_kept():
    async def scenario():
        server, port = await reply_server()
        meter = await WireMeter(port, capture=16).start()
        for _ in range(3):
            reply, _, _ = await exchange(meter)
            assert reply == REPLY
        await asyncio.sleep(0.05)
        counts = meter.counts()
        await meter.stop()
        server.close()
        return counts, meter.connections

    counts, connections = run(scenario())
    assert counts.connections_opened == 3
    assert counts.bytes_up == 3 * len(REQUEST)
    assert counts.bytes_down == 3 * len(REPLY)
    assert connections[0].head_up == REQUEST[:16] and connections[0].head_down == REPLY[:16]


def test_added_latency_is_observed_each_way():
    async def scenario():
        server, port = await reply_server()
        meter = await WireMeter(port, up=Link(latency=0.1), down=Link(latency=0.1)).start()
        reply, elapsed, _ = await exchange(meter)
        await meter.stop()
        server.close()
        return reply, elapsed

    reply, elapsed = run(scenario())
    assert reply == REPLY
    assert 0.2 <= elapsed < scaled(2.0)


def test_bandwidth_cap_slows_a_large_reply():
    async def scenario():
        server, port = await reply_server()
        meter = await WireMeter(port, down=Link(bandwidth=10_000)).start()  # 10 kB/s
        _, elapsed, _ = await exchange(meter)
        await meter.stop()
        server.close()
        return elapsed

    assert run(scenario()) >= 0.2  # 2500 bytes at 10 kB/s take at least 0.25 s


def test_cut_all_drops_every_open_connection():
    async def scenario():
        server, port = await reply_server()
        meter = await WireMeter(port).start()
        held = [(await exchange(meter, close=False))[2] for _ in range(4)]
        open_before = meter.counts().open_now
        cut = await meter.cut_all()
        ends = [await asyncio.wait_for(reader.read(), scaled(5)) for reader, _ in held]
        await asyncio.sleep(0.05)
        counts = meter.counts()
        for _, writer in held:
            writer.close()
        await meter.stop()
        server.close()
        return open_before, cut, ends, counts, meter.connections

    open_before, cut, ends, counts, connections = run(scenario())
    assert open_before == 4 and cut == 4
    assert ends == [b""] * 4  # every client saw its connection end
    assert counts.open_now == 0 and counts.peak_open == 4
    assert all(c.cut for c in connections)


def test_a_server_that_is_down_closes_the_client_connection():
    async def scenario():
        server, port = await reply_server()
        server.close()
        await server.wait_closed()
        meter = await WireMeter(port).start()
        reader, writer = await asyncio.open_connection("127.0.0.1", meter.port)
        data = await asyncio.wait_for(reader.read(), scaled(5))
        writer.close()
        await meter.stop()
        return data

    assert run(scenario()) == b""


def test_link_rejects_impossible_settings():
    with pytest.raises(ValueError, match="latency"):
        Link(latency=-1)
    with pytest.raises(ValueError, match="bandwidth"):
        Link(bandwidth=0)


def test_jitter_delays_but_never_reorders_bytes():
    pieces = [f"{n:03d}".encode() for n in range(50)]

    async def trickle(reader, writer):
        for piece in pieces:  # many small writes, so the meter relays many separate chunks
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.002)
        writer.close()

    async def scenario():
        server = await asyncio.start_server(trickle, "127.0.0.1", 0)
        meter = await WireMeter(server.sockets[0].getsockname()[1], down=Link(latency=0.01, jitter=0.05)).start()
        reader, writer = await asyncio.open_connection("127.0.0.1", meter.port)
        received = await asyncio.wait_for(reader.read(), scaled(10))
        writer.close()
        await meter.stop()
        server.close()
        return received

    assert run(scenario()) == b"".join(pieces)


def test_a_reader_that_does_not_read_pushes_back_on_the_sender():
    total = 32 * 2 ** 20
    sent = []

    async def flood(reader, writer):
        for _ in range(total // 65536):
            writer.write(b"z" * 65536)
            await writer.drain()  # blocks while nobody downstream reads
            sent.append(65536)
        writer.close()

    async def scenario():
        server = await asyncio.start_server(flood, "127.0.0.1", 0)
        meter = await WireMeter(server.sockets[0].getsockname()[1]).start()
        reader, writer = await asyncio.open_connection("127.0.0.1", meter.port)
        await asyncio.sleep(0.5)  # the client reads nothing meanwhile
        relayed_while_idle = meter.counts().bytes_down
        received = 0
        while chunk := await asyncio.wait_for(reader.read(2 ** 20), scaled(10)):
            received += len(chunk)
        writer.close()
        await meter.stop()
        server.close()
        return relayed_while_idle, received

    relayed_while_idle, received = run(scenario())
    assert relayed_while_idle < 16 * 2 ** 20  # socket buffers, not the whole flood, sat in between
    assert received == total
