"""The SSE server and client: headers, heartbeats, history and resume, bad input, reconnection."""

import asyncio
import json

import aiohttp

from conftest import scaled
from labsupport import lab
from labsupport.feed import Feed
from labsupport.patterns import sse
from labsupport.patterns.sse_codec import EventStreamParser
from labsupport.record import Recorder
from labsupport.wire import WireMeter


async def _server(feed, **options):
    return await lab.serve("test-sse", sse.handlers(feed, **options))


async def _read_events(response, count, timeout):
    """Parse a live stream until ``count`` events arrived; returns (events, parser)."""
    parser, events = EventStreamParser(), []

    async def read():
        async for chunk in response.content.iter_any():
            events.extend(parser.feed(chunk))
            if len(events) >= count:
                return
    await asyncio.wait_for(read(), timeout)
    return events, parser


def published(n):
    feed = Feed(1.0)
    for _ in range(n):
        feed.publish()
    return feed


def test_stream_headers_and_flushed_events():
    async def go():
        feed = published(3)
        server = await _server(feed)
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{server.url}/events") as response:
                    assert response.status == 200
                    assert response.headers["Content-Type"] == "text/event-stream"
                    assert response.headers["X-Accel-Buffering"] == "no"
                    assert response.headers["Cache-Control"] == "no-cache"
                    assert response.headers["Transfer-Encoding"] == "chunked"
                    feed.publish()  # a new listener starts with the next event, and gets it at once
                    events, parser = await _read_events(response, 1, scaled(5))
                    assert [json.loads(e.data)["seq"] for e in events] == [4]
                    assert events[0].id == f"{feed.stream}-4" and parser.retry == sse.RETRY_MS
        finally:
            await lab.stop_server(server.name)
    lab.run(go(), timeout=scaled(20))


def test_heartbeat_comments_when_idle():
    async def go():
        server = await _server(published(0), heartbeat=0.05)
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{server.url}/events") as response:
                    parser = EventStreamParser()
                    while parser.comments < 3:
                        parser.feed(await asyncio.wait_for(response.content.readany(), scaled(5)))
        finally:
            await lab.stop_server(server.name)
    lab.run(go(), timeout=scaled(20))


def test_resume_from_last_event_id_and_missed_notice():
    async def go():
        feed = published(30)
        life = feed.stream
        server = await _server(feed, history=10)
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{server.url}/events", headers={"Last-Event-ID": f"{life}-25"}) as response:
                    events, _ = await _read_events(response, 5, scaled(5))
                    assert [e.id for e in events] == [f"{life}-{n}" for n in range(26, 31)]
                async with session.get(f"{server.url}/events", headers={"Last-Event-ID": f"{life}-4"}) as response:
                    events, _ = await _read_events(response, 11, scaled(5))
                    notice, *rest = events
                    assert notice.event == "missed" and json.loads(notice.data) == {"first": 5, "last": 20}
                    assert notice.id == f"{life}-20"  # a client that reconnects now resumes after the gap
                    assert [e.id for e in rest] == [f"{life}-{n}" for n in range(21, 31)]
        finally:
            await lab.stop_server(server.name)
    lab.run(go(), timeout=scaled(20))


def test_an_unknown_last_event_id_gets_200_a_reset_and_the_kept_events():
    """Never a 4xx: EventSource would give up for good (HTML standard, "fail the connection")."""
    async def go():
        feed = published(5)
        life = feed.stream
        server = await _server(feed, history=3)
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{server.url}/events") as good:
                    other_life = "0" * len(life) if life != "0" * len(life) else "1" * len(life)
                    for unknown in ("abc", "-1", "1e3", "9" * 40, "99", " 3 4", "\u0661", "0_0", "+1", "3",
                                    f"{life}-99", f"{life}--1", f"{life}-\u0661", f"{other_life}-3", "-3", f"{life}3"):
                        async with session.get(f"{server.url}/events", headers={"Last-Event-ID": unknown}) as response:
                            assert response.status == 200 and response.content_type == "text/event-stream", unknown
                            events, parser = await _read_events(response, 4, scaled(5))
                            reset, *kept = events
                            assert reset.event == "reset" and reset.id == f"{life}-2", unknown
                            assert json.loads(reset.data)["from"] == 3 and "Last-Event-ID" in reset.data
                            assert [e.id for e in kept] == [f"{life}-{n}" for n in (3, 4, 5)]
                    feed.publish()
                    events, _ = await _read_events(good, 1, scaled(5))
                    assert events[0].id == f"{life}-6"
        finally:
            await lab.stop_server(server.name)
    lab.run(go(), timeout=scaled(20))


def test_post_talks_back_and_bad_input_gets_a_reason():
    async def go():
        feed = published(0)
        server = await _server(feed, max_body=100)
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{server.url}/events") as stream:
                    assert await sse.publish(server.url, 42.5, session) == 1
                    events, _ = await _read_events(stream, 1, scaled(5))
                    assert json.loads(events[0].data) == {"seq": 1, "value": 42.5}
                    for body, words in ((b"not json", "not JSON"), (b'{"price": 1}', "value"),
                                        (b'{"value": "x"}', "finite number"), (b'{"value": NaN}', "NaN"),
                                        (b'{"value": Infinity}', "Infinity"), (b"[" * 90, "not JSON"),
                                        (b'{"value": 1e999}', "finite"), (b"\xff", "UTF-8")):
                        async with session.post(f"{server.url}/events", data=body) as response:
                            assert response.status == 400, body
                            assert words in await response.text(), body
                    async with session.post(f"{server.url}/events", data=b" " * 101) as response:
                        assert response.status == 413 and "100" in await response.text()
                    async with session.post(f"{server.url}/events", json={"value": 1},
                                            headers={"Origin": "http://evil.example"}) as response:
                        assert response.status == 403 and "evil.example" in await response.text()
                    async with session.post(f"{server.url}/events", json={"value": 2},
                                            headers={"Origin": server.url}) as response:
                        assert response.status == 202  # the server's own pages may publish
                    assert feed.last_seq == 2  # nothing refused was published
        finally:
            await lab.stop_server(server.name)
    lab.run(go(), timeout=scaled(20))


def test_client_reconnects_after_retry_with_last_event_id():
    async def go():
        feed = published(0)
        server = await _server(feed, retry=100)
        meter = await WireMeter(server.port, capture=1024).start()
        recorder = Recorder(0)
        client = asyncio.create_task(sse.listen(meter.url, recorder))
        try:
            await asyncio.wait_for(recorder.ready.wait(), scaled(5))
            for _ in range(3):
                feed.publish()
            while len(recorder.seen) < 3:
                await asyncio.sleep(0.01)
            assert await meter.cut_all() == 1
            for _ in range(3):
                feed.publish()  # published while the client is away
            while len(recorder.seen) < 6:
                await asyncio.wait_for(asyncio.sleep(0.01), scaled(5))
            assert [seq for seq, _ in recorder.seen] == [1, 2, 3, 4, 5, 6]
            assert len(recorder.requests) == 2 and recorder.errors
            second = bytes(meter.connections[1].head_up).decode()
            assert f"Last-Event-ID: {feed.stream}-3" in second
            assert recorder.requests[1].sent - meter.connections[0].closed >= 0.09  # waited for retry
        finally:
            client.cancel()
            await asyncio.gather(client, return_exceptions=True)
            await meter.stop()
            await lab.stop_server(server.name)
    lab.run(go(), timeout=scaled(30))


def test_client_gives_up_on_a_non_stream_answer():
    async def go():
        server = await lab.serve("test-not-sse", [])  # every path is a 404
        try:
            task = asyncio.create_task(sse.listen(server.url, Recorder(0)))
            await asyncio.wait([task], timeout=scaled(5))
            assert isinstance(task.exception(), sse.StreamRefused)
        finally:
            await lab.stop_server(server.name)
    lab.run(go(), timeout=scaled(20))


def test_strict_json_and_cursors_refuse_what_python_lets_through():
    from labsupport.patterns._input import cursor, strict_json

    for text in ("NaN", "-Infinity", '{"a": Infinity}', "[" * 100_000, b"\xff"):
        try:
            strict_json(text)
        except ValueError as error:
            assert str(error)  # a reason, not a traceback
        else:
            raise AssertionError(f"{text[:10]!r} was accepted")
    assert strict_json('{"value": 1.5}') == {"value": 1.5}
    assert [cursor(t) for t in ("0", "17", "\u0661", "0_0", "+0", " 7", "7 ", "9" * 19, "\u00b2")] == \
        [0, 17, None, None, None, None, None, None, None]
