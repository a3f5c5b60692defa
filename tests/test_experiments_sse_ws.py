"""Chapters 4 and 5's experiments: what they measure must add up (bytes, losses, codes), not how fast."""

import pytest

from labsupport.experiments.sse import (chunk_framing_bytes, resume_with, run_sse, run_sse_cut, run_talk_back,
                                        sse_framing, sse_framing_bytes)
from labsupport.patterns.sse_codec import encode_event
from labsupport.experiments.websocket import (frame_header, frame_overhead, handshake, run_chat, run_game,
                                              run_round_trips, run_websocket)
from labsupport.experiments.websocket_faults import misbehave, run_dead_peer, run_slow_reader, run_websocket_cut
from labsupport.plots import duplex_lanes, round_trip_histogram


def test_the_framing_rules_count_what_the_encoder_writes():
    payload = '{"seq": 7, "value": 100.5}'
    assert sse_framing_bytes("7") == len("id: 7\n" "data: " "\n" "\n") == 14
    assert len(encode_event(payload, id="7")) - len(payload) == sse_framing_bytes("7")
    assert chunk_framing_bytes(13) == len("d\r\n" "\r\n") and chunk_framing_bytes(40) == len("28\r\n" "\r\n")


def test_sse_bytes_add_up_exactly():
    framing = sse_framing(rate=100, duration=0.5)
    assert framing.events >= 40
    assert framing.body_bytes == framing.predicted_body_bytes  # every byte accounted for
    assert framing.sse_per_event == pytest.approx(17 + 5 + 2, abs=1)  # "id: <8 hex>-NN\n", "data: ", 2 newlines


@pytest.mark.parametrize("backend", ["lab", "process"])
def test_sse_fan_out_delivers_everything(backend):
    result = run_sse(rate=10, clients=40, duration=0.5, backend=backend)
    summary = result.summary()
    assert summary["missed"] == 0 and summary["connections_opened"] == 40 and summary["requests"] == 40
    assert (result.server_cpu_s is not None) == (backend == "process")  # its own CPU clock only in its own process


def test_sse_backend_must_be_known():
    with pytest.raises(ValueError, match="backend"):
        run_sse(backend="cloud")


def test_sse_cut_loses_nothing_and_a_short_history_announces_the_gap():
    outcome = run_sse_cut(rate=40, duration=1.2, cut_at=0.5, retry_ms=100)
    assert outcome.connections_cut == 1 and outcome.reconnects == 1
    assert outcome.lost == 0 and outcome.duplicated == 0
    short = run_sse_cut(rate=40, duration=1.5, cut_at=0.4, retry_ms=700, history=5)
    assert short.lost > 0 and short.lost == short.announced and short.duplicated == 0


def test_resume_answers():
    assert resume_with("5f0c9e21-18", stream="5f0c9e21")[0] == 200
    status, text = resume_with("5f0c9e21-2", published=20, history=5, stream="5f0c9e21")
    assert status == 200 and "event: missed" in text
    status, text = resume_with("not-a-number")
    assert status == 200 and "event: reset" in text and "Last-Event-ID" in text
    status, text = resume_with("0a1b2c3d-18", stream="5f0c9e21")   # an id of the stream's life before a restart
    assert status == 200 and "event: reset\nid: 5f0c9e21-15\n" in text


def test_talk_back_goes_up_in_separate_requests():
    talk = run_talk_back(messages=4, every=0.01)
    assert talk.came_back == 4
    assert talk.stream_bytes_up == talk.stream_request_bytes  # the stream carried nothing up after its request
    assert talk.post_bytes_up > 4 * 100


def test_websocket_handshake_and_accept():
    shake = handshake()
    assert "Upgrade: websocket" in shake.request and shake.response.startswith("HTTP/1.1 101")
    assert shake.header(shake.response, "Sec-WebSocket-Accept") == shake.expected_accept


def test_websocket_feed_and_cut():
    assert run_websocket(rate=10, clients=5, duration=0.5).summary()["missed"] == 0
    outcome = run_websocket_cut(rate=40, duration=1.2, cut_at=0.5)
    assert outcome.reconnects == 1 and outcome.lost == 0 and outcome.duplicated == 0


def test_game_is_full_duplex_on_one_connection():
    duplex = run_game(tick_rate=30, inputs_per_s=20, duration=0.6, latency=0.02)
    assert duplex.connections == 1
    assert duplex.count("up") == 12 and duplex.count("down") >= 10
    assert duplex.crossings > 0
    assert len(duplex_lanes(duplex.table(), seconds=duplex.duration, crossings=duplex.crossings).data) == 2


def test_chat_everyone_hears_everything_in_one_order():
    room = run_chat(members=3, lines=3, every=0.02)
    assert room.orders == 1 and all(len(h) == 9 for h in room.heard.values())


def test_frame_overhead_matches_the_rfc():
    table = frame_overhead(sizes=(10, 500, 70000), count=5)
    assert list(table["WebSocket up (client→server)"]) == [frame_header(s, True) for s in (10, 500, 70000)] == [6, 8, 14]
    assert list(table["WebSocket down"]) == [2, 4, 10]
    assert (table["HTTP request (up)"] > 10 * table["WebSocket up (client→server)"]).all()


def test_round_trips_are_counted():
    trips = run_round_trips(count=20)
    assert len(trips.websocket) == len(trips.floor) == 20
    assert set(trips.summary()["path"]) == {"WebSocket echo", "bare TCP echo (floor)"}
    assert [len(bars.x) for bars in round_trip_histogram(trips.table()).data] == [20, 20]


@pytest.mark.parametrize("policy", ["drop-oldest", "close"])
def test_slow_reader_outbox_stays_bounded(policy):
    run = run_slow_reader(limit=20, policy=policy, duration=0.8)
    assert run.peak <= 20 and run.talker_heard == run.talked  # the talker is not held back
    if policy == "close" and run.peak == 20:
        assert run.close_code == 1013
    if policy == "drop-oldest" and run.peak == 20:
        assert run.dropped > 0 and run.close_code is None


def test_dead_peer_is_found():
    dead = run_dead_peer(ping_interval=0.3, ping_timeout=0.3)  # the live peer survives a pause shorter than 0.3 s
    assert dead.found_after is not None and dead.healthy_still_open


def test_bad_input_close_codes():
    table = misbehave(max_message_size=1024)
    assert list(table["close code"][:2]) == [1007, 1009]
    assert table["other client still served"].all()


def test_served_and_metered_stop_the_server_and_meter_whatever_happens():
    import socket

    from labsupport import lab
    from labsupport.experiments.core import Routes, metered
    from labsupport.patterns import websocket as ws

    ports = []

    async def fail_inside():
        async with metered(Routes("test-served", ws.handlers(ws.Hub()))) as meter:
            ports.extend([meter.port, lab.servers["test-served"].port])
            raise RuntimeError("the experiment broke")

    with pytest.raises(RuntimeError, match="broke"):
        lab.run(fail_inside())
    assert "test-served" not in lab.servers and len(ports) == 2
    for port in ports:  # nothing listens there any more
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
