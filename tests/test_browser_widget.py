"""The Python side of the browser client: clock alignment, the servers a browser needs, headless honesty.

The browser's side itself runs in ``test_jupyterlab.py`` (a real JupyterLab in Chromium).
"""

import asyncio
import random
import time

import aiohttp
import pytest

from labsupport import Feed, LabError, lab
from labsupport.browser import align, browser_client
from labsupport.browser.servers import ClockHandler, EndingStream, RefuseHandler, open_to_browsers
from labsupport.browser.widget import NOT_RUN
from labsupport.patterns import polling, websocket

PAGE = "http://127.0.0.1:8888"


def test_alignment_error_is_at_most_half_the_shortest_round_trip():
    rng = random.Random(7)
    for _ in range(200):
        true_offset = rng.uniform(-1e4, 1e4)
        samples = []
        for _ in range(rng.randint(1, 10)):
            t0 = rng.uniform(0, 100)
            up, down = rng.expovariate(1 / 0.01), rng.expovariate(1 / 0.03)  # lopsided on purpose
            samples.append((t0, t0 + up + true_offset, t0 + up + down))
        alignment = align(samples)
        assert abs(alignment.offset - true_offset) <= alignment.uncertainty + 1e-9
        assert alignment.uncertainty == min(t1 - t0 for t0, _, t1 in samples) / 2
        assert alignment.round_trips == len(samples)


def test_alignment_refuses_what_cannot_be_a_clock_exchange():
    with pytest.raises(ValueError, match="no clock exchange"):
        align([])
    with pytest.raises(ValueError, match="ended before it began"):
        align([(2.0, 5.0, 1.0)])


def test_headless_panel_says_the_browser_side_was_not_run_and_starts_nothing():
    servers_before = set(lab.servers)
    panel = browser_client("sse", cut_at=1.0)
    data = panel._repr_mimebundle_()
    assert NOT_RUN in data["text/plain"] and "not run" in data["text/plain"]
    assert "application/vnd.jupyter.widget-view+json" in data
    assert panel.verdicts and all(v.holds is None for v in panel.verdicts)
    assert set(lab.servers) == servers_before


@pytest.mark.parametrize("options", [{"pattern": "carrier-pigeon"}, {"pattern": "sse", "rate": 0},
                                     {"pattern": "poll", "interval": 0}, {"pattern": "sse", "cut_at": 9},
                                     {"pattern": "ws", "routes": ("carrier",)}, {"pattern": "ws", "colour": 1}])
def test_bad_settings_get_a_clear_answer(options):
    with pytest.raises(LabError, match="cannot run with these settings"):
        browser_client(**options)


async def _get(url, origin=None):
    headers = {"Origin": origin} if origin else {}
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers) as response:
            return response.status, response.headers, await response.read()


def test_only_allowed_origins_get_access_control_allow_origin_and_websockets_check_origin():
    allowed = {PAGE}

    async def go():
        feed = Feed(rate=1)
        feed.publish()
        routes = open_to_browsers(polling.handlers(feed) + websocket.handlers(websocket.Hub(feed=feed))[:1], allowed)
        server = await lab.serve("browser-facing", routes)
        ok = await _get(server.url + "/latest", PAGE)
        other = await _get(server.url + "/latest", "http://evil.invalid")
        before = time.monotonic()
        _, _, clock = await _get(server.url + "/clock", PAGE)
        after = time.monotonic()
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(server.url.replace("http", "ws") + "/feed", headers={"Origin": PAGE}):
                pass
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(server.url.replace("http", "ws") + "/feed",
                                         headers={"Origin": "http://evil.invalid"})
        await lab.stop_server("browser-facing")
        return ok, other, clock, before, after, refused.value.status

    ok, other, clock, before, after, refused_status = lab.run(go())
    assert ok[0] == 200 and ok[1]["Access-Control-Allow-Origin"] == PAGE
    assert other[0] == 200 and "Access-Control-Allow-Origin" not in other[1]
    import json
    assert before <= json.loads(clock)["t"] <= after
    assert refused_status == 403


def test_the_stream_ends_cleanly_when_the_run_is_over_and_refusals_are_counted():
    async def go():
        feed, over, opened, hits = Feed(rate=1), asyncio.Event(), [], {}
        server = await lab.serve("ending", [(r"/stream", EndingStream, {"feed": feed, "over": over, "opened": opened}),
                                            (r"/refuse", RefuseHandler, {"hits": hits})])
        async with aiohttp.ClientSession() as session:
            async with session.get(server.url + "/stream") as response:
                await asyncio.sleep(0.1)
                feed.publish()
                over.set()
                body = await asyncio.wait_for(response.read(), 5)  # ends, with the terminating chunk
            async with session.get(server.url + "/refuse?route=direct") as refused:
                status = refused.status
        await lab.stop_server("ending")
        return body, len(opened), status, hits

    body, opened, status, hits = lab.run(go())
    assert body.count(b"\n") == 1 and b'"seq": 1' in body
    assert opened == 1 and status == 503 and hits == {"direct": 1}
