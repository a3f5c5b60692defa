"""Chapter 9's change-the-code exercises: a producer and a client, changed by the learner, on real parts.

q4 runs the learner's producer against a JetStream stream on the lab's broker; q5 runs the
learner's client against two of the chapter's gateways (child processes following a stream
on the three-node cluster) and kills the one it is connected to.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
from collections import Counter

import aiohttp
import nats.errors

from ..broker import connect, start_broker
from ..checks import Exercise
from ..experiments import scaling_stage
from ..experiments.core import raise_client_failure
from ..lab import LabError, cancel_all, lab
from ..patterns import websocket as ws
from ..patterns.gateway import GatewayRecorder
from .tryout import TRY_OUT_TIMEOUT

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


# -- q5: resume on another gateway, from the stream's id ---------------------------------------

Q5_RATE, Q5_HISTORY, Q5_KILL_AT, Q5_SECONDS = 20.0, 0.5, 0.8, 2.0


async def _run_failover(follow) -> tuple[list[int], Counter]:
    """Publish some history, connect the learner's ``follow(gateways, recorder)`` to gateway 0 of two,
    publish for ``Q5_SECONDS`` and kill gateway 0 ``Q5_KILL_AT`` s in. Returns the ids published while
    the client followed, and how often the client recorded each id."""
    stage = await scaling_stage.stage.coro(2)
    urls = [g.url for g in stage.gateways[:2]]
    history: list = []
    await scaling_stage.produce(stage, 2 * Q5_RATE / Q5_HISTORY, history, duration=Q5_HISTORY)  # before the client joins
    recorder = GatewayRecorder(0)
    task = asyncio.create_task(follow(urls, recorder))
    published: list = []
    try:
        await asyncio.wait_for(recorder.ready.wait(), 10.0)
        await asyncio.sleep(0.1)  # the gateway has taken the client's subscription
        producing = asyncio.create_task(scaling_stage.produce(stage, Q5_RATE, published, duration=Q5_SECONDS))
        await asyncio.sleep(Q5_KILL_AT)
        stage.gateways[0].kill()
        await producing
        last = max(p.seq for p in published if p.seq is not None)
        for _ in range(60):  # up to 3 s for the client to catch up
            if any(seq >= last for seq, _ in recorder.seen) or task.done():
                break
            await asyncio.sleep(0.05)
        raise_client_failure([task])
    except asyncio.TimeoutError:
        raise LabError("never got going: the client did not connect (or did not call recorder.ready.set()) "
                       "within 10 s.") from None
    finally:
        await cancel_all([task])
    return [p.seq for p in published if p.seq is not None], Counter(seq for seq, _ in recorder.seen)


async def _model_follow(gateways: list[str], recorder) -> None:
    cursor, at = None, 0
    async with aiohttp.ClientSession() as session:
        while True:
            url = ws.ws_url(gateways[at], "/feed" + ("" if cursor is None else f"?after={cursor}"))
            try:
                async with session.ws_connect(url) as socket:
                    recorder.ready.set()
                    async for message in socket:
                        cursor = json.loads(message.data)["seq"]  # the stream's id: the same on every gateway
                        recorder.saw(cursor)
            except aiohttp.ClientError:
                pass  # the gateway is gone: try the next one
            at = (at + 1) % len(gateways)
            await asyncio.sleep(0.2)


def _check_failover(follow) -> tuple[bool, str]:
    if not inspect.iscoroutinefunction(follow):
        return False, "Pass your client, an `async def` function of (gateways, recorder)."
    try:
        published, seen = lab.run(_run_failover(follow), timeout=TRY_OUT_TIMEOUT, expected_seconds=Q5_SECONDS + 2,
                                  label="trying your client on the gateways")
    except LabError as error:
        return False, f"your client was run against two real gateways and {str(error).removeprefix('A client ')}"
    lost = [seq for seq in published if seq not in seen]
    twice = sum(n - 1 for n in seen.values())
    measured = (f"{len(published)} events published while it followed, gateway 0 killed {Q5_KILL_AT} s in; "
                f"{len(lost)} lost, {twice} received twice")
    if len(lost) == len(published):
        return False, f"Nothing reached the client ({measured}): record the seq of every message."
    if twice:
        return False, (f"After the failover, gateway 1 sent events the client already had ({measured}). Your "
                       "cursor was behind the last id you saw: the stream's ids did not start at 1 when you "
                       "joined. Resume from the seq of the last message, the stream's own number, which is the "
                       "same on every gateway, not from your own count.")
    if lost:
        return False, (f"Events were lost across the failover ({measured}): resume on the next gateway with "
                       "?after=<the seq of the last message you saw>.")
    return True, f"The client moved to gateway 1 and lost nothing, repeated nothing ({measured})."


q5 = Exercise(
    "Q5 · resume on another gateway",
    checker=_check_failover,
    hint="How many messages you received is not the same as the id of the last one: you joined a stream that "
         "was already running. Which number does every gateway agree on?",
    solution="cursor = json.loads(message.data)['seq'], then reconnect to the next gateway with "
             "?after={cursor}.",
    answer=_model_follow,
)
