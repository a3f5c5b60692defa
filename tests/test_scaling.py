"""Gateways fed by the cluster: the same ids everywhere, resume on any gateway, failover and broker faults lose nothing."""

import asyncio
import json

import aiohttp
import pytest

from labsupport import lab
from labsupport.experiments import scaling, scaling_faults, scaling_stage
from labsupport.patterns.gateway import StreamMirror
from labsupport.patterns.sse_codec import EventStreamParser

from conftest import scaled


@pytest.fixture(scope="module")
def stage():
    yield scaling_stage.stage(3)
    scaling_stage.close_stage()


def test_the_mirror_keeps_stream_order_ignores_repeats_and_notes_gaps():
    mirror = StreamMirror()
    for seq in (1, 2, 2, 3, 5):
        mirror.add(seq, 0.0, 100.0)
    assert [e.seq for e in mirror.events] == [1, 2, 3] and mirror.gaps == [(4, 4)]


def test_every_gateway_numbers_events_with_the_stream_sequence(stage):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            for value in (0.5, 1.5):
                async with session.post(f"{stage.gateways[0].url}/events", json={"value": value}) as response:
                    assert response.status == 202
                    seq = (await response.json())["seq"]
            lives = set()
            for gateway in stage.gateways:   # an id that is none: the reset's id names the stream's life
                lives.add((await _first_event(gateway.url, {"Last-Event-ID": "abc"}))[1].id.rpartition("-")[0])
            [life] = lives   # the same on every gateway
            seen = []
            for gateway in stage.gateways:   # resume just before it: the next event is the one posted, everywhere
                _, event = await _first_event(gateway.url, {"Last-Event-ID": f"{life}-{seq - 1}"})
                seen.append(json.loads(event.data))
            return seq, seen

    seq, seen = lab.run(scenario(), timeout=scaled(30))
    assert seen == [{"seq": seq, "value": 1.5}] * 3


async def _first_event(url: str, headers: dict):
    """The status of ``GET /events`` and the first event on the stream."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/events", headers=headers) as response:
            parser = EventStreamParser()
            async for chunk in response.content.iter_any():
                for event in parser.feed(chunk):
                    return response.status, event


def test_a_resume_point_from_the_future_or_not_a_number_gets_a_reset_never_a_4xx(stage):
    def first(last_id: str):
        status, event = lab.run(_first_event(stage.gateways[1].url, {"Last-Event-ID": last_id}), timeout=scaled(30))
        return status, event.event, event.id

    status, kind, reset_id = first("abc")
    assert (status, kind) == (200, "reset")
    life = reset_id.rpartition("-")[0]
    assert first(f"{life}-999999999")[:2] == (200, "reset")  # after a 2 s wait for it
    assert first("999999999")[:2] == (200, "reset")   # a number alone names no life of the stream


def test_clients_over_two_gateways_see_every_event_once(stage):
    run = scaling.run_fanout(gateways=2, clients=8, rate=20, duration=1.0, kind="mixed")
    s = run.summary()
    assert s["events"] == 20 and s["deliveries"] == 160 and s["lost"] == 0 and s["duplicates"] == 0
    assert run.usage["clients"].tolist() == [4, 4]


def test_a_killed_gateway_loses_no_event_and_duplicates_none(stage):
    run = scaling_faults.run_gateway_failover(gateways=3, clients=9, rate=20, duration=2.0, kill=1, kill_at=0.8)
    s = run.summary()
    assert s["lost"] == 0 and s["duplicates"] == 0 and s["moved_clients"] == 3
    assert s["recovery_max_s"] < scaled(3.0)
    for r in run.recorders:   # the moved clients resumed on another gateway
        if r.visits[0][1] == 1:
            assert len(r.visits) >= 2 and r.visits[-1][1] != 1
    # the stage replaces the dead gateway before the next run
    again = scaling.run_fanout(gateways=3, clients=3, rate=20, duration=0.5)
    assert again.summary()["lost"] == 0


def test_a_follower_then_the_leader_die_and_nothing_acknowledged_is_lost(stage):
    run = scaling_faults.run_broker_faults(clients=4, gateways=2, rate=20)
    s = run.summary()
    assert s["lost"] == 0 and s["duplicates"] == 0 and s["acked_missing_from_stream"] == 0
    assert s["killed_leader"] != s["new_leader"]
    assert s["follower_pause_s"] < scaled(2.0)   # a majority remained: no election
    assert 1.0 < s["leader_pause_s"] < scaled(15.0)   # followers wait an election timeout (4-9 s) first
    assert s["follower_catch_up_s"] < scaled(10) and s["leader_catch_up_s"] < scaled(10)


def test_a_lost_disk_keeps_what_three_replicas_acknowledged_and_loses_a_single_copy(stage):
    disk = scaling_faults.run_disk_loss(events=5)
    assert (disk["kept_three"], disk["kept_one"]) == (5, 0)
    assert len(disk["nodes"]) == 1   # the single copy's home keeps a copy of the three-replica stream too


def test_settings_out_of_range_are_refused_with_the_allowed_range():
    with pytest.raises(ValueError, match="between 1 and"):
        scaling.run_fanout(gateways=0)
    with pytest.raises(ValueError, match="at least 2 gateways"):
        scaling_faults.run_gateway_failover(gateways=1)
    with pytest.raises(ValueError, match="between 1 and"):
        scaling_faults.run_disk_loss(events=0)


def test_the_machine_plan_routes_every_node_to_every_other():
    plan = scaling.machine_plan(["10.0.0.1", "10.0.0.2", "10.0.0.3"])
    assert len(plan) == 3
    for command in plan["command"]:
        assert all(f"nats://10.0.0.{i}:6222" in command for i in (1, 2, 3))


def test_ladders_follow_one_event_and_one_failover_in_time_order(stage):
    run = scaling.run_fanout(gateways=2, clients=4, rate=20, duration=0.5)
    trip = run.ladder()
    assert set(trip["to"]) >= {"cluster", "producer", "gateway 0", "gateway 1"}
    assert (trip["arrived"] >= trip["sent"] - 1e-6).all()
    failover = scaling_faults.run_gateway_failover(gateways=2, clients=4, rate=20, duration=1.5, kill=0, kill_at=0.5)
    steps = failover.failover_ladder()
    assert steps["label"].tolist()[1] == "killed" and steps["to"].tolist()[2] == "gateway 1"
    assert steps["sent"].is_monotonic_increasing


def test_a_message_that_is_not_an_event_keeps_ids_contiguous(stage):
    async def scenario():
        await stage.js.publish(stage.subject.replace(">", "junk"), b"not json")
        return await stage.wait_healthy(scaled(20))

    lab.run(scenario(), timeout=scaled(30))
    run = scaling.run_fanout(gateways=3, clients=3, rate=20, duration=0.5)
    assert run.summary()["lost"] == 0
