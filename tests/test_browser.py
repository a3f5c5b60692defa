"""A real browser against the course's servers: EventSource resumes across a cut, WebSocket echoes.

Learners' real clients are browsers, so the SSE and WebSocket servers are checked with one:
Debian's Chromium driven by Playwright. Where Chromium is not installed these tests are
skipped with a message (``python3 course.py test`` installs it on Debian when run as root).
"""

import shutil

import pytest
import tornado.web

from conftest import scaled
from labsupport import Feed, WireMeter, lab
from labsupport.patterns import sse, websocket

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)")
# Flags for a sandboxed, offline machine: no background traffic to anywhere but loopback.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

PAGE = """<!doctype html><meta charset="utf-8"><title>lab</title>
<script>
window.seen = [];
window.opened = 0;
const source = new EventSource("/events");
source.onopen = () => { window.opened += 1; };
source.onmessage = (e) => { window.seen.push(Number(e.lastEventId)); };
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


def test_event_source_resumes_after_a_cut_with_nothing_lost_or_repeated(browser):
    async def setup():
        feed = Feed(rate=1)
        server = await lab.serve("browser-sse", sse.handlers(feed, retry=200) + [(r"/", Page)])
        meter = await WireMeter(server.port, capture=4096).start()
        lab.on_shutdown("browser-sse-meter", meter.stop)
        return feed, meter

    feed, meter = lab.run(setup())
    page = browser.new_page()
    page.goto(meter.url + "/")
    page.wait_for_function("window.opened === 1", timeout=scaled(10) * 1000)
    publish(feed, 5)
    page.wait_for_function("window.seen.length === 5", timeout=scaled(10) * 1000)

    assert lab.run(meter.cut_all()) >= 1  # the network blips mid-stream
    publish(feed, 5)  # these happen while the browser is disconnected
    page.wait_for_function("window.opened === 2", timeout=scaled(10) * 1000)
    publish(feed, 5)
    page.wait_for_function("window.seen.length >= 15", timeout=scaled(10) * 1000)
    page.wait_for_timeout(200)

    assert page.evaluate("window.seen") == list(range(1, 16))
    sent = b"".join(bytes(c.head_up) for c in meter.connections).lower()
    assert sent.count(b"get /events ") == 2  # one stream, one reconnection
    assert b"last-event-id: 5\r\n" in sent  # the browser said where it stopped
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
