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
  it applied and applies each once. And it **answers fast**: it checks, stores the delivery in
  its database, answers ``202``, and applies the event afterwards, so a slow job never makes the
  provider time out and resend. Stored *before* the answer: a receiver that answered 202 and then
  crashed with the event only in memory would lose it, since the provider never sends it again.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import random
import os
import re
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import tornado.web

from ..server_process import ChildServer, serve_commands
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

class Ledger:
    """The receiver's own database: every delivery it accepted, and every job it applied.

    A SQLite file, so it outlives the process: a delivery is committed to it before the receiver
    answers 202 (persist, then answer), and a crash after the answer finds it there on restart.
    A job's effect (here a row in ``effects``) and the mark that its id was applied commit in one
    transaction, so a crash half way leaves neither and the job runs again: each id takes effect
    once. (An effect outside this database, an email, needs the id passed on as an idempotency
    key: chapter 6.) Ids stay as long as the file: a provider may retry for days (Stripe: three),
    and a forgotten id would be applied again. ``path=":memory:"`` keeps it in this process only.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        if path is None:
            handle, path = tempfile.mkstemp(prefix="webhook-ledger-", suffix=".sqlite")
            os.close(handle)
            self._own_file = Path(path)
        else:
            self._own_file = None
        self.path = str(path)
        # autocommit: each statement commits; read from the notebook thread once the lab loop is done with it
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA synchronous = FULL")   # a commit is on disk before it returns
        self.db.execute("CREATE TABLE IF NOT EXISTS inbox (id TEXT PRIMARY KEY, body BLOB, applied INTEGER DEFAULT 0)")
        self.db.execute("CREATE TABLE IF NOT EXISTS effects (id TEXT)")
        self.received = 0
        self.rejected: list[tuple[int, str]] = []   # (status, reason)
        self.working = 0                             # jobs being done right now
        self.under_way: dict[str, asyncio.Future] = {}   # id -> its job's outcome, while the job runs
        self.news = asyncio.Event()

    def accept(self, msg_id: str, body: bytes = b"") -> bool:
        """Store a delivery (committed when this returns); False if its id was already stored."""
        stored = self.db.execute("INSERT OR IGNORE INTO inbox (id, body) VALUES (?, ?)", (msg_id, body)).rowcount
        self.news.set()
        return bool(stored)

    def pending(self) -> list[str]:
        """Ids accepted and not yet applied, oldest first."""
        return [row[0] for row in self.db.execute("SELECT id FROM inbox WHERE applied = 0 ORDER BY rowid")]

    def was_applied(self, msg_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM effects WHERE id = ?", (msg_id,)).fetchone() is not None

    def record(self, msg_id: str, dedupe: bool) -> bool:
        """The job's effect and the mark that ``msg_id`` was applied, in one transaction; with
        ``dedupe``, nothing if it already was. True if the effect took place."""
        with self.db:   # BEGIN ... COMMIT, or ROLLBACK on an exception
            self.db.execute("BEGIN IMMEDIATE")
            if dedupe and self.was_applied(msg_id):
                return False
            self.db.execute("INSERT OR IGNORE INTO inbox (id) VALUES (?)", (msg_id,))
            self.db.execute("UPDATE inbox SET applied = 1 WHERE id = ?", (msg_id,))
            self.db.execute("INSERT INTO effects (id) VALUES (?)", (msg_id,))
        return True

    @property
    def applied(self) -> dict[str, int]:
        """webhook-id -> times its job took effect."""
        return dict(self.db.execute("SELECT id, COUNT(*) FROM effects GROUP BY id"))

    def close(self) -> None:
        self.db.close()
        if self._own_file is not None:
            self._own_file.unlink(missing_ok=True)


class HookHandler(SizeLimits, tornado.web.RequestHandler):
    """``POST /hooks``: verify, then (fast) store and answer 202, or (slow) apply before answering."""

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
            self.ledger.accept(msg_id, self.request.body)   # on disk before the answer: a crash now loses nothing
            self.set_status(202)
            self.finish({"accepted": msg_id})
        else:
            await apply(self.ledger, msg_id, self.work, self.dedupe)
            self.finish({"applied": msg_id})

    def write_error(self, status_code: int, **kwargs) -> None:
        self.finish({"refused": error_reason(status_code, **kwargs)})  # JSON, like every other answer


class JobFailed(RuntimeError):
    """The job for a delivery failed or was stopped: nothing of it took effect, and a later try does it."""


async def apply(ledger: Ledger, msg_id: str, work: float, dedupe: bool) -> None:
    """Do the job an event asks for (``work`` seconds), then record its effect: once per id when ``dedupe``.

    With ``dedupe``, a delivery whose job is already under way (a retry that came while the first
    try worked) waits for that job and shares its outcome, instead of doing it again. A job that
    fails or is stopped records nothing, so a later try does it.
    """
    if dedupe and ledger.was_applied(msg_id):
        return
    if dedupe and msg_id in ledger.under_way:
        await asyncio.shield(ledger.under_way[msg_id])
        return
    outcome = asyncio.get_running_loop().create_future()
    outcome.add_done_callback(lambda done: done.exception())   # an outcome nobody waits for is no error
    if dedupe:
        ledger.under_way[msg_id] = outcome
    ledger.working += 1
    try:
        await asyncio.sleep(work)   # the job
        ledger.record(msg_id, dedupe)
        outcome.set_result(None)
    except BaseException:
        outcome.set_exception(JobFailed(f"the job for {msg_id} failed"))
        raise
    finally:
        ledger.working -= 1
        if ledger.under_way.get(msg_id) is outcome:
            del ledger.under_way[msg_id]


async def worker(ledger: Ledger, work: float, dedupe: bool, *, retry: float = 0.05) -> None:
    """Apply what the ledger holds and has not applied, oldest first, after the provider has its answer.

    Started again after a crash, it picks up what was accepted before; a job that failed is tried again
    ``retry`` s later.
    """
    jobs: dict[str, asyncio.Task] = {}
    try:
        while True:
            ledger.news.clear()
            for msg_id in ledger.pending():
                if msg_id not in jobs:
                    jobs[msg_id] = asyncio.create_task(apply(ledger, msg_id, work, dedupe))
                    jobs[msg_id].add_done_callback(lambda _, msg_id=msg_id: jobs.pop(msg_id, None))
            try:
                await asyncio.wait_for(ledger.news.wait(), retry)
            except asyncio.TimeoutError:
                pass
    finally:
        for job in jobs.values():
            job.cancel()


def handlers(ledger: Ledger, secret: bytes, *, work: float = 0.0, fast: bool = True, dedupe: bool = True,
             receiver: type[HookHandler] = HookHandler) -> list:
    return [(r"/hooks", receiver, {"ledger": ledger, "secret": secret, "work": work, "fast": fast,
                                   "dedupe": dedupe})]


# -- the receiver in a process of its own, to crash it for real ---------------------------------------

class ReceiverProcess(ChildServer):
    """The fast receiver and its worker in a child process, on a ledger file; ``kill()`` crashes it."""

    def __init__(self, ledger: str, secret: bytes, *, work: float = 0.0) -> None:
        super().__init__("webhook receiver")
        self.ledger, self.secret, self.work = ledger, secret, work

    def command(self) -> list[str]:
        # main() from the imported module, so that code patching this module (the mutation suite) reaches the child
        return [sys.executable, "-c", "from labsupport.patterns.webhook import main; main()",
                "--ledger", self.ledger, "--secret", self.secret.hex(), "--work", str(self.work)]

    def kill(self) -> None:
        """SIGKILL, as a crash or a power cut would: no cleanup, nothing flushed that was not already."""
        self.process.kill()

    async def state(self) -> dict:
        """How many deliveries the receiver holds and has not applied, and what it applied (id -> times)."""
        return await self._ask("state")


async def serve(ledger_path: str, secret: bytes, work: float) -> None:
    ledger = Ledger(ledger_path)
    jobs = asyncio.create_task(worker(ledger, work, dedupe=True))

    async def answer(word: str, rest: list[str]) -> dict:
        return {"pending": len(ledger.pending()), "applied": ledger.applied}   # "state"

    try:
        await serve_commands(handlers(ledger, secret, work=work), answer)
    finally:
        jobs.cancel()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A webhook receiver on a ledger file, with its worker.")
    parser.add_argument("--ledger", required=True, help="the SQLite file")
    parser.add_argument("--secret", required=True, help="the shared secret, in hex")
    parser.add_argument("--work", type=float, default=0.0, help="seconds each job takes")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.ledger, bytes.fromhex(args.secret), args.work))


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


if __name__ == "__main__":
    main()
