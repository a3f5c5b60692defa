"""Change-the-code exercises: the model answer passes when run against a real server, and the
mistake a learner typically makes fails with a hint drawn from what was measured."""

import asyncio
import json
import time
import uuid

import aiohttp
import nats.errors
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


def test_ch03_resume_model_passes_and_a_request_without_cursor_loses_events_in_the_gap():
    assert ch03.q5.verdict(ch03.q5.answer)[0] is True
    ok, why = ch03.q5.verdict(long_poll_without_cursor)
    assert ok is False and "events were lost" in why and "after=" in why
    ok, why = ch03.q5.verdict(long_poll_stuck_at_zero)
    assert ok is False and "every request asked for after=0" in why


def test_ch03_spread_model_passes_and_equal_waits_come_back_as_one_wave():
    assert ch03.q6.verdict(ch03.q6.answer)[0] is True
    ok, why = ch03.q6.verdict(longpolling.doubling_delay)  # the template: doubling, no randomness
    assert ok is False and "one wave" in why and "random" in why
    ok, why = ch03.q6.verdict(lambda failures: 5.0)
    assert ok is False and "had not caught up" in why


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


def test_ch04_resume_model_passes_and_a_client_without_last_event_id_loses_the_cut():
    assert ch04.q4.verdict(ch04.q4.answer)[0] is True
    ok, why = ch04.q4.verdict(listen_without_last_event_id)
    assert ok is False and "lost across the cut" in why and "Last-Event-ID" in why


def test_ch04_retry_model_passes_and_one_retry_for_all_brings_them_back_at_once():
    assert ch04.q5.verdict(ch04.q5.answer)[0] is True
    ok, why = ch04.q5.verdict(SameRetryForAll)
    assert ok is False and "same moment" in why and "random retry" in why


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


def test_ch05_compression_model_passes_and_the_plain_socket_declines_the_offer():
    assert ch05.q4.verdict(ch05.q4.answer)[0] is True
    ok, why = ch05.q4.verdict(websocket.FeedSocket)
    assert ok is False and "Nothing was compressed" in why and "get_compression_options" in why


def test_ch05_duplex_model_passes_and_a_lockstep_client_sends_at_the_tick_rate():
    assert ch05.q5.verdict(ch05.q5.answer)[0] is True
    ok, why = ch05.q5.verdict(play_in_lockstep)
    assert ok is False and "waited for the server's ticks" in why


# -- chapter 6: message queues, on the real broker ---------------------------------------------

async def ack_then_send(message, send_email):
    await message.ack()
    await send_email(message)


def test_ch06_ack_wait_model_passes_and_a_wait_below_the_send_time_sends_duplicates():
    assert ch06.q5.verdict(ch06.q5.answer)[0] is True
    short = ConsumerConfig(durable_name="mailer", ack_policy=AckPolicy.EXPLICIT, ack_wait=0.3, max_deliver=-1)
    ok, why = ch06.q5.verdict(short)
    assert ok is False and "more than once" in why and "ack_wait" in why


def test_ch06_ack_model_passes_and_acking_before_sending_loses_the_crashed_jobs():
    assert ch06.q6.verdict(ch06.q6.answer)[0] is True
    ok, why = ch06.q6.verdict(ack_then_send)
    assert ok is False and "acknowledged before sending: 2 emails were lost" in why


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


def test_ch09_dedupe_model_passes_and_retries_without_a_stable_id_are_stored_twice():
    assert ch09.q4.verdict(ch09.q4.answer)[0] is True
    ok, why = ch09.q4.verdict(place_order_without_id)
    assert ok is False and "stored twice" in why and "Nats-Msg-Id" in why
    ok, why = ch09.q4.verdict(place_order_with_a_new_id_each_time)
    assert ok is False and "a retry got a new one" in why


def test_ch09_failover_model_passes_and_a_cursor_from_its_own_count_repeats_events():
    assert ch09.q5.verdict(ch09.q5.answer)[0] is True
    ok, why = ch09.q5.verdict(follow_with_own_count)
    assert ok is False and "received twice" in why and "not from your own count" in why


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


def test_ch08_receiver_model_answers_fast_and_one_that_works_first_is_retried():
    assert ch08.q4.verdict(ch08.q4.answer)[0] is True
    ok, why = ch08.q4.verdict(ReceiverThatWorksFirst)
    assert ok is False and "answer 202" in why


def test_ch07_rule_model_passes_and_always_push_fails_at_a_high_rate():
    assert ch07.q5.verdict(ch07.q5.answer)[0] is True
    ok, why = ch07.q5.verdict(lambda rate: "sse")
    assert ok is False and "60 events/s, polling was cheaper" in why


def test_ch07_batch_model_passes_and_no_window_asks_once_per_event():
    assert ch07.q6.verdict(ch07.q6.answer)[0] is True
    ok, why = ch07.q6.verdict(lambda feed: longpolling.handlers(feed, batch=0.0))
    assert ok is False and "at least the poll interval" in why
