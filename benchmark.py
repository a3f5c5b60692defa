"""Speed and memory of the course's machinery, each beside a plain baseline from the same run.

    python3 course.py bench

Tests never time anything; this is where speed lives. Each line prints the course's figure,
the baseline's, and their ratio, so a slow machine slows both and the ratio still means
something.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import tracemalloc

import aiohttp

from labsupport import lab
from labsupport.experiments.pull_push import run_push
from labsupport.experiments.pull_push import measure_held_connections
from labsupport.wire import WireMeter

PAYLOAD = b"x" * (4 * 1024 * 1024)
ROUND_TRIPS = 2000


async def echo_server():
    async def handle(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def round_trips(port: int, count: int) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        writer.write(b"ping")
        await reader.readexactly(4)
        times.append(time.perf_counter() - started)
    writer.close()
    return times


async def throughput(port: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.perf_counter()

    async def send():
        writer.write(PAYLOAD)
        await writer.drain()

    sender = asyncio.ensure_future(send())
    await reader.readexactly(len(PAYLOAD))
    await sender
    writer.close()
    return len(PAYLOAD) / (time.perf_counter() - started)


async def wire_meter_figures() -> list[tuple[str, float, float, str]]:
    server, port = await echo_server()
    meter = await WireMeter(port).start()
    direct_rtt = statistics.median(await round_trips(port, ROUND_TRIPS))
    meter_rtt = statistics.median(await round_trips(meter.port, ROUND_TRIPS))
    direct_bps = await throughput(port)
    meter_bps = await throughput(meter.port)
    await meter.stop()
    server.close()
    return [
        ("round trip through the wire meter (µs, median)", meter_rtt * 1e6, direct_rtt * 1e6, "direct TCP echo"),
        ("throughput through the wire meter (MB/s)", meter_bps / 1e6, direct_bps / 1e6, "direct TCP echo"),
    ]


async def request_rate() -> tuple[str, float, float, str]:
    """Requests per second: a Tornado /latest through aiohttp, against raw TCP request/answer."""
    from labsupport.feed import Feed
    from labsupport.patterns import polling

    feed = Feed(rate=1)
    feed.publish()
    server = await lab.serve("bench-latest", polling.handlers(feed))
    count = 500
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        for _ in range(count):
            async with session.get(server.url + "/latest") as response:
                await response.read()
        http_rate = count / (time.perf_counter() - started)
    await lab.stop_server("bench-latest")
    echo, port = await echo_server()
    raw_rate = 1 / statistics.mean(await round_trips(port, count))
    echo.close()
    return ("polls answered per second (one client)", http_rate, raw_rate, "raw TCP request/answer")


async def idle_connection_memory() -> tuple[str, float, float, str]:
    """Python memory per idle connection held by a bare asyncio server (the baseline)."""
    holders = []

    async def hold(reader, writer):
        holders.append(asyncio.current_task())
        await reader.read()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(400)]
    await asyncio.sleep(0.1)
    per_connection = (tracemalloc.get_traced_memory()[0] - before) / 400 / 2  # both ends are asyncio here
    tracemalloc.stop()
    for _, writer in clients:
        writer.close()
    await asyncio.gather(*holders)
    server.close()
    return per_connection


def main() -> None:
    rows = lab.run(wire_meter_figures())
    rows.append(lab.run(request_rate()))
    push = run_push(rate=200, clients=20, duration=2).summary()
    floor = statistics.median(lab.run(_floor())) * 1e3
    rows.append(("push latency p50 (ms)", push["latency_p50_ms"], floor, "one-way asyncio message on loopback"))
    rows.append(("push latency p99 (ms)", push["latency_p99_ms"], floor, "one-way asyncio message on loopback"))
    held = measure_held_connections(counts=(0, 200, 400)).attrs["bytes_per_connection"]
    bare = lab.run(idle_connection_memory())
    rows.append(("server memory per held push stream (kB)", held / 1e3, bare / 1e3, "bare asyncio connection"))
    lab.shutdown()
    width = max(len(r[0]) for r in rows)
    print(f"{'figure':<{width}}  {'course':>10}  {'baseline':>10}  {'ratio':>7}  baseline is")
    for name, course, baseline, what in rows:
        print(f"{name:<{width}}  {course:>10.2f}  {baseline:>10.2f}  {course / baseline:>7.2f}  {what}")


async def _floor() -> list[float]:
    """Half a raw asyncio round trip: the least any push can take on this machine."""
    server, port = await echo_server()
    times = await round_trips(port, ROUND_TRIPS)
    server.close()
    return [t / 2 for t in times]


if __name__ == "__main__":
    main()
