"""Reconnecting without a stampede: fixed delays against exponential backoff with jitter.

When a load balancer restarts or the network blips, every client loses its connection in the
same instant. If each waits the same fixed time (an SSE ``retry``, a WebSocket client's
``setTimeout(connect, 1000)``), they all come back in the same instant too: a *reconnect storm*
that hits the server with thousands of handshakes at once, just when it is starting up.

The cure is to make the delays differ. *Exponential backoff* doubles the delay ceiling after
each failed attempt (so a server that stays down is asked ever less often), and *full jitter*
picks the delay at random below that ceiling, which spreads the clients evenly over it
(M. Brooker, "Exponential Backoff And Jitter", AWS Architecture Blog, 2015). The WHATWG HTML
standard gives ``EventSource`` the server's fixed ``retry`` delay and lets a browser wait longer,
for example with exponential backoff after a failed attempt ("reestablish the connection" in
§9.2, Server-sent events); it says nothing of jitter.

``fixed`` and ``backoff_with_jitter`` make the two policies; ``follow`` is an SSE client that
uses one, resumes with ``Last-Event-ID``, and resets its attempt count once a stream opens.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Callable
from urllib.parse import urlsplit

from ..record import Recorder
from .sse_codec import EventStreamParser

Policy = Callable[[int, random.Random], float]   # (attempt, 1 for the first retry; randomness) -> seconds


def fixed(delay: float) -> Policy:
    """Every client waits ``delay`` seconds, every time."""
    if delay < 0:
        raise ValueError("a delay is zero or more seconds")
    return lambda attempt, rng: delay


def backoff_with_jitter(base: float, cap: float) -> Policy:
    """Full jitter: a uniform delay below ``base × 2^(attempt-1)``, and never above ``cap``."""
    if not 0 < base <= cap:
        raise ValueError("base must be above 0 and at most cap (seconds)")
    return lambda attempt, rng: rng.uniform(0, min(cap, base * 2 ** (attempt - 1)))


async def follow(base_url: str, recorder: Recorder, policy: Policy, rng: random.Random) -> None:
    """Follow ``/events`` until cancelled; after every break wait ``policy(attempt)`` and resume.

    A bare client, so that hundreds of them cost little: it asks in HTTP/1.0, so the server
    sends the stream as it is (no chunked encoding) until the connection ends, and the SSE
    parser reads the body directly. Each connection attempt is a request in ``recorder``,
    answered when the stream opened, so the time between is the reconnect latency.
    """
    host, port = urlsplit(base_url).hostname, urlsplit(base_url).port
    attempt, last_id = 0, ""
    while True:
        sent = time.monotonic()
        writer = None
        try:
            reader, writer = await asyncio.open_connection(host, port)
            resume = f"Last-Event-ID: {last_id}\r\n" if last_id else ""
            writer.write(f"GET /events HTTP/1.0\r\nAccept: text/event-stream\r\n{resume}\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            recorder.request(sent, status, 0)
            if status == 200:
                attempt = 0
                parser = EventStreamParser(last_id)
                while chunk := await reader.read(65536):
                    for event in parser.feed(chunk):
                        if event.event == "message":
                            recorder.saw(json.loads(event.data)["seq"])
                    last_id = parser.last_event_id
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as error:
            recorder.errors.append(type(error).__name__)
        finally:
            if writer is not None:
                writer.close()
        attempt += 1
        await asyncio.sleep(policy(attempt, rng))
