"""Change-the-code exercises: the code a learner starts from, and the mistakes a learner typically
makes, run against a real server, fail with a hint drawn from what was measured; code that raises
or hangs gets a sentence. Every template is taken from its notebook cell (``templates.py``)."""

import asyncio
import time
import uuid

import aiohttp
import nats.errors
import pytest

from labsupport.exercises import ch01, ch03, ch06, ch09
from templates import every_template


def test_ch01_code_that_raises_gets_a_sentence_not_a_traceback():
    async def broken(base_url, recorder):
        raise ValueError("oops")

    ok, why = ch01.q4.verdict(broken)
    assert ok is False and "ValueError: oops" in why


# -- chapter 3: long polling -------------------------------------------------------------------

async def long_poll_stuck_at_zero(base_url, recorder):
    async with aiohttp.ClientSession() as session:
        while True:
            sent = time.monotonic()
            async with session.get(f"{base_url}/events", params={"after": 0}) as response:
                answer = await response.json()
            for event in answer["events"]:
                recorder.saw(event["seq"])
            recorder.request(sent, response.status, len(answer["events"]))


# -- chapter 6: message queues, on the real broker ---------------------------------------------

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

async def place_order_with_a_new_id_each_time(publish, order_id, body):
    while True:
        try:
            return await publish(body, headers={"Nats-Msg-Id": uuid.uuid4().hex})
        except nats.errors.TimeoutError:
            await asyncio.sleep(0.05)


# What the hint must say when the template is checked as the learner finds it, by (notebook, exercise).
TEMPLATE_HINTS = {
    ("01_pull_and_push", "q3"): ["clumps", "separate arrivals"],
    ("01_pull_and_push", "q4"): ["line by line"],
    ("02_ajax_polling", "q5"): ["0 of", "If-None-Match"],
    ("02_ajax_polling", "q6"): ["new TCP connection"],
    ("03_long_polling", "q5"): ["events were lost", "after="],
    ("03_long_polling", "q6"): ["one wave", "random"],
    ("04_server_sent_events", "q4"): ["lost across the cut", "Last-Event-ID"],
    ("04_server_sent_events", "q5"): ["same moment", "random retry"],
    ("05_websockets", "q4"): ["Nothing was compressed", "get_compression_options"],
    ("05_websockets", "q5"): ["waited for the server's ticks"],
    ("06_message_queues", "q5"): ["more than once", "ack_wait"],
    ("06_message_queues", "q6"): ["acknowledged before sending: 2 emails were lost"],
    ("07_choosing_a_pattern", "q5"): ["60 events/s, polling was cheaper"],
    ("07_choosing_a_pattern", "q6"): ["at least the poll interval"],
    ("08_in_production", "q4"): ["answer 202"],
    ("09_scaling_out", "q4"): ["stored twice", "Nats-Msg-Id"],
    ("09_scaling_out", "q5"): ["received twice", "not from your own count"],
}
TEMPLATES = every_template()


def test_every_template_cell_has_its_hint_and_every_hint_its_cell():
    assert {(notebook, q) for notebook, q, _, _ in TEMPLATES} == set(TEMPLATE_HINTS)


@pytest.mark.parametrize("notebook, q, exercise, template", TEMPLATES, ids=[f"{n}-{q}" for n, q, _, _ in TEMPLATES])
def test_the_template_as_found_fails_with_a_hint_from_what_was_measured(notebook, q, exercise, template):
    ok, why = exercise.verdict(template)
    assert ok is False and all(part in why for part in TEMPLATE_HINTS[notebook, q]), why


# Mistakes other than the template: (exercise, the mistake, what the hint must say). Every model
# answer passing its own check is tested for all exercises at once in test_checks.py.
MISTAKES = [
    (ch03.q5, long_poll_stuck_at_zero, ["every request asked for after=0"]),
    (ch03.q6, lambda failures: 5.0, ["had not caught up"]),
    (ch09.q4, place_order_with_a_new_id_each_time, ["a retry got a new one"]),
]


@pytest.mark.parametrize("exercise, mistake, hint", MISTAKES,
                         ids=[f"{e.name}-{getattr(m, '__name__', type(m).__name__)}" for e, m, _ in MISTAKES])
def test_a_typical_mistake_fails_with_a_hint_from_what_was_measured(exercise, mistake, hint):
    ok, why = exercise.verdict(mistake)
    assert ok is False and all(part in why for part in hint), why
