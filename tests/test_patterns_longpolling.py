"""The long-polling pattern: held requests, the cursor, the hold timeout, batching, bad input, restarts."""

import asyncio
import json
import time

import aiohttp
import pytest

from conftest import scaled
from labsupport import Feed, WireMeter, lab
from labsupport.patterns import longpolling
from labsupport.record import Recorder


def run(coro):
    return lab.run(coro, timeout=scaled(30))


async def serve(feed, name="lp-test", **options):
    return await lab.serve(name, longpolling.handlers(feed, **options))


async def get(url, **params):
    """One GET; returns (status, decoded JSON body, seconds it took)."""
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        async with session.get(url, params=params) as response:
            body = await response.read()
            return response.status, json.loads(body), time.monotonic() - started


def feed_with(events: int) -> Feed:
    """A feed that has published ``events`` events (a server's memory of them)."""
    feed = Feed(rate=1)
    for _ in range(events):
        feed.publish()
    return feed


def seqs(answer):
    return [event["seq"] for event in answer["events"]]


def test_answers_at_once_with_every_event_after_the_cursor():
    async def scenario():
        feed = Feed(rate=1)
        for _ in range(3):
            feed.publish()
        server = await serve(feed)
        try:
            return await get(f"{server.url}/events", after=1)
        finally:
            await lab.stop_server(server.name)

    status, answer, took = run(scenario())
    assert status == 200
    assert seqs(answer) == [2, 3]
    assert took < scaled(2)


def test_holds_the_request_until_news_arrives():
    async def scenario():
        feed = Feed(rate=1)
        held = longpolling.Held()
        server = await serve(feed, held=held)
        try:
            asking = asyncio.create_task(get(f"{server.url}/events", after=0))
            await asyncio.sleep(0.3)
            waiting = held.now
            feed.publish()
            status, answer, took = await asking
            return waiting, held.now, status, answer, took
        finally:
            await lab.stop_server(server.name)

    waiting, after, status, answer, took = run(scenario())
    assert waiting == 1 and after == 0
    assert status == 200 and seqs(answer) == [1]
    assert took >= 0.25  # it waited for the news rather than answering empty


def test_hold_timeout_answers_empty_and_the_client_keeps_its_cursor():
    async def scenario():
        feed = Feed(rate=1)
        feed.publish()
        server = await serve(feed, hold=0.2)
        try:
            return await get(f"{server.url}/events", after=1)
        finally:
            await lab.stop_server(server.name)

    status, answer, took = run(scenario())
    assert status == 200 and answer["events"] == [] and "reset" not in answer
    assert 0.15 <= took < scaled(3)


def test_without_a_cursor_only_news_from_now_on_comes_back():
    async def scenario():
        feed = Feed(rate=1)
        feed.publish()
        feed.publish()
        server = await serve(feed)
        try:
            asking = asyncio.create_task(get(f"{server.url}/events"))
            await asyncio.sleep(0.2)
            feed.publish()
            return await asking
        finally:
            await lab.stop_server(server.name)

    status, answer, _ = run(scenario())
    assert status == 200 and seqs(answer) == [3]


def test_batching_gathers_news_into_one_answer():
    async def scenario():
        feed = Feed(rate=1)
        server = await serve(feed, batch=0.3)
        try:
            asking = asyncio.create_task(get(f"{server.url}/events", after=0))
            await asyncio.sleep(0.1)
            feed.publish()
            await asyncio.sleep(0.05)
            feed.publish()
            return await asking
        finally:
            await lab.stop_server(server.name)

    status, answer, _ = run(scenario())
    assert seqs(answer) == [1, 2]


@pytest.mark.parametrize("cursor", ["abc", "-1", "1.5", "", "9" * 5000, "\u0661", "0_0", "+0", "\u00b2"])
def test_a_bad_cursor_gets_a_clear_400_and_the_server_keeps_serving(cursor):
    async def scenario():
        feed = Feed(rate=1)
        feed.publish()
        server = await serve(feed)
        try:
            bad = await get(f"{server.url}/events", after=cursor)
            good = await get(f"{server.url}/events", after=0)
            return bad, good
        finally:
            await lab.stop_server(server.name)

    (status, answer, _), (good_status, good_answer, _) = run(scenario())
    assert status == 400
    assert "cursor" in answer["error"] and "0 to 1" in answer["error"]
    assert good_status == 200 and seqs(good_answer) == [1]


def test_malformed_requests_get_4xx_answers_not_crashes():
    async def scenario():
        feed = Feed(rate=1)
        feed.publish()
        server = await serve(feed)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"THIS IS NOT HTTP\r\n\r\n")
            garbage = await asyncio.wait_for(reader.read(), scaled(5))
            writer.close()
            async with aiohttp.ClientSession() as session:
                async with session.post(f"{server.url}/events", data=b"x") as response:
                    posted = response.status, await response.json()
            good = await get(f"{server.url}/events", after=0)
            return garbage, posted, good
        finally:
            await lab.stop_server(server.name)

    garbage, (post_status, post_body), (good_status, _, _) = run(scenario())
    assert garbage.startswith(b"HTTP/1.1 400")
    assert post_status == 405 and "error" in post_body
    assert good_status == 200


def test_a_client_that_leaves_is_no_longer_held():
    async def scenario():
        feed = Feed(rate=1)
        held = longpolling.Held()
        server = await serve(feed, held=held)
        try:
            asking = asyncio.create_task(get(f"{server.url}/events", after=0))
            await asyncio.sleep(0.3)
            during = held.now
            asking.cancel()
            await asyncio.gather(asking, return_exceptions=True)
            deadline = time.monotonic() + scaled(5)
            while held.now and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            return during, held.now, held.peak
        finally:
            await lab.stop_server(server.name)

    during, after, peak = run(scenario())
    assert (during, after, peak) == (1, 0, 1)


async def client_through_restart(use_cursor: bool):
    """A client long-polls through a meter; the server restarts while events keep coming."""
    feed = Feed(rate=1)
    server = await serve(feed, name="lp-restart")
    meter = await WireMeter(server.port).start()
    recorder = Recorder(0)
    client = asyncio.create_task(longpolling.long_poll(meter.url, recorder, use_cursor=use_cursor))
    try:
        await asyncio.sleep(0.3)
        for _ in range(3):
            feed.publish()
            await asyncio.sleep(0.05)
        await lab.stop_server(server.name)
        for _ in range(4):  # news while the server is down
            feed.publish()
            await asyncio.sleep(0.05)
        server = await serve(feed, name="lp-restart")
        meter.target_port = server.port
        await asyncio.sleep(0.3)
        for _ in range(3):
            feed.publish()
            await asyncio.sleep(0.05)
        deadline = time.monotonic() + scaled(10)
        while (not recorder.seen or recorder.seen[-1][0] < feed.last_seq) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return [seq for seq, _ in recorder.seen], recorder.errors, feed.last_seq
    finally:
        client.cancel()
        await asyncio.gather(client, return_exceptions=True)
        await meter.stop()
        await lab.stop_server("lp-restart")


def test_with_a_cursor_a_restart_loses_nothing():
    seen, errors, last = run(client_through_restart(use_cursor=True))
    assert seen == list(range(1, last + 1))
    assert errors  # the client did notice the restart


def test_without_a_cursor_news_during_a_restart_is_lost():
    seen, errors, last = run(client_through_restart(use_cursor=False))
    assert errors
    assert not {4, 5, 6, 7} & set(seen)  # published while the server was down
    assert seen == sorted(seen) and seen[-1] == last


@pytest.mark.parametrize("published", [0, 3])
def test_a_cursor_past_the_newest_event_gets_a_prompt_reset_not_an_error(published):
    async def scenario():
        fresh = feed_with(published)   # a server that restarted with nothing of its old feed
        server = await serve(fresh, name="lp-fresh")
        try:
            return await get(f"{server.url}/events", after=5), fresh.stream
        finally:
            await lab.stop_server(server.name)

    (status, answer, seconds), stream = run(scenario())
    assert status == 200 and seconds < 1.0
    assert "restarted" in answer["reset"] and answer["stream"] == stream
    assert seqs(answer) == list(range(1, published + 1))


def test_a_cursor_from_another_stream_gets_a_reset_even_when_its_number_exists_here():
    async def scenario():
        fresh = feed_with(8)
        server = await serve(fresh, name="lp-other-life")
        try:
            other = await get(f"{server.url}/events", after=5, stream="0ldl1fe")
            same = await get(f"{server.url}/events", after=5, stream=fresh.stream)
            return other, same
        finally:
            await lab.stop_server(server.name)

    (status, other, _), (_, same, _) = run(scenario())
    assert status == 200 and "0ldl1fe" in other["reset"] and seqs(other) == list(range(1, 9))
    assert "reset" not in same and seqs(same) == [6, 7, 8]


def test_a_client_keeps_receiving_from_a_server_that_lost_its_feed():
    async def scenario():
        server = await serve(feed_with(5), name="lp-forgetful")
        meter = await WireMeter(server.port).start()
        recorder = Recorder(0)
        client = asyncio.create_task(longpolling.long_poll(meter.url, recorder))
        try:
            deadline = time.monotonic() + scaled(5)
            while len(recorder.seen) < 5 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            new = Feed(rate=1)
            server = await serve(new, name="lp-forgetful")  # a server that lost its history
            meter.target_port = server.port
            for _ in range(2):
                new.publish()
                await asyncio.sleep(0.05)
            while len(recorder.seen) < 7 and time.monotonic() < deadline + scaled(5):
                await asyncio.sleep(0.02)
            return [seq for seq, _ in recorder.seen], recorder.resets, client.done()
        finally:
            client.cancel()
            await meter.stop()
            await lab.stop_server("lp-forgetful")

    seen, resets, ended = run(scenario())
    assert seen == [1, 2, 3, 4, 5, 1, 2] and len(resets) == 1 and not ended


def test_retry_delay_doubles_and_is_capped():
    waits = [longpolling.doubling_delay(n) for n in range(1, 10)]
    assert waits[0] == pytest.approx(0.05)
    assert waits[1] == pytest.approx(2 * waits[0])
    assert max(waits) == pytest.approx(2.0)
