"""Chapter 8's webhook experiments: deliveries across a receiver outage, a slow receiver that
makes the provider resend, and deliveries that are forged, tampered with or replayed.

The receiver is a Tornado server (``patterns/webhook.py``) behind a wire meter, so its URL
stays the same while the server behind it is stopped and started again; its ``Ledger`` (what
it accepted and applied) is a SQLite file, which outlives the restart. The crash run puts the
receiver in a process of its own and kills it for real.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
import pandas as pd

from ..lab import cancel_all, lab, on_lab_loop
from ..patterns import webhook
from ..wire import WireMeter


class _Outcome:
    """What every event came to: ``applied`` (id -> times its job took effect) against ``events`` sent."""

    events: int
    applied: dict[str, int]

    @property
    def lost(self) -> int:
        return self.events - len(self.applied)

    @property
    def applied_twice(self) -> int:
        return sum(1 for n in self.applied.values() if n > 1)


@dataclass
class Deliveries(_Outcome):
    """What the provider tried and what the receiver applied, per event id."""

    events: int
    attempts: list[webhook.Attempt]
    delivered: int                 # events the provider saw a 2xx for
    applied: dict[str, int]        # id -> times applied
    outage: tuple[float, float] | None   # (down, up) in seconds after the first event
    started: float
    settings: dict

    def attempts_table(self) -> pd.DataFrame:
        return pd.DataFrame([{"id": a.msg_id, "sent": a.sent - self.started, "outcome": a.outcome}
                             for a in self.attempts])

    def summary(self) -> dict:
        table = self.attempts_table()
        failed = table[table["outcome"] != "2xx"]
        last_ok = table[table["outcome"] == "2xx"]["sent"].max()
        return {**self.settings, "events": self.events, "attempts": len(table), "failed_attempts": len(failed),
                "delivered": self.delivered, "applied": len(self.applied), "lost": self.lost,
                "applied_twice": self.applied_twice,
                "all_delivered_by_s": round(float(last_ok), 3) if len(table) else None}


def _expected(kw: dict) -> float:
    return kw.get("events", 40) / kw.get("rate", 40.0) + kw.get("outage", 0.6) + 1.0


# The backlog's last delivery is timed to 50 ms past the backoff ceiling: a longer wait for a core spoils it.
@on_lab_loop(expected=_expected, tolerates=lambda kw: 0.05)
async def run_webhooks(*, events: int = 40, rate: float = 40.0, outage_at: float | None = 0.3, outage: float = 0.6,
                       fast: bool = True, dedupe: bool = True, work: float = 0.0, base: float = 0.05,
                       cap: float = 0.4, give_up: float = 3.0, seed: int = 15,
                       receiver: type[webhook.HookHandler] = webhook.HookHandler) -> Deliveries:
    """The provider sends ``events`` events at ``rate`` per second, one signed POST each, retrying
    with full-jitter backoff from ``base`` s (ceiling ``cap``). The receiver is down from
    ``outage_at`` for ``outage`` s (``outage_at=None``: no outage). A ``fast`` receiver queues and
    answers 202; a slow one does ``work`` seconds of work before it answers. ``dedupe`` applies
    each webhook-id once. The provider gives up on an event after ``give_up`` s. ``receiver`` is
    the handler class (an exercise passes the learner's own).
    """
    if not 1 <= events <= 1000 or not 0 < rate <= 1000:
        raise ValueError("events must be 1 to 1000 and rate above 0, at most 1000 per second.")
    if not 0 <= outage <= 5 or not 0 <= work <= 5:
        raise ValueError("outage and work are seconds, 0 to 5.")
    secret, ledger, rng = os.urandom(32), webhook.Ledger(), random.Random(seed)
    routes = webhook.handlers(ledger, secret, work=work, fast=fast, dedupe=dedupe, receiver=receiver)
    server = await lab.serve("webhook-receiver", routes)
    meter = await WireMeter(server.port).start()
    url = f"{meter.url}/hooks"
    worker = asyncio.create_task(webhook.worker(ledger, work, dedupe))
    attempts: list[webhook.Attempt] = []
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    started = time.monotonic()

    async def send(i: int) -> bool:
        await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
        return await webhook.deliver(session, url, secret, f"msg_{i:04d}", {"seq": i, "kind": "order.paid"},
                                     attempts, rng, base=base, cap=cap, give_up_after=give_up)

    async def receiver_outage() -> tuple[float, float] | None:
        if outage_at is None:
            return None
        await asyncio.sleep(outage_at)
        down = time.monotonic() - started
        await lab.stop_server("webhook-receiver")
        await asyncio.sleep(outage)
        meter.target_port = (await lab.serve("webhook-receiver", routes)).port
        return down, time.monotonic() - started

    try:
        *results, window = await asyncio.gather(*(send(i) for i in range(events)), receiver_outage())
        deadline = time.monotonic() + work + 1.0
        while (ledger.pending() or ledger.working) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)   # every job accepted is done: one stopped half way would not count
        applied = ledger.applied
    finally:
        await cancel_all([worker])
        await session.close()
        await meter.stop()
        await lab.stop_server("webhook-receiver")
        ledger.close()
    return Deliveries(events, attempts, sum(results), applied, window, started,
                      {"fast": fast, "dedupe": dedupe, "work_s": work})


# -- a crash right after the 202 ---------------------------------------------------------------------

@dataclass
class Crash(_Outcome):
    """What a receiver killed right after answering 202 had accepted, and what it applied in the end."""

    events: int
    accepted_at_kill: int          # deliveries the provider had a 2xx for when the receiver died
    pending_at_kill: int           # of those, not yet applied: in the ledger file, not yet done
    delivered: int                 # events the provider saw a 2xx for, in the end
    applied: dict[str, int]        # id -> times its job took effect, read from the ledger file
    down_s: float                  # from the kill until the new process listened

    def summary(self) -> dict:
        return {"events": self.events, "accepted when killed": self.accepted_at_kill,
                "accepted, not yet applied": self.pending_at_kill, "delivered": self.delivered,
                "applied": len(self.applied), "applied twice": self.applied_twice, "lost": self.lost,
                "receiver down (s)": round(self.down_s, 2)}


def _pending_in(path: str) -> int:
    """Deliveries the ledger file holds and has not applied: what a restarted receiver will find."""
    ledger = webhook.Ledger(path)
    try:
        return len(ledger.pending())
    finally:
        ledger.close()


@on_lab_loop(expected=lambda kw: kw.get("events", 20) / kw.get("rate", 40.0) + 4.0)
async def run_receiver_crash(*, events: int = 20, rate: float = 40.0, kill_after: int = 8, work: float = 0.3,
                             seed: int = 15) -> Crash:
    """The provider sends ``events`` events at ``rate`` a second to a receiver in its own process, whose
    jobs take ``work`` s each. The moment the provider has its ``kill_after``-th 202, the receiver is
    killed (SIGKILL) and started again on the same ledger file; the provider retries what failed.
    """
    if not 1 <= kill_after < events <= 200 or not 0 < rate <= 200 or not 0 <= work <= 2:
        raise ValueError("need 1 <= kill_after < events <= 200, a rate of at most 200 a second and 0 to 2 s of work.")
    secret, rng = os.urandom(32), random.Random(seed)
    handle, path = tempfile.mkstemp(prefix="webhook-ledger-", suffix=".sqlite")
    os.close(handle)
    receiver = await webhook.ReceiverProcess(path, secret, work=work).start()
    meter = await WireMeter(receiver.port).start()
    attempts: list[webhook.Attempt] = []
    killed = asyncio.Event()
    started = time.monotonic()
    facts: dict = {}

    async def send(i: int, session: aiohttp.ClientSession) -> bool:
        await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
        ok = await webhook.deliver(session, f"{meter.url}/hooks", secret, f"msg_{i:04d}", {"seq": i},
                                   attempts, rng, base=0.05, cap=0.4, give_up_after=10.0)
        accepted = sum(a.outcome == "2xx" for a in attempts)
        if ok and not killed.is_set() and accepted >= kill_after:
            killed.set()
            receiver.kill()   # right after that 202, before anything else runs here
            died = time.monotonic()
            await receiver.process.wait()
            facts.update(accepted=accepted, pending=_pending_in(path))
            again = await webhook.ReceiverProcess(path, secret, work=work).start()
            meter.target_port = again.port
            facts.update(receiver=again, down=time.monotonic() - died)
        return ok

    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            results = await asyncio.gather(*(send(i, session) for i in range(events)))
        deadline = time.monotonic() + events * work + 5.0
        while (state := await facts["receiver"].state())["pending"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        applied = state["applied"]
    finally:
        await meter.stop()
        await receiver.stop()
        if "receiver" in facts:
            await facts["receiver"].stop()
        for leftover in (path, path + "-journal", path + "-wal", path + "-shm"):
            Path(leftover).unlink(missing_ok=True)
    return Crash(events, facts["accepted"], facts["pending"], sum(results), applied, facts["down"])


# -- forged, tampered and replayed deliveries ------------------------------------------------------

@on_lab_loop
async def try_forgeries() -> pd.DataFrame:
    """Send one genuine delivery, then five that a receiver must not apply; what did it answer?"""
    secret, ledger = os.urandom(32), webhook.Ledger()
    server = await lab.serve("webhook-forgeries", webhook.handlers(ledger, secret),
                             log_function=lambda handler: None)   # the 401s are the answers shown, not problems
    worker = asyncio.create_task(webhook.worker(ledger, 0.0, True))
    body = json.dumps({"seq": 1, "kind": "order.paid", "amount": 10}).encode()
    genuine = webhook.signed_headers(secret, "msg_0001", body)
    old = int(time.time()) - 600
    tries = [
        ("genuine delivery", genuine, body),
        ("the same delivery again (a retry, or a replay within minutes)", genuine, body),
        ("signed with the wrong secret", webhook.signed_headers(os.urandom(32), "msg_0002", body), body),
        ("body changed after signing", webhook.signed_headers(secret, "msg_0003", body), body.replace(b"10", b"99")),
        ("recorded 10 minutes ago, replayed now", webhook.signed_headers(secret, "msg_0004", body, timestamp=old), body),
        ("no signature at all", {"webhook-id": "msg_0005", "webhook-timestamp": str(int(time.time()))}, body),
    ]
    rows = []
    try:
        async with aiohttp.ClientSession() as session:
            for label, headers, payload in tries:
                before = sum(ledger.applied.values())
                async with session.post(f"{server.url}/hooks", data=payload, headers=headers) as response:
                    answer = await response.json()
                await asyncio.sleep(0.02)   # the worker applies queued deliveries
                rows.append({"delivery": label, "status": response.status,
                             "answer": answer.get("refused", ""), "applied": sum(ledger.applied.values()) - before})
    finally:
        await cancel_all([worker])
        await lab.stop_server("webhook-forgeries")
        ledger.close()
    return pd.DataFrame(rows).set_index("delivery")


def attempts_per_bin(deliveries: Deliveries, width: float = 0.05) -> pd.DataFrame:
    """Attempts per ``width`` s, split into answered (2xx) and failed: the outage and the catch-up."""
    table = deliveries.attempts_table()
    edges = np.arange(0, table["sent"].max() + width, width)
    ok = np.histogram(table[table["outcome"] == "2xx"]["sent"], edges)[0]
    failed = np.histogram(table[table["outcome"] != "2xx"]["sent"], edges)[0]
    return pd.DataFrame({"t": edges[:-1], "answered": ok, "failed": failed})
