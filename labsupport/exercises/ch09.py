"""Chapter 9 exercises: quorum arithmetic, ids that survive a failover, sizing the gateways."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import math

import nats.errors

from ..broker import connect, start_broker
from ..checks import Exercise
from ..lab import LabError, lab
from .tryout import TRY_OUT_TIMEOUT

# -- q1: how many nodes may fail? -------------------------------------------------------------

Q1_NODES = 5
Q1_ANSWER = (Q1_NODES - 1) // 2   # a majority of 5 is 3, so 2 may be down


def _check_failures(n) -> tuple[bool, str]:
    n = int(n)
    majority = Q1_NODES // 2 + 1
    if n == Q1_ANSWER:
        return True, (f"with {n} down, {Q1_NODES - n} remain: still a majority ({majority} of {Q1_NODES}), "
                      f"so a leader can be elected and every publish acknowledged. One more and there is none.")
    if n > Q1_ANSWER:
        return False, f"with {n} down only {Q1_NODES - n} remain, fewer than a majority ({majority}): nothing is acknowledged."
    return False, f"the cluster survives more than {n}: a majority of {Q1_NODES} is {majority}."


q1 = Exercise(
    "Q1 · a five-node cluster",
    checker=_check_failures,
    hint="A replicated stream acknowledges a publish once a majority of its replicas stored it. What is a majority of 5?",
    solution=f"A majority of {Q1_NODES} is {Q1_NODES // 2 + 1}, so {Q1_ANSWER} nodes may be down at once. In general "
             "2f + 1 nodes survive f failures: 3 nodes survive 1, 5 survive 2. An even count buys nothing: 4 nodes "
             "also survive only 1.",
    answer=Q1_ANSWER,
)

# -- q2: resume on another gateway --------------------------------------------------------------

def _model_resume(seen: list[int]) -> str:
    return str(max(seen)) if seen else ""


def _check_resume(resume) -> tuple[bool, str]:
    if not callable(resume):
        return False, "the answer should be a function resume(seen) that returns the Last-Event-ID to send."
    cases = {(): "", (41,): "41", (39, 40, 41): "41", (7, 8, 9, 10, 11, 12): "12"}
    for seen, want in cases.items():
        got = resume(list(seen))
        if str(got) != want:
            return False, (f"after seeing {list(seen)} it sends {got!r}; the gateway would then send "
                           + ("the events again (duplicates)." if str(got).isdigit() and int(got) < int(want or 0)
                              else "the wrong events."))
    return True, ("the next gateway sends every event after that id. It can, because the id is the stream's "
                  "sequence, the same number on every gateway.")


q2 = Exercise(
    "Q2 · where to resume",
    checker=_check_resume,
    hint="The gateway sends every event *after* the id you give it. Which id makes it send nothing twice and skip nothing?",
    solution="def resume(seen):\n    return str(max(seen)) if seen else ''\n"
             "The last id seen (the highest, since a stream delivers in order). An empty string means "
             "'send no Last-Event-ID': start from now.",
    answer=_model_resume,
)

# -- q3: how many gateway machines? -------------------------------------------------------------

Q3 = {"clients": 1_000_000, "rate": 1.0, "cpu_ms_per_delivery": 0.05, "kb_per_connection": 20.0,
      "cores": 8, "memory_gb": 16}
Q3_CPU = Q3["clients"] * Q3["rate"] * Q3["cpu_ms_per_delivery"] / 1000 / Q3["cores"]
Q3_MEMORY = Q3["clients"] * Q3["kb_per_connection"] * 1000 / 1e9 / Q3["memory_gb"]
Q3_ANSWER = math.ceil(max(Q3_CPU, Q3_MEMORY) - 1e-9)


def _check_machines(n) -> tuple[bool, str]:
    n = int(n)
    if n == Q3_ANSWER:
        return True, (f"CPU needs {Q3_CPU:.2f} machines and memory {Q3_MEMORY:.2f}: the larger one decides, "
                      f"rounded up to {n}. Add one for a gateway to fail without overloading the rest.")
    if n == math.ceil(Q3_MEMORY):
        return False, "that is what memory alone needs. Does CPU need more?"
    return False, "work out the cores and the memory the clients need, and divide each by one machine's."


q3 = Exercise(
    "Q3 · gateways for a million clients",
    checker=_check_machines,
    hint="Cores: clients × events per second × CPU seconds per delivery. Memory: clients × memory per connection. "
         "Divide each by one machine's, take the larger, round up.",
    solution=f"Cores: {Q3['clients']:,} × {Q3['rate']:g}/s × {Q3['cpu_ms_per_delivery']} ms = "
             f"{Q3_CPU * Q3['cores']:.0f} cores, {Q3_CPU:.2f} machines of {Q3['cores']}. Memory: {Q3['clients']:,} × "
             f"{Q3['kb_per_connection']:g} kB = {Q3_MEMORY * Q3['memory_gb']:.0f} GB, {Q3_MEMORY:.2f} machines of "
             f"{Q3['memory_gb']} GB. The larger, rounded up: {Q3_ANSWER}.",
    answer=Q3_ANSWER,
)

EXERCISES = [q1, q2, q3]

# -- q4: publish once, even when the ack is lost (run on the lab's broker) ----------------------

Q4_ORDERS = 6
Q4_ACK_LOST = (2, 5)   # these orders' first publish is stored, but its ack never reaches the producer
Q4_NOT_STORED = (4,)   # this order's first publish never reaches the stream
_stream_ids = itertools.count(1)


async def _run_orders(place_order) -> list[dict]:
    """Place ``Q4_ORDERS`` orders with the learner's ``place_order(publish, order_id, body)``.

    ``publish`` really publishes to a stream that dedupes by ``Nats-Msg-Id``. For the orders in
    ``Q4_ACK_LOST`` the first ack is lost on its way back (as when the stream's leader changes
    after storing): the message is stored, but ``publish`` raises ``nats.errors.TimeoutError``.
    For those in ``Q4_NOT_STORED`` the first publish is lost on its way there: the same error,
    nothing stored. The producer cannot tell the two apart.
    Returns the stored messages (order id and ``Nats-Msg-Id``).
    """
    client = await connect(await start_broker.coro(), "order-exercise")
    js = client.jetstream(timeout=2)
    n = next(_stream_ids)
    stream, subject = f"ORDERS_EXERCISE_{n}", f"orders-exercise-{n}"
    lose_ack = {f"order-{i}" for i in Q4_ACK_LOST}
    lose_publish = {f"order-{i}" for i in Q4_NOT_STORED}
    try:
        await js.add_stream(name=stream, subjects=[f"{subject}.>"], duplicate_window=60.0)

        async def publish(body: bytes, *, headers: dict | None = None) -> int:
            order = json.loads(body)["order"]
            if order in lose_publish:
                lose_publish.discard(order)
                raise nats.errors.TimeoutError  # never arrived: nothing stored
            ack = await js.publish(f"{subject}.new", body, headers=headers or None)
            if order in lose_ack:
                lose_ack.discard(order)
                raise nats.errors.TimeoutError  # stored, but the producer never hears so
            return ack.seq

        for i in range(1, Q4_ORDERS + 1):
            order = f"order-{i}"
            await asyncio.wait_for(place_order(publish, order, json.dumps({"order": order}).encode()), 5.0)
        stored = []
        for seq in range(1, (await js.stream_info(stream)).state.messages + 1):
            message = await js.get_msg(stream, seq)
            stored.append({"order": json.loads(message.data)["order"],
                           "msg_id": (message.headers or {}).get("Nats-Msg-Id")})
        return stored
    except asyncio.TimeoutError:
        raise LabError("an order was not placed within 5 s: does your retry loop ever stop?") from None
    finally:
        with contextlib.suppress(Exception):
            await js.delete_stream(stream)
        await client.close()


async def _model_place_order(publish, order_id: str, body: bytes) -> int:
    while True:
        try:
            return await publish(body, headers={"Nats-Msg-Id": order_id})
        except nats.errors.TimeoutError:
            await asyncio.sleep(0.05)  # no ack: publish again, with the same id


def _check_dedupe(place_order) -> tuple[bool, str]:
    if not inspect.iscoroutinefunction(place_order):
        return False, "Pass your producer, an `async def` function of (publish, order_id, body)."
    try:
        stored = lab.run(_run_orders(place_order), timeout=TRY_OUT_TIMEOUT, expected_seconds=1.0,
                         label="trying your producer")
    except LabError as error:
        return False, f"your producer was run against the real broker and {error}"
    except Exception as error:
        return False, (f"your producer was run against the real broker and stopped with an error: "
                       f"{type(error).__name__}: {error}")
    orders = {m["order"] for m in stored}
    measured = (f"the stream stored {len(stored)} messages for {Q4_ORDERS} orders; {len(Q4_ACK_LOST)} acks and "
                f"{len(Q4_NOT_STORED)} publish were lost on the way")
    if len(orders) < Q4_ORDERS:
        missing = sorted({f"order-{i}" for i in range(1, Q4_ORDERS + 1)} - orders)
        return False, (f"{', '.join(missing)} never reached the stream ({measured}). With no ack you cannot know "
                       "whether the message was stored: publish again until an ack comes back.")
    if len(stored) > Q4_ORDERS:
        ids = [m["msg_id"] for m in stored]
        if all(ids):
            return False, (f"Orders were stored twice ({measured}). Your publishes carried a Nats-Msg-Id, but a "
                           "retry got a new one, so the broker saw a new message. Derive the id from the order "
                           "itself.")
        return False, (f"The retried orders were stored twice ({measured}): the broker cannot tell a retry from a "
                       "new order. Send a Nats-Msg-Id header that names the order.")
    return True, f"Every order stored once ({measured}): the broker dropped each retry as a duplicate."


q4 = Exercise(
    "Q4 · publish once, even when retried",
    checker=_check_dedupe,
    hint="When no ack comes back, the message may or may not be stored. A JetStream stream drops a second "
         "message with the same Nats-Msg-Id within its duplicate window. Which id stays the same on a retry?",
    solution='return await publish(body, headers={"Nats-Msg-Id": order_id})\n'
             "The order's own id, the same on every attempt. A random id (uuid4() per publish) would make each "
             "retry look new.",
    answer=_model_place_order,
)

EXERCISES += [q4]
