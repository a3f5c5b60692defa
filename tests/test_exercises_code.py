"""Change-the-code exercises: the model answer passes when run against a real server, and the
mistake a learner typically makes fails with a hint drawn from what was measured."""

import asyncio
import json
import time

import aiohttp
import tornado.iostream

from labsupport.exercises import ch01, ch02
from labsupport.patterns import push


class FlushEveryTenth(push.StreamHandler):
    """The template the learner starts from: it flushes only when the cursor is a multiple of 10."""

    async def get(self):
        self.set_header("Content-Type", "application/x-ndjson")
        cursor = self.feed.last_seq
        try:
            await self.flush()
            while True:
                for event in await self.feed.wait_after(cursor):
                    self.write(json.dumps(event.to_json()) + "\n")
                    cursor = event.seq
                if cursor % 10 == 0:
                    await self.flush()
        except (tornado.iostream.StreamClosedError, asyncio.CancelledError):
            pass


async def listen_to_the_end(base_url, recorder):
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base_url}/stream") as response:
            recorder.ready.set()
            for line in (await response.text()).splitlines():
                recorder.saw(json.loads(line)["seq"])


def test_ch01_flush_model_passes_and_the_template_fails_with_its_clumps():
    assert ch01.q3.verdict(ch01.q3.answer)[0] is True
    ok, why = ch01.q3.verdict(FlushEveryTenth)
    assert ok is False and "clumps" in why and "separate arrivals" in why


def test_ch01_listen_model_passes_and_reading_to_the_end_sees_nothing():
    assert ch01.q4.verdict(ch01.q4.answer)[0] is True
    ok, why = ch01.q4.verdict(listen_to_the_end)
    assert ok is False and "line by line" in why


def test_ch01_code_that_raises_gets_a_sentence_not_a_traceback():
    async def broken(base_url, recorder):
        raise ValueError("oops")

    ok, why = ch01.q4.verdict(broken)
    assert ok is False and "ValueError: oops" in why


async def poll_without_etag(base_url, recorder, interval=0.1):
    async with aiohttp.ClientSession() as session:
        recorder.ready.set()
        while True:
            sent = time.monotonic()
            async with session.get(f"{base_url}/latest") as response:
                event = json.loads(await response.read())
                recorder.saw(event["seq"])
                recorder.request(sent, response.status, 0)
            await asyncio.sleep(interval)


async def poll_with_a_session_per_poll(base_url, recorder, interval=0.1):
    recorder.ready.set()
    while True:
        async with aiohttp.ClientSession() as session:
            sent = time.monotonic()
            async with session.get(f"{base_url}/latest") as response:
                event = json.loads(await response.read())
                recorder.saw(event["seq"])
                recorder.request(sent, response.status, 0)
        await asyncio.sleep(interval)


def test_ch02_conditional_model_passes_and_a_poller_without_etag_sees_no_304():
    assert ch02.q5.verdict(ch02.q5.answer)[0] is True
    ok, why = ch02.q5.verdict(poll_without_etag)
    assert ok is False and "0 of" in why and "If-None-Match" in why


def test_ch02_keep_alive_model_passes_and_a_session_per_poll_opens_a_connection_each_time():
    assert ch02.q6.verdict(ch02.q6.answer)[0] is True
    ok, why = ch02.q6.verdict(poll_with_a_session_per_poll)
    assert ok is False and "new TCP connection" in why
