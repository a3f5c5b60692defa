"""The polling pattern: the latest value, ETag and 304, keep-alive and its limits, bad input."""

import asyncio
import json
import statistics
import time

import aiohttp

from conftest import scaled
from labsupport import Feed, WireMeter, lab
from labsupport.lab import cancel_all
from labsupport.patterns import polling
from labsupport.record import Recorder


def run(coro):
    return lab.run(coro, timeout=scaled(30))


def test_latest_answers_with_the_newest_event_and_304_when_unchanged():
    async def scenario():
        feed = Feed(rate=1)
        feed.publish()
        feed.publish()
        server = await lab.serve("poll-test", polling.handlers(feed))
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{server.url}/latest") as first:
                    body, etag = json.loads(await first.read()), first.headers["ETag"]
                async with session.get(f"{server.url}/latest", headers={"If-None-Match": etag}) as same:
                    unchanged = same.status, await same.read()
                feed.publish()
                async with session.get(f"{server.url}/latest", headers={"If-None-Match": etag}) as newer:
                    changed = newer.status, json.loads(await newer.read())
            return body, unchanged, changed
        finally:
            await lab.stop_server(server.name)

    body, unchanged, changed = run(scenario())
    assert body["seq"] == 2
    assert unchanged == (304, b"")
    assert changed[0] == 200 and changed[1]["seq"] == 3


def test_bad_requests_get_4xx_and_the_server_keeps_serving():
    async def scenario():
        feed = Feed(rate=1)
        feed.publish()
        server = await lab.serve("poll-test", polling.handlers(feed))
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET\r\n\r\n")
            garbage = await asyncio.wait_for(reader.read(), scaled(5))
            writer.close()
            async with aiohttp.ClientSession() as session:
                async with session.delete(f"{server.url}/latest") as response:
                    deleted = response.status, json.loads(await response.read())
                async with session.get(f"{server.url}/latest") as response:
                    good = response.status
            return garbage, deleted, good
        finally:
            await lab.stop_server(server.name)

    garbage, (status, body), good = run(scenario())
    assert garbage.startswith(b"HTTP/1.1 400")
    assert status == 405 and body == {"error": "DELETE is not allowed here: only GET."}
    assert good == 200


async def polls_through_meter(interval: float, polls: int, **options):
    """One client polls through a wire meter; returns (requests answered, connections opened)."""
    feed = Feed(rate=1)
    feed.publish()
    server = await lab.serve("poll-conn", polling.handlers(feed))
    meter = await WireMeter(server.port).start()
    recorder = Recorder(0)
    client = asyncio.create_task(polling.poll(meter.url, recorder, interval=interval, **options))
    try:
        deadline = asyncio.get_running_loop().time() + scaled(20)
        while len(recorder.requests) < polls and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        return len(recorder.requests), meter.counts().connections_opened, recorder.errors
    finally:
        client.cancel()
        await asyncio.gather(client, return_exceptions=True)
        await meter.stop()
        await lab.stop_server(server.name)


def test_keep_alive_reuses_one_connection():
    polls, connections, errors = run(polls_through_meter(0.05, 8))
    assert polls >= 8 and connections == 1 and not errors


def test_without_keep_alive_every_poll_opens_a_connection():
    polls, connections, errors = run(polls_through_meter(0.05, 8, keep_alive=False))
    assert polls >= 8 and connections >= polls and not errors


def test_polling_slower_than_the_idle_timeout_opens_a_connection_per_poll():
    # aiohttp closes a connection idle for the timeout at its next clean-up pass. A poll whose
    # answer came late on a busy machine polls again at once (it has fallen behind its clock)
    # and may reuse the connection before that pass: one such poll is allowed for.
    polls, connections, errors = run(polls_through_meter(0.3, 6, idle_timeout=0.05))
    assert polls >= 6 and connections >= polls - 1 and not errors


def test_a_poller_that_fell_behind_asks_at_once_then_keeps_its_phase():
    assert polling.next_poll(10.0, 0.1, 10.002) == (10.1, 10.1)           # on time: the next tick
    wake, tick = polling.next_poll(10.0, 0.1, 10.25)                       # 2.5 intervals late
    assert wake == 10.25 and abs(tick - 10.2) < 1e-9                       # at once, for the tick missed last
    wake, tick = polling.next_poll(tick, 0.1, 10.252)
    assert abs(wake - 10.3) < 1e-9                                         # then its own ticks again


def test_a_pause_of_the_lab_does_not_line_the_pollers_up():
    """Ten pollers start at random phases. After the whole lab stops for 0.35 s, as a garbage
    collection or a busy machine can make it, each must still poll at its own phase: catching up
    "now" would make all ten poll in step, and every update would wait the same time."""
    interval = 0.1

    async def scenario():
        feed = Feed(rate=1)
        feed.publish()
        server = await lab.serve("poll-phase", polling.handlers(feed))
        recorders = [Recorder(i) for i in range(10)]
        tasks = [asyncio.create_task(polling.poll(server.url, r, interval=interval)) for r in recorders]
        try:
            await asyncio.sleep(0.5)
            time.sleep(0.35)                 # the whole lab loop stops
            paused_until = time.monotonic()
            await asyncio.sleep(0.5)
        finally:
            await cancel_all(tasks)
            await lab.stop_server(server.name)
        return [[q.sent for q in r.requests if q.sent > paused_until + interval] for r in recorders]

    after = run(scenario())
    phases = sorted(statistics.median(sent % interval for sent in polls) for polls in after)
    gaps = [b - a for a, b in zip(phases, phases[1:])] + [phases[0] + interval - phases[-1]]
    # In step, all ten phases would sit within a few ms (one gap near the whole interval); spread
    # at random, the largest gap between ten phases on a 100 ms circle is about 30 ms.
    assert max(gaps) < 0.75 * interval, [round(p * 1000) for p in phases]
