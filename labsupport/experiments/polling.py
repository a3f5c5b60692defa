"""Chapter 2's experiments: Ajax (short) polling, what each poll costs on the wire and how late it is,
with the theory the chapter checks them against."""

from __future__ import annotations

import math
import time

import aiohttp
import pandas as pd
import tornado

from ..capture import http_messages
from ..feed import Feed
from ..lab import on_lab_loop
from ..patterns import polling
from ..record import Recorder
from ..results import Result
from .core import Workload, expected_seconds, measure, variants_of


ROUND_TRIP = 0.015  # s: a poll's answer through the meter on loopback, with a few dozen pollers on one thread of a busy 2-core machine


def one_round_trip(kwargs: dict) -> float:
    """The longest wait for a core a polling run tolerates. A poll sent late is late by all of the
    wait, and the worst wait for an update is claimed within one round trip of the interval; a wait
    longer than the interval even skips a poll (as ``setInterval`` does)."""
    return min(ROUND_TRIP, kwargs["interval"])


@on_lab_loop(expected=expected_seconds, tolerates=one_round_trip)
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


def poll_heads(payload: int, *, not_modified: bool = False) -> tuple[int, int]:
    """Header bytes of one poll, (up, down), counted line by line as this client and server write them.

    HTTP/1.1 (RFC 9112 sections 3 and 4) ends each line with CRLF and the head with an empty line.
    Up: the request line and aiohttp's four headers; down: the status line and Tornado's six. A
    ``304 Not Modified`` has no body, so it drops the lines that describe one (Content-Type and
    Content-Length; RFC 9110 section 15.4.5). The Host names the meter's port: an OS-chosen port has
    five digits (Linux picks 32768-60999).
    """
    request = ["GET /latest HTTP/1.1", "Host: 127.0.0.1:NNNNN", "Accept: */*", "Accept-Encoding: gzip, deflate",
               f"User-Agent: {aiohttp.http.SERVER_SOFTWARE}"]
    body = [] if not_modified else ["Content-Type: application/json; charset=UTF-8", f"Content-Length: {payload}"]
    response = ["HTTP/1.1 304 Not Modified" if not_modified else "HTTP/1.1 200 OK",
                f"Server: TornadoServer/{tornado.version}", *body[:1],
                "Date: Mon, 07 Dec 2026 17:00:00 GMT",        # a fixed-length date (RFC 9110 section 5.6.7)
                "Cache-Control: no-cache",
                'Etag: "' + "0" * 40 + '"',                      # a SHA-1 of the body, in hex
                *body[1:]]
    return tuple(sum(len(line) + 2 for line in lines) + 2 for lines in (request, response))


def mean_wait_bounds(interval: float, waits: int) -> tuple[float, float]:
    """Where the mean of ``waits`` independent waits for the next poll falls: ``interval / 2`` within
    3 standard deviations of such a mean (one wait, spread evenly over the interval, has
    ``interval / sqrt(12)``), and above it one poll's round trip, which every measured wait includes."""
    spread = 3 * interval / math.sqrt(12 * waits)
    return interval / 2 - spread, interval / 2 + spread + ROUND_TRIP


def worst_wait_bounds(interval: float, waits: int, chance: float = 1e-3) -> tuple[float, float]:
    """Where the longest of ``waits`` independent waits falls: at most one interval and a round trip;
    at least where all of them stay below it only by ``chance`` (each does with that share of the interval)."""
    return interval * chance ** (1 / waits), interval + ROUND_TRIP


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


POOL_SLACK = 0.005  # s: how much longer a connection can sit in aiohttp's pool than the client's own gap shows


def connections_after_idle(result: Result, idle_timeout: float) -> tuple[int, int]:
    """How many connections kept-alive pollers open when idle ones are dropped after ``idle_timeout``: (fewest, most).

    aiohttp reuses a pooled connection only while ``now - released <= keepalive_timeout``
    (``BaseConnector._get``). So each client opens one for its first poll and one for every poll
    that comes after a longer gap. The gap a client measures, from its answer to its next send,
    lies a little inside the pool's: a longer one surely reopens, one up to ``POOL_SLACK`` shorter
    may. A poll under way when the run stops has opened its connection but has no answer yet: up
    to one per client more.
    """
    fewest = maybe = 0
    for _, mine in result.requests.sort_values("sent").groupby("client"):
        gaps = mine["sent"].to_numpy()[1:] - mine["answered"].to_numpy()[:-1]
        fewest += 1 + int((gaps > idle_timeout).sum())
        maybe += int(((gaps > idle_timeout - POOL_SLACK) & (gaps <= idle_timeout)).sum())
    return fewest, fewest + maybe + result.clients
