"""Ladder diagrams of known runs, built headless: one arrow per message the wire carried.

Each run is small enough that its messages are known in advance: three polls on one kept-alive
connection are three requests and three answers; a stream of five events cut once is two
requests, two answer heads, five events and one cut. The meter's log is tested here too: it
costs nothing when off and keeps every byte when on, up to its budget.
"""

import aiohttp

from labsupport import WireMeter, lab
from labsupport.experiments.longpolling import run_long_polling
from labsupport.experiments.queues import run_wire
from labsupport.experiments.queues_faults import run_crash
from labsupport.experiments.sse import run_sse_cut
from labsupport.experiments.websocket import run_game, run_websocket
from labsupport.feed import Feed
from labsupport.patterns import polling
from labsupport.plots import ladder


async def _polls(count: int, *, keep_alive: bool, log_bytes: int = 100_000) -> WireMeter:
    server = await lab.serve("ladder-polls", polling.handlers(Feed(5.0)))
    meter = await WireMeter(server.port, log_bytes=log_bytes).start()
    connector = aiohttp.TCPConnector(force_close=not keep_alive)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(count):
                async with session.get(f"{meter.url}/latest") as response:
                    await response.read()
    finally:
        await meter.stop()
        await lab.stop_server("ladder-polls")
    return meter


def arrows(fig, run: str = "run") -> dict:
    return {k: v for k, v in fig.layout.meta[run].items() if v}


def test_three_polls_on_keep_alive_are_three_requests_and_three_answers_on_one_connection():
    meter = lab.run(_polls(3, keep_alive=True))
    assert len(meter.connections) == 1
    fig = ladder(meter.connections)
    assert arrows(fig) == {"request": 3, "response": 3}
    assert list(fig.layout.xaxis.ticktext) == ["connection 0", "server"]  # no delay, no cut: no link lane


def test_three_polls_with_connection_close_open_three_connections():
    meter = lab.run(_polls(3, keep_alive=False))
    fig = ladder(meter.connections)
    assert arrows(fig) == {"request": 3, "response": 3}
    assert len(fig.layout.xaxis.ticktext) == 3 + 1


def test_the_log_costs_nothing_when_off_and_keeps_every_byte_when_on():
    off = lab.run(_polls(2, keep_alive=True, log_bytes=0))
    assert off.connections[0].chunks is None
    on = lab.run(_polls(2, keep_alive=True))
    conn = on.connections[0]
    assert sum(len(c[3]) for c in conn.chunks if c[0] == "up") == conn.bytes_up
    assert sum(len(c[3]) for c in conn.chunks if c[0] == "down") == conn.bytes_down
    assert all(read <= delivered for _, read, delivered, _ in conn.chunks)


def test_a_full_log_stops_and_the_figure_says_so():
    meter = lab.run(_polls(5, keep_alive=True, log_bytes=700))
    assert meter.log_full_at is not None
    fig = ladder(meter.connections)
    assert 0 < arrows(fig)["request"] < 5
    assert any("log kept" in a.text for a in fig.layout.annotations)


def test_one_sse_stream_with_five_events_and_a_cut():
    outcome = run_sse_cut(rate=5.0, duration=1.0, cut_at=0.5, retry_ms=200)
    assert outcome.lost == 0 and len(outcome.result.events) == 5
    fig = ladder(outcome.result)
    assert arrows(fig) == {"request": 2, "response head": 2, "retry": 2, "event": 5, "cut": 1}
    assert list(fig.layout.xaxis.ticktext) == ["client", "link", "server"]  # a cut shows the link
    assert any("reconnects" in a.text for a in fig.layout.annotations)


def test_long_polling_draws_each_held_request_as_a_bar():
    result = run_long_polling(rate=5.0, duration=1.0, latency=0.02)
    counts = arrows(ladder(result))
    answered = len(result.requests)
    assert counts["response"] == answered
    assert counts["request"] in (answered, answered + 1)  # the last may still be held when the run ends
    assert counts["held"] >= answered - 1  # each answer waited for news (the first may find it waiting)


def test_a_websocket_is_one_upgrade_then_frames():
    result = run_websocket(rate=5.0, duration=1.0)
    counts = arrows(ladder(result))
    assert counts["request"] == 1 and counts["response"] == 1
    assert counts["frame down"] >= len(result.events)


def test_a_game_loop_has_frames_both_ways_on_one_connection():
    duplex = run_game(duration=0.5, latency=0.02)
    fig = ladder(duplex.wire, names=["player"])
    names = {trace.name for trace in fig.data}
    assert {"frame up", "frame down"} <= names
    counts = arrows(fig)
    assert counts["frame up"] == duplex.count("up")
    assert counts["frame down"] - duplex.count("down") in (0, 1, 2)  # the client stops reading the last ticks


def test_a_job_through_the_broker_is_publish_puback_fetch_delivery_ack():
    capture = run_wire()
    fig = ladder(capture.wire, names=["producer", "email worker"], server="broker")
    counts = arrows(fig)
    for step in ("publish", "PubAck", "fetch", "delivery", "ack"):
        assert counts[step] == 1, step
    assert counts["nats control"] >= 4  # INFO, CONNECT, PING, PONG on each connection


def test_a_crash_before_the_ack_ends_in_a_redelivery_to_the_restarted_worker():
    crash = run_crash(jobs=3, crash_on=2, ack_wait=0.5, service_time=0.02)
    fig = ladder(crash.wire, names=["email service", "restarted"], server="broker")
    counts = arrows(fig)
    assert counts["redelivery"] == 1
    assert counts["delivery"] == 3  # jobs 1 and 2 to the first worker, job 3 to the restarted one
    assert counts["ack"] == 3  # job 2's ack comes from the restarted worker, after the redelivery


def test_long_runs_fold_repeated_events_and_say_so():
    outcome = run_sse_cut(rate=50.0, duration=2.0, cut_at=1.0)
    fig = ladder(outcome.result)
    counts = fig.layout.meta["run"]
    assert counts["folded"] > 0
    assert counts["event"] + counts["folded"] == len(outcome.result.events)
    assert any("folded" in a.text for a in fig.layout.annotations)
    window = ladder(outcome.result, start=0.9, end=1.3, fold=False)
    assert 0 < window.layout.meta["run"]["event"] < 30


def test_several_runs_side_by_side():
    a = lab.run(_polls(2, keep_alive=True))
    b = lab.run(_polls(2, keep_alive=False))
    fig = ladder({"keep-alive": a.connections, "close": b.connections})
    assert set(fig.layout.meta) == {"keep-alive", "close"}
    assert fig.layout.meta["close"]["request"] == 2
