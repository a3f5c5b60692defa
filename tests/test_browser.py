"""A real browser against the course's servers: EventSource resumes across a cut and a restart, stops for
good on a non-200 answer, and WebSocket echoes.

Learners' real clients are browsers, so the SSE and WebSocket servers are checked with one:
Debian's Chromium driven by Playwright. Where Chromium is not installed these tests are
skipped with a message (``python3 course.py test`` installs it on Debian when run as root).
"""

import shutil
from pathlib import Path

import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web

from conftest import scaled
from labsupport import Feed, WireMeter, lab
from labsupport.patterns import longpolling, sse, websocket

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)")
# Flags for a sandboxed, offline machine: no background traffic to anywhere but loopback.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

PAGE = """<!doctype html><meta charset="utf-8"><title>lab</title>
<script>
window.seen = [];
window.opened = 0;
window.resets = [];
const source = new EventSource("/events");
source.onopen = () => { window.opened += 1; };
source.onmessage = (e) => { window.seen.push(JSON.parse(e.data).seq); window.lastId = e.lastEventId; };
source.addEventListener("reset", (e) => { window.resets.push(JSON.parse(e.data)); });
</script>"""


class Page(tornado.web.RequestHandler):
    def get(self):
        self.write(PAGE)


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


def publish(feed: Feed, count: int) -> None:
    async def go():
        for _ in range(count):
            feed.publish()

    lab.run(go())


def page_that_saw_five(browser, url: str, feed: Feed):
    """A page whose EventSource opened once and received events 1 to 5."""
    page = browser.new_page()
    page.goto(url + "/")
    page.wait_for_function("window.opened === 1", timeout=scaled(10) * 1000)
    publish(feed, 5)
    page.wait_for_function("window.seen.length === 5", timeout=scaled(10) * 1000)
    return page


def test_event_source_resumes_after_a_cut_with_nothing_lost_or_repeated(browser):
    async def setup():
        feed = Feed(rate=1)
        server = await lab.serve("browser-sse", sse.handlers(feed, retry=200) + [(r"/", Page)])
        meter = await WireMeter(server.port, capture=4096).start()
        lab.on_shutdown("browser-sse-meter", meter.stop)
        return feed, meter

    feed, meter = lab.run(setup())
    page = page_that_saw_five(browser, meter.url, feed)

    assert lab.run(meter.cut_all()) >= 1  # the network blips mid-stream
    publish(feed, 5)  # these happen while the browser is disconnected
    page.wait_for_function("window.opened === 2", timeout=scaled(10) * 1000)
    publish(feed, 5)
    page.wait_for_function("window.seen.length >= 15", timeout=scaled(10) * 1000)
    page.wait_for_timeout(200)

    assert page.evaluate("window.seen") == list(range(1, 16))
    sent = b"".join(bytes(c.head_up) for c in meter.connections).lower()
    assert sent.count(b"get /events ") == 2  # one stream, one reconnection
    assert f"last-event-id: {feed.stream}-5\r\n".encode() in sent  # the browser said where it stopped
    lab.run(meter.stop())


def test_browser_websocket_talks_to_the_course_server(browser):
    async def setup():
        hub = websocket.Hub()
        server = await lab.serve("browser-ws", websocket.handlers(hub) + [(r"/", Page)])
        return server

    server = lab.run(setup())
    page = browser.new_page()
    page.goto(server.url + "/")
    echoed = page.evaluate("""async (url) => {
        const socket = new WebSocket(url);
        await new Promise((ok, fail) => { socket.onopen = ok; socket.onerror = fail; });
        const answer = new Promise((ok) => { socket.onmessage = (e) => ok(e.data); });
        socket.send("hello from a browser");
        const data = await answer;
        socket.close();
        return data;
    }""", server.url.replace("http://", "ws://") + "/echo")
    assert "hello from a browser" in echoed


class Deploying(tornado.web.RequestHandler):
    """What a proxy answers while the app behind it restarts."""

    def get(self):
        self.set_status(503)
        self.write("the service is being deployed")


def _serve_on(port: int, handlers: list):
    """A second server on the port the first one had: the same URL, as after a restart."""
    async def go():
        server = tornado.httpserver.HTTPServer(tornado.web.Application(handlers))
        server.add_sockets(tornado.netutil.bind_sockets(port, "127.0.0.1"))

        async def stop():
            server.stop()
            await server.close_all_connections()
        lab.on_shutdown(f"browser-restarted-{port}", stop)
        return stop
    return lab.run(go())


def _opened_then_saw_five(browser):
    feed = Feed(rate=1)
    server = lab.run(lab.serve("browser-restart", sse.handlers(feed, retry=200) + [(r"/", Page)]))
    page = page_that_saw_five(browser, server.url, feed)
    lab.run(lab.stop_server(server.name))  # the server goes away
    return page, server.port


@pytest.mark.parametrize("published", [3, 8], ids=["new server behind", "new server ahead"])
def test_event_source_keeps_receiving_after_a_restart_that_reset_the_ids(browser, published):
    """The new server numbers its events from 1 again, and has published fewer or more than the browser's
    5: either way the browser's Last-Event-ID names the old life. A 4xx here would end the EventSource
    for good; the server answers 200 with a reset event and the new life's stream from its start."""
    page, port = _opened_then_saw_five(browser)
    old_id = page.evaluate("window.lastId")
    feed = Feed(rate=1)
    publish(feed, published)
    stop = _serve_on(port, sse.handlers(feed, retry=200) + [(r"/", Page)])
    try:
        page.wait_for_function("window.opened === 2", timeout=scaled(10) * 1000)
        publish(feed, 2)  # and goes on
        page.wait_for_function(f"window.seen.length >= {5 + published + 2}", timeout=scaled(10) * 1000)
        assert page.evaluate("window.seen") == [1, 2, 3, 4, 5, *range(1, published + 3)]
        resets = page.evaluate("window.resets")
        assert len(resets) == 1 and old_id in resets[0]["reason"] and old_id.endswith("-5")
        assert page.evaluate("source.readyState") == 1  # OPEN
    finally:
        lab.run(stop())


def test_event_source_stops_for_good_on_a_503_but_retries_after_a_network_error(browser):
    """HTML standard: a network error reconnects; any status but 200 fails the connection for good."""
    page, port = _opened_then_saw_five(browser)
    page.wait_for_timeout(600)  # the server is down: connection refused, the browser keeps retrying
    assert page.evaluate("source.readyState") == 0  # CONNECTING: still trying
    asked = []

    class Counting(Deploying):
        def get(self):
            asked.append(1)
            super().get()

    stop = _serve_on(port, [(r"/events", Counting)])
    try:
        page.wait_for_function("source.readyState === 2", timeout=scaled(10) * 1000)  # CLOSED
        page.wait_for_timeout(1000)  # five retry delays
        assert len(asked) == 1  # it asked once, got 503, and never asked again
    finally:
        lab.run(stop())


CLIENT_JS = Path(__file__).resolve().parents[1] / "labsupport" / "browser" / "client.js"
LONG_POLL_PAGE = """<!doctype html><meta charset="utf-8"><title>lab</title>
<script type="module">
import { RouteClient } from "/client.js";
window.client = new RouteClient("direct", { pattern: "longpoll", meter_port: Number(location.port) }, () => {});
window.client.longPoll();
</script>"""


class LongPollPage(tornado.web.RequestHandler):
    def get(self):
        self.write(LONG_POLL_PAGE)


class ClientScript(tornado.web.RequestHandler):
    def get(self):
        self.set_header("Content-Type", "text/javascript")
        self.write(CLIENT_JS.read_text())


def _long_poll_routes(feed: Feed) -> list:
    return longpolling.handlers(feed, hold=5.0) + [(r"/", LongPollPage), (r"/client.js", ClientScript)]


@pytest.mark.parametrize("head_start", [0, 8], ids=["new server behind", "new server ahead"])
def test_the_browsers_long_poll_loop_keeps_receiving_from_a_server_that_lost_its_feed(browser, head_start):
    """The course's browser client (client.js) against a server that crashed and numbers its events
    from 1 again, behind or ahead of the browser's cursor 5: it is told to reset and gets them all."""
    feed = Feed(rate=1)
    server = lab.run(lab.serve("browser-long-poll", _long_poll_routes(feed)))
    page = browser.new_page()
    try:
        page.goto(server.url + "/")
        page.wait_for_function("window.client && window.client.requests.length === 0", timeout=scaled(10) * 1000)
        publish(feed, 5)
        page.wait_for_function("window.client.seen.length === 5", timeout=scaled(10) * 1000)
        lab.run(lab.stop_server(server.name))          # the crash: the feed is gone
        fresh = Feed(rate=1)
        publish(fresh, head_start)
        stop = _serve_on(server.port, _long_poll_routes(fresh))
        try:
            publish(fresh, 2)
            want = 5 + head_start + 2
            page.wait_for_function(f"window.client.seen.length >= {want}", timeout=scaled(10) * 1000)
            seen = [seq for seq, _ in page.evaluate("window.client.seen")]
            assert seen == [1, 2, 3, 4, 5, *range(1, head_start + 3)]
        finally:
            lab.run(stop())
    finally:
        page.evaluate("window.client.stopped = true")
        page.close()
