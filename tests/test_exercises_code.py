"""Change-the-code exercises: the mistake a learner typically makes, run against a real server,
fails with a hint drawn from what was measured; code that raises or hangs gets a sentence."""

import asyncio
import json
import time
import uuid

import aiohttp
import nats.errors
import pytest
import tornado.iostream
from nats.js.api import AckPolicy, ConsumerConfig

from labsupport.exercises import ch01, ch02, ch03, ch04, ch05, ch06, ch07, ch08, ch09
from labsupport.patterns import longpolling, push, sse, webhook, websocket
from labsupport.patterns.sse_codec import EventStreamParser


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


# -- chapter 3: long polling -------------------------------------------------------------------

async def long_poll_without_cursor(base_url, recorder):
    async with aiohttp.ClientSession() as session:
        cursor = 0
        while True:
            sent = time.monotonic()
            async with session.get(f"{base_url}/events", params={}) as response:
                answer = await response.json()
            for event in answer["events"]:
                recorder.saw(event["seq"])
                cursor = event["seq"]
            recorder.request(sent, response.status, len(answer["events"]))


async def long_poll_stuck_at_zero(base_url, recorder):
    async with aiohttp.ClientSession() as session:
        while True:
            sent = time.monotonic()
            async with session.get(f"{base_url}/events", params={"after": 0}) as response:
                answer = await response.json()
            for event in answer["events"]:
                recorder.saw(event["seq"])
            recorder.request(sent, response.status, len(answer["events"]))


# -- chapter 4: Server-Sent Events -------------------------------------------------------------

async def listen_without_last_event_id(base_url, recorder):
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"{base_url}/events", headers={"Accept": "text/event-stream"}) as response:
                    recorder.ready.set()
                    parser = EventStreamParser()
                    async for chunk in response.content.iter_any():
                        for event in parser.feed(chunk):
                            if event.event == "message":
                                recorder.saw(json.loads(event.data)["seq"])
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)


class SameRetryForAll(sse.EventStreamHandler):
    def initialize(self, feed, **options):
        super().initialize(feed, **options)
        self.retry = 1000


# -- chapter 5: WebSockets ---------------------------------------------------------------------

async def play_in_lockstep(base_url, recorder):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(websocket.ws_url(base_url, "/game")) as conn:
            recorder.ready.set()
            n = 0
            while True:
                n += 1
                await conn.send_str(json.dumps({"n": n, "t": time.monotonic()}))
                json.loads((await conn.receive()).data)
                await asyncio.sleep(0.02)


# -- chapter 6: message queues, on the real broker ---------------------------------------------

async def ack_then_send(message, send_email):
    await message.ack()
    await send_email(message)


def test_ch06_a_worker_that_raises_or_hangs_gets_a_sentence():
    async def broken(message, send_email):
        raise ValueError("oops")

    async def stuck(message, send_email):
        await asyncio.Event().wait()

    assert ch06.q6.verdict(broken) == (False, "your email service was run on the real broker and stopped with an "
                                              "error: ValueError: oops")
    ok, why = ch06.q6.verdict(stuck)
    assert ok is False and "still busy" in why


# -- chapter 9: scaling out --------------------------------------------------------------------

async def place_order_without_id(publish, order_id, body):
    while True:
        try:
            return await publish(body, headers={})
        except nats.errors.TimeoutError:
            await asyncio.sleep(0.05)


async def place_order_with_a_new_id_each_time(publish, order_id, body):
    while True:
        try:
            return await publish(body, headers={"Nats-Msg-Id": uuid.uuid4().hex})
        except nats.errors.TimeoutError:
            await asyncio.sleep(0.05)


async def follow_with_own_count(gateways, recorder):
    cursor, received, at = None, 0, 0
    async with aiohttp.ClientSession() as session:
        while True:
            url = websocket.ws_url(gateways[at], "/feed" + ("" if cursor is None else f"?after={cursor}"))
            try:
                async with session.ws_connect(url) as socket:
                    recorder.ready.set()
                    async for message in socket:
                        received += 1
                        cursor = received
                        recorder.saw(json.loads(message.data)["seq"])
            except aiohttp.ClientError:
                pass
            at = (at + 1) % len(gateways)
            await asyncio.sleep(0.2)


class ReceiverThatWorksFirst(webhook.HookHandler):
    async def post(self):
        self.ledger.received += 1
        problem = webhook.verify(self.secret, self.request.headers, self.request.body)
        if problem is not None:
            self.set_status(401)
            self.finish({"refused": problem})
            return
        msg_id = self.request.headers["webhook-id"]
        await webhook.apply(self.ledger, msg_id, self.work, self.dedupe)
        self.finish({"applied": msg_id})


def the_short_ack_wait():
    return ConsumerConfig(durable_name="mailer", ack_policy=AckPolicy.EXPLICIT, ack_wait=0.3, max_deliver=-1)


# (exercise, a typical mistake, what the hint must say). Every model answer passing its own check
# is tested for all exercises at once in test_checks.py.
MISTAKES = [
    (ch01.q3, FlushEveryTenth, ["clumps", "separate arrivals"]),
    (ch01.q4, listen_to_the_end, ["line by line"]),
    (ch02.q5, poll_without_etag, ["0 of", "If-None-Match"]),
    (ch02.q6, poll_with_a_session_per_poll, ["new TCP connection"]),
    (ch03.q5, long_poll_without_cursor, ["events were lost", "after="]),
    (ch03.q5, long_poll_stuck_at_zero, ["every request asked for after=0"]),
    (ch03.q6, longpolling.doubling_delay, ["one wave", "random"]),
    (ch03.q6, lambda failures: 5.0, ["had not caught up"]),
    (ch04.q4, listen_without_last_event_id, ["lost across the cut", "Last-Event-ID"]),
    (ch04.q5, SameRetryForAll, ["same moment", "random retry"]),
    (ch05.q4, websocket.FeedSocket, ["Nothing was compressed", "get_compression_options"]),
    (ch05.q5, play_in_lockstep, ["waited for the server's ticks"]),
    (ch06.q5, the_short_ack_wait(), ["more than once", "ack_wait"]),
    (ch06.q6, ack_then_send, ["acknowledged before sending: 2 emails were lost"]),
    (ch07.q5, lambda rate: "sse", ["60 events/s, polling was cheaper"]),
    (ch07.q6, lambda feed: longpolling.handlers(feed, batch=0.0), ["at least the poll interval"]),
    (ch08.q4, ReceiverThatWorksFirst, ["answer 202"]),
    (ch09.q4, place_order_without_id, ["stored twice", "Nats-Msg-Id"]),
    (ch09.q4, place_order_with_a_new_id_each_time, ["a retry got a new one"]),
    (ch09.q5, follow_with_own_count, ["received twice", "not from your own count"]),
]


@pytest.mark.parametrize("exercise, mistake, hint", MISTAKES,
                         ids=[f"{e.name}-{getattr(m, '__name__', type(m).__name__)}" for e, m, _ in MISTAKES])
def test_a_typical_mistake_fails_with_a_hint_from_what_was_measured(exercise, mistake, hint):
    ok, why = exercise.verdict(mistake)
    assert ok is False and all(part in why for part in hint), why
