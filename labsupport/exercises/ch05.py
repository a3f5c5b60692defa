"""Exercises for chapter 5, WebSockets."""

from __future__ import annotations

import asyncio
import inspect
import json
import statistics
import time

import aiohttp

from ..checks import Exercise, Measurement
from ..experiments.core import Workload
from ..experiments.websocket import frame_header, frame_overhead
from ..experiments.websocket_faults import run_dead_peer
from ..patterns import websocket as ws
from .tryout import TryOutFailed, try_out

# q1: a frame header, predicted and then measured
Q1_SIZE = 300


def _check_header(answer) -> tuple[bool, str]:
    n = int(answer)
    measured = frame_overhead(sizes=(Q1_SIZE,), count=3)["WebSocket up (client→server)"].iloc[0]
    if n == measured:
        return True, f"2 bytes, 2 more for a length over 125, 4 for the client's mask: {n} (measured {measured:.0f})."
    if n == frame_header(Q1_SIZE, masked=False):
        return False, f"That is the server's header (measured up: {measured:.0f}). Frames from a client are masked."
    return False, f"Not quite (measured: {measured:.0f}). Which length form does 300 bytes need?"


q1 = Exercise(
    "Predict a frame header",
    checker=_check_header,
    hint="Lengths up to 125 fit in the 2-byte header; up to 65,535 take 2 more bytes; client frames add a 4-byte mask.",
    solution=f"2 + 2 (16-bit length) + 4 (mask) = {frame_header(Q1_SIZE, masked=True)} bytes.",
    answer=frame_header(Q1_SIZE, masked=True),
)


# q2: how long until a dead peer is noticed; then measured on a real server, times scaled down Q2_SCALE-fold
Q2_INTERVAL, Q2_TIMEOUT = 20.0, 10.0
Q2_SCALE = 25    # 0.8 s and 0.4 s


def _check_dead(answer) -> tuple[bool, str]:
    worst = Q2_INTERVAL + Q2_TIMEOUT
    if abs(float(answer) - worst) <= 0.5:
        return True, f"The peer may die just after a pong: up to {Q2_INTERVAL:.0f} s until the next ping, then {Q2_TIMEOUT:.0f} s waiting."
    if abs(float(answer) - Q2_TIMEOUT) <= 0.5:
        return False, "That is the best case. In the worst case the peer dies right after answering a ping."
    return False, "Think about when the next ping goes out, then how long the server waits for its pong."


q2 = Exercise(
    "When is a dead peer found?",
    checker=_check_dead,
    hint="websocket_ping_interval is the time between pings; websocket_ping_timeout how long to wait for a pong.",
    solution=f"At worst {Q2_INTERVAL:.0f} + {Q2_TIMEOUT:.0f} = {Q2_INTERVAL + Q2_TIMEOUT:.0f} seconds.",
    answer=Q2_INTERVAL + Q2_TIMEOUT,
    measure=lambda: _measure_dead_peer(),
)


def _measure_dead_peer() -> Measurement:
    """A client that freezes right after connecting (the worst case: a whole interval before the next ping)."""
    run = run_dead_peer(ping_interval=Q2_INTERVAL / Q2_SCALE, ping_timeout=Q2_TIMEOUT / Q2_SCALE)
    found = float("nan") if run.found_after is None else run.found_after * Q2_SCALE
    worst = Q2_INTERVAL + Q2_TIMEOUT
    return Measurement(
        claim="a server that pings every interval and waits timeout for the pong finds a peer that froze just "
              "after connecting interval + timeout later",
        theory=f"{worst:g} s at worst",
        measured=f"{found:.1f} s (found after {run.found_after or float('nan'):.3f} s with pings every "
                 f"{run.ping_interval:g} s and a {run.ping_timeout:g} s timeout, x {Q2_SCALE})",
        how="The chapter's dead-peer run: a client that stops reading (so answers no ping) beside a healthy one.",
        # never sooner; the server's two timers fire a few ms late and the run looks every 5 ms: 30 ms, x Q2_SCALE
        id="W5 q2 dead peer", value=found, expected=worst, low=worst, high=worst + 0.03 * Q2_SCALE, unit="s",
    )


# q3: the right policy for a full outbox
def _check_policy(answer) -> tuple[bool, str]:
    if str(answer).strip().lower() == "drop-oldest":
        return True, "Only the latest game state matters; an old one is worth nothing once a newer one exists."
    if str(answer).strip().lower() == "close":
        return False, "Closing is right when every message matters and the client can resume; a game only needs the newest state."
    return False, "Answer 'drop-oldest' or 'close'."


q3 = Exercise(
    "Choose the outbox policy",
    checker=_check_policy,
    hint="Would a player rather see the newest position late, or every position in order?",
    solution="'drop-oldest': a game sends state, and the newest state replaces the old ones.",
    answer="drop-oldest",
)


# q4 and q5 change a WebSocket handler and a WebSocket client, and run them against a real server.
Q4_WORKLOAD = Workload(rate=100.0, clients=1, duration=1.0)


async def _follow_compressed(base_url: str, recorder) -> None:
    """A feed reader that offers permessage-deflate (RFC 7692), as browsers do."""
    async with aiohttp.ClientSession() as session:
        sent = time.monotonic()
        async with session.ws_connect(ws.ws_url(base_url, "/feed"), compress=15) as conn:
            recorder.request(sent, 101, 0)
            async for message in conn:
                recorder.saw(json.loads(message.data)["seq"])


class _CompressedFeed(ws.FeedSocket):
    def get_compression_options(self) -> dict:
        return {}  # permessage-deflate with Tornado's defaults


def _check_compression(socket_class) -> tuple[bool, str]:
    if not (isinstance(socket_class, type) and issubclass(socket_class, ws.FeedSocket)):
        return False, "Pass your socket class itself (MyFeed), a subclass of ws.FeedSocket."
    try:
        result = try_out(lambda feed: [(r"/feed", socket_class, {"hub": ws.Hub(feed)})], _follow_compressed,
                         Q4_WORKLOAD)
    except TryOutFailed as failure:
        return False, str(failure)
    s = result.summary()
    head = result.heads[0][1]
    answer = head[:head.find(b"\r\n\r\n") + 4]
    per_frame = (result.wire.bytes_down - len(answer)) / max(s["delivered"], 1)
    plain = 2 + statistics.fmean(len(json.dumps({"seq": seq, "value": 100.25})) for seq in result.events["seq"])
    measured = f"{per_frame:.1f} bytes per frame on the wire; about {plain:.0f} uncompressed"
    if s["missed"]:
        return False, f"{s['missed']} of {s['events']} events never arrived ({measured}): the feed must still work."
    if b"permessage-deflate" not in answer.lower():
        return False, (f"Nothing was compressed ({measured}): the server's 101 answer has no Sec-WebSocket-Extensions "
                       "header, so it declined the client's offer. Tornado agrees only when "
                       "get_compression_options returns a dict ({} for its defaults), not None.")
    if per_frame > 0.75 * plain:
        return False, f"Compression was agreed, but the frames hardly shrank ({measured})."
    return True, (f"Compressed: {measured}. Deflate keeps its dictionary from one message to the next, so the "
                  "repeated '{\"seq\": ..., \"value\": ...}' costs a few bits per message.")


q4 = Exercise(
    "Compress the frames",
    checker=_check_compression,
    hint="The client offers permessage-deflate in its handshake; the server accepts it when its handler's "
         "get_compression_options() returns a dict of options instead of None.",
    solution="class MyFeed(ws.FeedSocket):\n    def get_compression_options(self):\n        return {}",
    answer=_CompressedFeed,
)

# q5: a game client that sends inputs on its own clock while the server ticks on its own.
Q5_TICK_RATE, Q5_INPUT_EVERY, Q5_SECONDS = 10.0, 0.02, 1.5


async def _model_play(base_url: str, recorder) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(ws.ws_url(base_url, "/game")) as conn:
            recorder.ready.set()

            async def read_ticks() -> None:
                async for message in conn:
                    json.loads(message.data)  # the game state: draw it

            reader = asyncio.create_task(read_ticks())
            try:
                n = 0
                while True:
                    n += 1
                    await conn.send_str(json.dumps({"n": n, "t": time.monotonic()}))
                    await asyncio.sleep(Q5_INPUT_EVERY)
            finally:
                reader.cancel()


def _check_duplex(play) -> tuple[bool, str]:
    if not inspect.iscoroutinefunction(play):
        return False, "Pass your client, an `async def` function of (base_url, recorder)."
    hub = ws.Hub(tick_rate=Q5_TICK_RATE)
    try:
        try_out(lambda feed: ws.handlers(hub), play, Workload(rate=1.0, duration=Q5_SECONDS), ready_first=False)
    except TryOutFailed as failure:
        return False, str(failure)
    received = [at for _, _, at in hub.inputs]
    rate = (len(received) - 1) / (received[-1] - received[0]) if len(received) > 2 else 0.0
    wanted = 1 / Q5_INPUT_EVERY
    measured = f"the server received {len(received)} inputs, {rate:.0f} per second, while it ticked {Q5_TICK_RATE:.0f} times a second"
    if not received:
        return False, "The server received no input: send {\"n\": 1, \"t\": time.monotonic()} as JSON text."
    if rate < 0.6 * wanted:
        return False, (f"Your inputs waited for the server's ticks ({measured}, not the {wanted:.0f} you meant to "
                       "send). On a WebSocket neither side waits for the other: read the ticks in their own task "
                       "(asyncio.create_task) and send on your own clock.")
    return True, f"Inputs went up on their own clock while the ticks came down ({measured})."


q5 = Exercise(
    "Send without waiting",
    checker=_check_duplex,
    hint="`await conn.receive()` waits until the next tick arrives, up to 100 ms. Move the reading into a task "
         "of its own, so the sending loop never waits for it.",
    solution="async def read_ticks():\n    async for message in conn:\n        ...\n"
             "reader = asyncio.create_task(read_ticks())\n"
             "then send an input every 20 ms in a loop, and cancel the reader at the end.",
    answer=_model_play,
)
