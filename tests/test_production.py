"""Chapter 8's other pieces: HTTP/2 on the wire, the idle-cutting proxy, reconnect policies,
storms and deploys. What they measure must add up (bytes, connections, losses), not how fast."""

import asyncio
import random

import h2.connection
import pytest
from hyperframe.frame import HeadersFrame, SettingsFrame

from conftest import scaled
from labsupport.exercises import ch08
from labsupport.experiments.production_deploys import RoundRobin, run_deploy
from labsupport.experiments.production_http2 import crossover, poll_bytes, run_streams
from labsupport.experiments.production_idle import run_half_open, run_idle
from labsupport.experiments.production_storms import run_storms
from labsupport.lab import lab
from labsupport.patterns import http2, reconnect
from labsupport.patterns.idle import IdleCutter
from labsupport.wire import WireMeter


# -- HTTP/2 -----------------------------------------------------------------------------------

def test_frames_decodes_what_the_h2_library_writes_split_anywhere():
    client = h2.connection.H2Connection()
    client.initiate_connection()
    for _ in range(2):
        client.send_headers(client.get_next_available_stream_id(),
                            [(":method", "GET"), (":path", "/poll"), (":scheme", "http"), (":authority", "lab")],
                            end_stream=True)
    wire = client.data_to_send()
    decoded = http2.frames(wire)
    assert isinstance(decoded[0][0], SettingsFrame)
    headers = [(f, h) for f, h in decoded if isinstance(f, HeadersFrame)]
    assert [h[":path"] for _, h in headers] == ["/poll", "/poll"]
    assert len(headers[1][0].data) == 4, "four repeated headers: four one-byte indexes"
    assert len(http2.frames(wire[:-1])) == len(decoded) - 1, "a frame cut short is left out"


def test_http2_polls_shrink_after_the_first_and_http1_polls_do_not():
    polls = poll_bytes(polls=4)
    h1 = polls.table()[polls.table()["protocol"] == "HTTP/1.1"]
    assert h1["bytes_up"].nunique() == 1, "HTTP/1.1 repeats the same request head"
    blocks = polls.header_blocks()
    assert (blocks["block_bytes"].iloc[1:] == blocks["fields"].iloc[1:]).all()
    assert polls.per_poll("HTTP/2", "following") < polls.per_poll("HTTP/1.1", "following") / 3


def test_many_streams_share_one_connection_up_to_the_announced_limit():
    shared = run_streams(streams=30, rate=10, duration=0.3)
    assert shared.summary()["connections"] == 1 and shared.summary()["missed"] == 0
    limited = run_streams(streams=6, max_streams=4, rate=10, duration=0.3)
    assert limited.announced == 4 and limited.opened_in_time == 4
    own = run_streams(streams=5, use_http2=False, rate=10, duration=0.3)
    assert own.summary()["connections"] == 5 and own.announced is None
    moved = crossover(poll_bytes(polls=3), own, shared, interval=1.0)
    assert moved.loc["HTTP/2", "crossover (events/s)"] < moved.loc["HTTP/1.1", "crossover (events/s)"]


def test_bad_stream_settings_get_a_clear_error():
    with pytest.raises(ValueError, match="max_streams"):
        run_streams(streams=2, max_streams=0)
    with pytest.raises(ValueError, match="streams"):
        run_streams(streams=0)


# -- the idle-cutting proxy --------------------------------------------------------------------

async def _echo_server():
    async def echo(reader, writer):
        while data := await reader.read(100):
            writer.write(data)
        writer.close()
    return await asyncio.start_server(echo, "127.0.0.1", 0)


async def _quiet_connection(mode: str):
    server = await _echo_server()
    meter = await WireMeter(server.sockets[0].getsockname()[1]).start()
    cutter = IdleCutter(meter, 0.2, mode=mode).start()
    reader, writer = await asyncio.open_connection("127.0.0.1", meter.port)
    writer.write(b"hi")
    assert await reader.read(10) == b"hi"
    await asyncio.sleep(scaled(0.5))
    writer.write(b"still there?")
    try:
        answer = await asyncio.wait_for(reader.read(100), scaled(0.3))
    except asyncio.TimeoutError:
        answer = "no answer"
    except ConnectionError:
        answer = "reset"
    dropped = len(cutter.dropped)
    writer.close()
    await cutter.stop()
    await meter.stop()
    server.close()
    return dropped, answer


def test_the_proxy_closes_a_quiet_connection_and_the_client_is_told():
    dropped, answer = lab.run(_quiet_connection("close"))
    assert dropped == 1 and answer in (b"", "reset")


def test_the_proxy_can_forget_a_connection_silently_half_open():
    dropped, answer = lab.run(_quiet_connection("silent"))
    assert dropped == 1 and answer == "no answer"


def test_the_idle_cutter_refuses_nonsense():
    with pytest.raises(ValueError):
        IdleCutter(None, 0)
    with pytest.raises(ValueError):
        IdleCutter(None, 1, mode="sometimes")


def test_heartbeats_keep_every_pattern_alive_and_silence_gets_them_dropped():
    quiet = run_idle(timeout=0.4, heartbeat=None, quiet=1.0)
    assert (quiet.table()["dropped_by_proxy"] >= 1).all() and (quiet.table()["connections"] >= 2).all()
    kept = run_idle(timeout=0.6, heartbeat=0.15, quiet=1.0)
    assert (kept.table()["dropped_by_proxy"] == 0).all() and kept.table()["event_delivered"].all()


def test_only_a_read_timeout_finds_a_half_open_connection():
    half = run_half_open(heartbeat=0.1, read_timeout=0.3, rate=10, duration=1.2, forget_at=0.3)
    assert half.noticed_after[0] is None and half.events_after[0] == 0
    assert half.noticed_after[1] is not None and half.noticed_after[1] >= 0.3 * 0.9
    assert half.summary().loc["client 1", "events missed"] == 0


# -- reconnecting ------------------------------------------------------------------------------

def test_fixed_delays_agree_and_full_jitter_spreads_below_a_doubling_ceiling():
    rng = random.Random(1)
    assert {reconnect.fixed(0.5)(n, rng) for n in range(1, 5)} == {0.5}
    policy = reconnect.backoff_with_jitter(1.0, 4.0)
    first = [policy(1, rng) for _ in range(2000)]
    assert 0 <= min(first) and max(first) <= 1.0 and 0.45 < sum(first) / len(first) < 0.55
    assert max(policy(3, rng) for _ in range(500)) > 2.0, "the ceiling doubles per attempt"
    assert max(policy(10, rng) for _ in range(500)) <= 4.0, "and stops at the cap"
    with pytest.raises(ValueError):
        reconnect.backoff_with_jitter(2.0, 1.0)


def test_a_small_storm_brings_everyone_back_without_loss():
    storms = run_storms(clients=20, retry=0.2, base=0.4)
    for storm in storms.values():
        assert storm.summary()["reconnects"] == 20
    assert storms["jitter"].lost == 0
    assert storms["fixed"].arrivals.min() >= 0.2 * 0.9, "nobody came back before the fixed delay"


def test_round_robin_alternates_between_backends():
    balancer = RoundRobin([1001, 1002])
    assert [balancer.target_port for _ in range(4)] == [1001, 1002, 1001, 1002]


def test_a_rolling_deploy_loses_nothing_and_a_503_ends_event_sources():
    rolling = run_deploy(kind="rolling", clients=2, rate=20, duration=1.2).table()
    assert (rolling["lost"] == 0).all() and (rolling["clients that gave up"] == 0).all()
    naive = run_deploy(kind="naive", clients=2, rate=20, duration=1.2, down=0.3).table()
    assert naive.loc["sse", "clients that gave up"] == 2
    assert naive.loc["websocket", "lost"] == 0 and naive.loc["long polling", "lost"] == 0
    with pytest.raises(ValueError, match="kind"):
        run_deploy(kind="big bang")


def test_exercise_two_accepts_per_10_ms_not_per_second():
    assert ch08.q2.is_correct(5.0) and not ch08.q2.is_correct(500)


def test_sessions_in_memory_need_a_sticky_balancer_and_a_websocket_does_not():
    from labsupport.experiments.production_sticky import run_sticky, sticky_summary
    table = sticky_summary(run_sticky(clients=2, polls=4))
    assert table.loc[("round robin", "long polling"), "refused"] == 4   # every other poll of each client
    assert table.loc[("sticky by address", "long polling"), "refused"] == 0
    assert table.loc[("round robin", "websocket"), "refused"] == 0


def test_tickets_are_single_use_and_expire():
    from labsupport.patterns.auth import Tickets
    tickets = Tickets(lifetime=0.05)
    first = tickets.issue("ada")
    assert tickets.spend(first) == "ada" and tickets.spend(first) is None
    late = tickets.issue("ada")
    import time
    time.sleep(0.1)
    assert tickets.spend(late) is None and tickets.spend("made-up") is None


def test_origin_check_stops_cross_site_hijacking_and_query_tokens_reach_the_log():
    from labsupport.experiments.production_auth import run_auth
    attempts, log = run_auth()
    assert attempts.loc["WebSocket from another site's page, server checking Origin", "status"] == "403 refused"
    assert attempts.loc["WebSocket from another site's page, server trusting any origin", "status"] == "101 open"
    assert attempts.loc["stream with the same ticket again", "status"] == 401
    assert any("token=tok_" in line for line in log) and not any("Bearer" in line for line in log)


def test_http3_handshake_takes_one_round_trip_and_the_stream_delivers_everything():
    from labsupport.experiments.production_http3 import run_http3
    quic = run_http3(latency=0.03, polls=3, rate=20, duration=0.3)
    assert quic.first_datagram >= 1200
    assert 0.9 * quic.rtt <= quic.handshake_s and 1.9 * quic.rtt <= quic.first_answer_s
    assert (quic.handshake_round_trips, quic.first_answer_round_trips) == (1, 2)
    assert quic.delivered == quic.events and quic.poll_up > 0 and quic.poll_down > 0


def test_a_websocket_without_its_session_cookie_is_refused_in_the_handshake():
    import aiohttp
    from labsupport import lab
    from labsupport.patterns import auth

    accounts = auth.Accounts()
    accounts.sessions["sid_ada"] = "ada"

    async def attempts():
        server = await lab.serve("auth-handshake", auth.handlers(accounts, allowed_origins={"http://app.test"}))
        url = server.url.replace("http://", "ws://") + "/ws"
        answers = []
        try:
            async with aiohttp.ClientSession() as http:
                for cookie in ("", "sid=made-up", "sid=sid_ada"):
                    headers = {"Cookie": cookie} if cookie else {}
                    try:
                        async with http.ws_connect(url, origin="http://app.test", headers=headers) as ws:
                            answers.append((101, (await ws.receive(timeout=5)).data))
                    except aiohttp.WSServerHandshakeError as refused:
                        answers.append((refused.status, ""))
                async with http.post(f"{server.url}/ticket") as ticket:
                    challenge = ticket.status, ticket.headers.get("WWW-Authenticate", "")
        finally:
            await lab.stop_server(server.name)
        return answers, challenge

    answers, challenge = lab.run(attempts())
    assert answers == [(403, ""), (403, ""), (101, "private data of ada")]
    assert challenge[0] == 401 and challenge[1].startswith("Bearer")
