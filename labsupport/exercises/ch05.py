"""Exercises for chapter 5, WebSockets."""

from __future__ import annotations

from ..checks import Exercise
from ..experiments.websocket import frame_header, frame_overhead

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


# q2: how long until a dead peer is noticed
Q2_INTERVAL, Q2_TIMEOUT = 20.0, 10.0


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
