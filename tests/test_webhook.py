"""Webhooks (chapter 8): signatures checked to the byte, retries across an outage, idempotency."""

import os
import time

import pytest

from labsupport.experiments.production_webhooks import attempts_per_bin, run_receiver_crash, run_webhooks, try_forgeries
from labsupport.patterns import webhook

SECRET = b"test-secret"
BODY = b'{"seq": 1}'


def test_a_genuine_delivery_verifies():
    assert webhook.verify(SECRET, webhook.signed_headers(SECRET, "msg_1", BODY), BODY) is None


def test_the_signature_matches_the_standard_webhooks_example():
    # The example in the Standard Webhooks specification: secret "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    # (base64 of the key bytes), id msg_p5jXN8AQM9LWM0D4loKWxJek, timestamp 1614265330.
    secret = __import__("base64").b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = b'{"test": 2432232314}'
    assert webhook.sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == \
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize("change", ["body", "id", "secret", "old", "future", "missing", "garbled"])
def test_anything_changed_is_refused_with_a_reason(change):
    headers, body, secret = webhook.signed_headers(SECRET, "msg_1", BODY), BODY, SECRET
    if change == "body":
        body = b'{"seq": 2}'
    elif change == "id":
        headers["webhook-id"] = "msg_2"
    elif change == "secret":
        secret = os.urandom(16)
    elif change == "old":
        headers = webhook.signed_headers(SECRET, "msg_1", BODY, timestamp=int(time.time()) - 301)
    elif change == "future":
        headers = webhook.signed_headers(SECRET, "msg_1", BODY, timestamp=int(time.time()) + 301)
    elif change == "missing":
        del headers["webhook-timestamp"]
    else:
        headers["webhook-signature"] = "v1,not-base64!"
    assert webhook.verify(secret, headers, body)


def test_one_of_several_offered_signatures_is_enough():
    headers = webhook.signed_headers(SECRET, "msg_1", BODY)
    headers["webhook-signature"] = "v1,c29tZXRoaW5nIGVsc2U= " + headers["webhook-signature"]
    assert webhook.verify(SECRET, headers, BODY) is None


def test_an_outage_loses_nothing_and_applies_nothing_twice():
    run = run_webhooks(events=20, rate=40, outage_at=0.2, outage=0.4)
    s = run.summary()
    assert s["failed_attempts"] > 0, "the receiver was down, so some attempts must have failed"
    assert s["lost"] == 0 and s["applied_twice"] == 0 and s["delivered"] == 20
    bins = attempts_per_bin(run)
    assert bins["answered"].sum() == 20 and bins["failed"].sum() == s["failed_attempts"]


def test_a_slow_receiver_gets_retries_and_the_key_keeps_them_harmless():
    slow = run_webhooks(events=4, rate=20, outage_at=None, fast=False, work=0.7).summary()
    assert slow["attempts"] > 4 and slow["applied_twice"] == 0 and slow["lost"] == 0
    careless = run_webhooks(events=4, rate=20, outage_at=None, fast=False, work=0.7, dedupe=False, give_up=1.2).summary()
    assert careless["applied_twice"] == 4


def test_forged_tampered_and_replayed_deliveries_change_nothing():
    table = try_forgeries()
    assert table["applied"].tolist() == [1, 0, 0, 0, 0, 0]
    assert table["status"].tolist() == [202, 202, 401, 401, 401, 401]


def test_bad_settings_get_a_clear_error():
    with pytest.raises(ValueError, match="events"):
        run_webhooks(events=0)


@pytest.mark.parametrize("stamp", ["\u00b2", "-5", "1.5", "9" * 20])
def test_a_timestamp_that_is_not_ascii_seconds_is_a_bad_request_not_a_crash(stamp):
    headers = webhook.signed_headers(SECRET, "msg_1", BODY)
    headers["webhook-timestamp"] = stamp
    assert "ASCII digits" in webhook.malformed(headers) == webhook.verify(SECRET, headers, BODY)


def test_the_receiver_answers_bad_timestamps_400_and_a_huge_one_431():
    import aiohttp
    from labsupport import lab

    async def deliver(stamps):
        ledger = webhook.Ledger()
        server = await lab.serve("webhook-bad-input", webhook.handlers(ledger, SECRET))
        answers = []
        try:
            async with aiohttp.ClientSession() as session:
                for stamp in stamps:
                    headers = {**webhook.signed_headers(SECRET, "msg_1", BODY), "webhook-timestamp": stamp}
                    async with session.post(f"{server.url}/hooks", data=BODY, headers=headers) as answer:
                        answers.append((answer.status, (await answer.json())["refused"]))
        finally:
            await lab.stop_server(server.name)
        return answers, ledger

    answers, ledger = lab.run(deliver(["\u00b2".encode().decode("latin-1"), "-5", "9" * 100_000]))
    assert [status for status, _ in answers] == [400, 400, 431]
    assert not ledger.applied and not ledger.pending()
    ledger.close()


def test_a_job_that_fails_releases_its_claim_so_a_retry_applies_it():
    import asyncio

    async def attempts():
        ledger = webhook.Ledger()
        job = asyncio.ensure_future(webhook.apply(ledger, "msg_1", 1.0, dedupe=True))
        await asyncio.sleep(0.05)
        job.cancel()  # the work stopped half way (a crash, a timeout)
        await asyncio.gather(job, return_exceptions=True)
        released = dict(ledger.applied)
        await webhook.apply(ledger, "msg_1", 0.0, dedupe=True)   # the provider's retry
        await webhook.apply(ledger, "msg_1", 0.0, dedupe=True)   # and a duplicate of it
        return released, ledger.applied

    released, applied = __import__("labsupport").lab.run(attempts())
    assert released == {} and applied == {"msg_1": 1}


def test_the_ledger_keeps_accepted_deliveries_in_its_file_across_a_new_connection(tmp_path):
    first = webhook.Ledger(tmp_path / "ledger.sqlite")
    assert first.accept("msg_1", b"{}") and not first.accept("msg_1", b"{}")   # stored once
    first.db.close()   # the process is gone; the file is not
    again = webhook.Ledger(tmp_path / "ledger.sqlite")
    assert again.pending() == ["msg_1"]
    assert again.record("msg_1", dedupe=True) and not again.record("msg_1", dedupe=True)
    assert again.pending() == [] and again.applied == {"msg_1": 1}


def test_a_receiver_killed_right_after_its_202s_applies_each_event_once_when_it_comes_back():
    crash = run_receiver_crash(events=10, rate=40, kill_after=4, work=0.5)
    assert crash.pending_at_kill == crash.accepted_at_kill >= 4   # accepted, answered, not yet applied
    assert crash.lost == 0 and crash.applied_twice == 0 and crash.delivered == 10
