"""Event feeds: rates, sequence numbers, cursors and waiting for news."""

import asyncio

import pytest

from conftest import scaled
from labsupport import Feed, lab


def run(coro):
    return lab.run(coro, timeout=scaled(20))


async def feed_for(duration, **kwargs):
    feed = Feed(**kwargs).start(duration)
    await feed.finished()
    return feed


def test_fixed_rate_publishes_rate_times_duration_events_in_order():
    feed = run(feed_for(1.0, rate=50))
    assert 48 <= len(feed.events) <= 50
    assert [e.seq for e in feed.events] == list(range(1, len(feed.events) + 1))
    gaps = [b.created - a.created for a, b in zip(feed.events, feed.events[1:])]
    assert all(g >= 0 for g in gaps)
    assert sum(gaps) / len(gaps) == pytest.approx(1 / 50, rel=0.2)


def test_poisson_rate_is_right_on_average():
    feed = run(feed_for(1.0, rate=300, arrivals="poisson", seed=1))
    assert 300 - 5 * 300 ** 0.5 <= len(feed.events) <= 300 + 5 * 300 ** 0.5  # five standard deviations


def test_bursts_publish_several_events_at_once():
    feed = run(feed_for(1.0, rate=40, burst=4))
    assert 36 <= len(feed.events) <= 40 and len(feed.events) % 4 == 0


def test_cursor_returns_only_newer_events():
    async def scenario():
        feed = Feed(rate=1)
        for _ in range(5):
            feed.publish()
        return feed

    feed = run(scenario())
    assert [e.seq for e in feed.after(0)] == [1, 2, 3, 4, 5]
    assert [e.seq for e in feed.after(3)] == [4, 5]
    assert feed.after(5) == [] and feed.after(99) == []
    assert feed.latest.seq == 5
    with pytest.raises(ValueError):
        feed.after(-1)


def test_wait_after_wakes_on_news_and_times_out_without():
    async def scenario():
        feed = Feed(rate=1)
        empty = await feed.wait_after(0, timeout=0.05)
        waiter = asyncio.ensure_future(feed.wait_after(0, timeout=scaled(5)))
        await asyncio.sleep(0.05)
        feed.publish(42.0)
        news = await waiter
        return empty, news

    empty, news = run(scenario())
    assert empty == []
    assert [(e.seq, e.value) for e in news] == [(1, 42.0)]


def test_many_waiters_all_wake():
    async def scenario():
        feed = Feed(rate=1)
        waiters = [asyncio.ensure_future(feed.wait_after(0, timeout=scaled(5))) for _ in range(300)]
        await asyncio.sleep(0.01)
        feed.publish()
        return await asyncio.gather(*waiters)

    assert all(len(news) == 1 for news in run(scenario()))


def test_readers_that_time_out_or_leave_are_forgotten_and_the_rest_wake_in_order():
    async def scenario():
        feed = Feed(rate=1)
        for _ in range(100):  # a quiet stream: every reader's wait ends in its heartbeat timeout
            await asyncio.gather(*(feed.wait_after(0, timeout=0.001) for _ in range(10)))
        left = asyncio.ensure_future(feed.wait_after(0))
        woken = []

        async def reader(n):
            await feed.wait_after(0)
            woken.append(n)

        readers = [asyncio.ensure_future(reader(n)) for n in range(20)]
        await asyncio.sleep(0.01)
        waiting = len(feed._readers)
        left.cancel()  # a client that went away
        await asyncio.sleep(0.01)
        feed.publish()
        await asyncio.gather(*readers)
        return waiting, len(feed._readers), woken

    waiting, after, woken = run(scenario())
    assert waiting == 21 and after == 0
    assert woken == list(range(20))


def test_weather_values_drift_slowly():
    feed = run(feed_for(0.5, rate=100, value="weather", seed=3))
    values = [e.value for e in feed.events]
    assert all(10 < v < 26 for v in values)


@pytest.mark.parametrize("kwargs, message", [
    (dict(rate=0), "above 0"),
    (dict(rate=1e9), "at most"),
    (dict(rate=1, arrivals="sometimes"), "arrivals"),
    (dict(rate=1, value="gold"), "value"),
    (dict(rate=1, burst=0), "burst"),
])
def test_bad_settings_get_a_clear_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Feed(**kwargs)
