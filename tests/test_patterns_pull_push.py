"""Chapter 1's patterns against their real servers: polling /latest and pushing /stream."""

import asyncio

import aiohttp

from conftest import scaled
from labsupport import Feed, lab
from labsupport.patterns import polling, push
from labsupport.record import Recorder


def run(coro):
    return lab.run(coro, timeout=scaled(30))


async def serve(handlers, feed):
    return await lab.serve("pattern-under-test", handlers(feed))


def test_latest_answers_the_newest_event_and_304_when_unchanged():
    async def scenario():
        feed = Feed(rate=1)
        server = await serve(polling.handlers, feed)
        async with aiohttp.ClientSession() as session:
            async with session.get(server.url + "/latest") as r:
                before = await r.json()
            feed.publish(101.5)
            async with session.get(server.url + "/latest") as r:
                first, etag = await r.json(), r.headers["ETag"]
            async with session.get(server.url + "/latest", headers={"If-None-Match": etag}) as r:
                unchanged = (r.status, await r.read())
            feed.publish(102.0)
            async with session.get(server.url + "/latest", headers={"If-None-Match": etag}) as r:
                changed = (r.status, await r.json())
        return before, first, unchanged, changed

    before, first, unchanged, changed = run(scenario())
    assert before == {"seq": 0, "value": None}
    assert first == {"seq": 1, "value": 101.5}
    assert unchanged == (304, b"")
    assert changed == (200, {"seq": 2, "value": 102.0})


def test_poll_records_new_and_empty_answers_on_schedule():
    async def scenario():
        feed = Feed(rate=1)
        server = await serve(polling.handlers, feed)
        recorder = Recorder(0)
        task = asyncio.ensure_future(polling.poll(server.url, recorder, interval=0.05))
        await asyncio.sleep(0.3)
        feed.publish()
        await asyncio.sleep(0.3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return recorder

    recorder = run(scenario())
    assert 8 <= len(recorder.requests) <= 14  # about 0.6 s / 0.05 s
    assert [seq for seq, _ in recorder.seen] == [1]
    assert sum(q.new_events for q in recorder.requests) == 1
    assert all(q.status == 200 for q in recorder.requests)


def test_push_streams_each_event_as_one_json_line():
    async def scenario():
        feed = Feed(rate=1)
        server = await serve(push.handlers, feed)
        recorder = Recorder(0)
        task = asyncio.ensure_future(push.listen(server.url, recorder))
        await asyncio.wait_for(recorder.ready.wait(), scaled(5))
        for value in (1.0, 2.0, 3.0):
            feed.publish(value)
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return recorder

    recorder = run(scenario())
    assert [seq for seq, _ in recorder.seen] == [1, 2, 3]
    assert len(recorder.requests) == 1 and recorder.requests[0].status == 200


def handler_tasks():
    return [t for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "RequestHandler._execute"]


def test_push_server_stops_cleanly_with_listeners_attached():
    async def scenario():
        feed = Feed(rate=1)
        server = await serve(push.handlers, feed)
        recorders = [Recorder(i) for i in range(20)]
        tasks = [asyncio.ensure_future(push.listen(server.url, r)) for r in recorders]
        await asyncio.wait_for(asyncio.gather(*(r.ready.wait() for r in recorders)), scaled(5))
        handling_before = len(handler_tasks())
        await lab.stop_server(server.name)
        done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), scaled(5))
        await asyncio.sleep(0.05)
        return done, handling_before, handler_tasks()

    done, handling_before, handling_after = run(scenario())
    assert len(done) == 20  # every listener saw its stream end, none hung
    assert handling_before == 20 and handling_after == []  # no handler is left waiting for news
