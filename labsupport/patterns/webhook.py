"""Webhooks: server-to-server push. The provider POSTs each event to a URL the receiver gave it.

No connection is held: each event is one ordinary HTTP request, from the provider's server to
the receiver's. That makes the receiver's problems the provider's: the receiver may be down,
slow, or someone else pretending to be the provider. Three rules handle them. The header names
and the signed string follow the Standard Webhooks specification (standardwebhooks.com). Other
providers sign less: Stripe signs ``timestamp.body`` (``Stripe-Signature: t=...,v1=<hex>``,
docs.stripe.com/webhooks); GitHub signs the raw body alone (``X-Hub-Signature-256: sha256=<hex>``),
with no timestamp, so its receiver cannot refuse an old delivery and must dedupe on the
``X-GitHub-Delivery`` id instead (docs.github.com, "Validating webhook deliveries"):

* **Signed.** The provider signs ``id.timestamp.body`` with HMAC-SHA256 (RFC 2104) under a
  secret both sides hold, and sends ``webhook-id``, ``webhook-timestamp`` and
  ``webhook-signature: v1,<base64>``. The receiver recomputes the signature and compares in
  constant time; a timestamp older than ``TOLERANCE`` is refused, so a recorded delivery cannot
  be replayed later.
* **Retried with backoff.** Any answer but 2xx, or no answer within ``TIMEOUT``, and the
  provider tries again later, waiting longer each time (with jitter), so a receiver coming back
  from an outage is not flattened by the backlog.
* **Idempotent.** Retries mean a receiver can get the same event twice (its answer was lost,
  or came too late). The ``webhook-id`` is an idempotency key: the receiver remembers the ids
  it applied and applies each once. And it **answers fast**: it checks, queues, answers ``202``,
  and applies the event afterwards, so a slow job never makes the provider time out and resend.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
import re
import time
from dataclasses import dataclass, field

import aiohttp
import tornado.web

from ._input import SizeLimits, error_reason

TOLERANCE = 300.0   # seconds: how old a delivery may be (Standard Webhooks suggests five minutes)
TIMEOUT = 0.5       # seconds the provider waits for an answer before it counts the attempt as failed
_STAMP = re.compile(r"[0-9]{1,12}")  # seconds since 1970 in ASCII digits (12 of them last to the year 33658)


def sign(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` and the base64 HMAC-SHA256 of ``id.timestamp.body``."""
    mac = hmac.new(secret, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(secret: bytes, msg_id: str, body: bytes, timestamp: int | None = None) -> dict:
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, msg_id, timestamp, body), "content-type": "application/json"}


def malformed(headers) -> str | None:
    """Why the delivery's headers cannot even be checked (a 400), or None."""
    msg_id, stamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
    if not msg_id or not stamp:
        return "missing webhook-id or webhook-timestamp"
    if not _STAMP.fullmatch(stamp):  # str.isdigit() takes '²', which int() then refuses
        return f"webhook-timestamp {stamp[:20]!r} is not whole seconds since 1970 in ASCII digits"
    return None


def verify(secret: bytes, headers, body: bytes, *, now: float | None = None, tolerance: float = TOLERANCE) -> str | None:
    """Why the delivery must be refused, or None if it is genuine and fresh."""
    problem = malformed(headers)
    if problem is not None:
        return problem
    msg_id, stamp = headers["webhook-id"], headers["webhook-timestamp"]
    now = time.time() if now is None else now
    if abs(now - int(stamp)) > tolerance:
        return f"timestamp {now - int(stamp):.0f} s away from now: a replay, or a clock far off"
    expected = sign(secret, msg_id, int(stamp), body)
    offered = headers.get("webhook-signature", "").split()   # several signatures may be offered while keys rotate
    if not any(hmac.compare_digest(expected, s) for s in offered):
        return "signature does not match"
    return None


# -- the receiver ---------------------------------------------------------------------------------

@dataclass
class Ledger:
    """The receiver's own state, which outlives a restart (in production: its database)."""

    applied: dict[str, int] = field(default_factory=dict)     # webhook-id -> times applied
    received: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)   # (status, reason)
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    working: int = 0     # jobs being done right now


class HookHandler(SizeLimits, tornado.web.RequestHandler):
    """``POST /hooks``: verify, then (fast) queue and answer 202, or (slow) apply before answering."""

    def initialize(self, ledger: Ledger, secret: bytes, work: float, fast: bool, dedupe: bool) -> None:
        self.ledger, self.secret, self.work, self.fast, self.dedupe = ledger, secret, work, fast, dedupe

    async def post(self) -> None:
        self.ledger.received += 1
        problem, status = malformed(self.request.headers), 400
        if problem is None:
            problem, status = verify(self.secret, self.request.headers, self.request.body), 401
        if problem is not None:
            self.ledger.rejected.append((status, problem))
            self.set_status(status)
            self.finish({"refused": problem})
            return
        msg_id = self.request.headers["webhook-id"]
        if self.fast:
            self.ledger.queue.put_nowait(msg_id)
            self.set_status(202)
            self.finish({"queued": msg_id})
        else:
            await apply(self.ledger, msg_id, self.work, self.dedupe)
            self.finish({"applied": msg_id})

    def write_error(self, status_code: int, **kwargs) -> None:
        self.finish({"refused": error_reason(status_code, **kwargs)})  # JSON, like every other answer


async def apply(ledger: Ledger, msg_id: str, work: float, dedupe: bool) -> None:
    """Do the job an event asks for (``work`` seconds), once per id when ``dedupe``."""
    if dedupe and msg_id in ledger.applied:
        return
    ledger.applied[msg_id] = ledger.applied.get(msg_id, 0) + 1   # claimed before the work, as a unique key would be
    ledger.working += 1
    try:
        await asyncio.sleep(work)
    except BaseException:  # the work failed or was stopped: release the claim, so that a retry does it
        ledger.applied[msg_id] -= 1
        if not ledger.applied[msg_id]:
            del ledger.applied[msg_id]
        raise
    finally:
        ledger.working -= 1


async def worker(ledger: Ledger, work: float, dedupe: bool) -> None:
    """Apply queued events, each as soon as it is taken, after the provider already has its answer."""
    jobs: set[asyncio.Task] = set()
    try:
        while True:
            job = asyncio.create_task(apply(ledger, await ledger.queue.get(), work, dedupe))
            jobs.add(job)
            job.add_done_callback(jobs.discard)
    finally:
        for job in jobs:
            job.cancel()


def handlers(ledger: Ledger, secret: bytes, *, work: float = 0.0, fast: bool = True, dedupe: bool = True,
             receiver: type[HookHandler] = HookHandler) -> list:
    return [(r"/hooks", receiver, {"ledger": ledger, "secret": secret, "work": work, "fast": fast,
                                   "dedupe": dedupe})]


# -- the provider ---------------------------------------------------------------------------------

@dataclass
class Attempt:
    msg_id: str
    sent: float
    outcome: str     # "2xx", an HTTP status, or the error's name


async def deliver(session: aiohttp.ClientSession, url: str, secret: bytes, msg_id: str, payload: dict,
                  attempts: list[Attempt], rng: random.Random, *, base: float = 0.05, cap: float = 1.0,
                  timeout: float = TIMEOUT, give_up_after: float = 30.0) -> bool:
    """POST one event until a 2xx answer, with full-jitter backoff between tries; False if it gave up.

    Each try is signed afresh (a new timestamp), with the same ``webhook-id``.
    """
    body = json.dumps(payload).encode()
    started, failures = time.monotonic(), 0
    while time.monotonic() - started < give_up_after:
        sent = time.monotonic()
        try:
            async with session.post(url, data=body, headers=signed_headers(secret, msg_id, body),
                                    timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                await response.read()
                ok = 200 <= response.status < 300
                attempts.append(Attempt(msg_id, sent, "2xx" if ok else str(response.status)))
                if ok:
                    return True
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            attempts.append(Attempt(msg_id, sent, type(error).__name__))
        failures += 1
        await asyncio.sleep(rng.uniform(0, min(cap, base * 2 ** failures)))
    return False
