"""Chapter 2's experiments: Ajax (short) polling, what each poll costs on the wire and how late it is."""

from __future__ import annotations

import time

import pandas as pd

from ..capture import http_messages
from ..feed import Feed
from ..lab import on_lab_loop
from ..patterns import polling
from ..record import Recorder
from ..results import Result
from .core import Workload, expected_seconds, measure, variants_of


@on_lab_loop(expected=expected_seconds)
async def run_polling(interval: float = 0.5, *, rate: float = 5.0, clients: int = 1, duration: float = 2.0,
                      latency: float = 0.0, keep_alive: bool = True, conditional: bool = False,
                      idle_timeout: float = 15.0, arrivals: str = "fixed", value: str = "ticker",
                      seed: int | None = None) -> Result:
    """Clients poll ``/latest`` every ``interval`` seconds (see ``patterns/polling.py``).

    ``idle_timeout`` is how long the client keeps an idle connection for the next poll.
    """
    if not 0.01 <= interval <= 60:
        raise ValueError(f"interval must be between 0.01 and 60 s, not {interval!r}.")
    if idle_timeout <= 0:
        raise ValueError(f"idle_timeout must be a positive number of seconds, not {idle_timeout!r}.")
    workload = Workload(rate, clients, duration, latency, arrivals, value, seed)

    def client(url: str, recorder: Recorder):
        return polling.poll(url, recorder, interval=interval, keep_alive=keep_alive,
                            conditional=conditional, idle_timeout=idle_timeout)

    arrived = _Arrivals()
    feeds: list[Feed] = []

    def handlers(feed: Feed) -> list:
        feeds.append(feed)
        return polling.handlers(feed, answers=arrived)

    result = await measure("polling", handlers, client, workload, drain=interval + 2 * latency + 0.05,
                           ready_first=False, interval=interval, keep_alive=keep_alive,
                           conditional=conditional, idle_timeout=idle_timeout)
    started = feeds[0].started or 0.0
    result.served = pd.DataFrame([(c, t - started) for c, t in arrived], columns=["connection", "arrived"])
    return result


class _Arrivals(list):
    """The poll handler's ``answers``, kept as (connection, when): a count the clients do not keep.

    The connection is its port on the meter's side. The handler answers in the same pass of the
    loop as the request arrives, so when an answer is noted is when its request reached the server.
    """

    def append(self, answer: tuple) -> None:
        _, request = answer
        super().append((request.connection.context.address[1], time.monotonic()))


def received_per_s(result: Result) -> float:
    """Requests a second that reached the server in the feed's window, counted one by one where they
    arrived: a poll the client skipped is missing from the count (a median gap per client would hide it)."""
    return float(result.served["arrived"].between(0, result.duration).sum()) / result.duration


run_polling_variants = variants_of(run_polling)


def exchanges(result: Result) -> list[tuple[bytes, bytes]]:
    """Every whole request and answer the wire meter captured, in order, as raw bytes."""
    pairs = []
    for up, down in result.heads:
        pairs += zip(http_messages(up), http_messages(down))
    return pairs


def exchange_sizes(request: bytes, answer: bytes) -> dict:
    """Bytes of headers against bytes of payload in one exchange."""
    answer_headers = answer.index(b"\r\n\r\n") + 4
    payload = len(answer) - answer_headers
    return {"request_headers": len(request), "response_headers": answer_headers, "payload": payload,
            "overhead_ratio": (len(request) + answer_headers) / payload if payload else float("inf")}


def poll_costs(result: Result) -> dict:
    """Per poll: connections opened, time from sending to the whole answer, bytes both ways."""
    polls = len(result.requests)
    took = (result.requests["answered"] - result.requests["sent"]) * 1000
    return {
        "polls": polls,
        "connections_opened": result.wire.connections_opened,
        "polls_per_connection": polls / max(result.wire.connections_opened, 1),
        "time_per_poll_ms": float(took.mean()),
        "time_per_poll_p50_ms": float(took.median()),
        "bytes_per_poll": result.wire.bytes_total / max(polls, 1),
        "bytes_down_per_poll": result.wire.bytes_down / max(polls, 1),
        "not_modified_share": float((result.requests["status"] == 304).mean()),
    }
