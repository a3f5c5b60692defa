"""Insert the change-the-code exercise cells into a notebook, after its last exercise cell, before the summary."""
import sys, uuid, nbformat

def md(text): return nbformat.v4.new_markdown_cell(text, id=uuid.uuid4().hex[:8])
def code(text): return nbformat.v4.new_code_cell(text, id=uuid.uuid4().hex[:8])

CELLS = {
"01": [
md("""**3.** *Change the code.* `MyStream` below is the push handler of this chapter with one change:
it flushes only when the newest event's number is a multiple of 10. Run the cell and read what the
check measured. Then change the handler so that every event leaves the server as soon as it
exists, and run it again."""),
code('''import asyncio
import json

import tornado.iostream

from labsupport.exercises.ch01 import q3, q4
from labsupport.patterns import push


class MyStream(push.StreamHandler):
    async def get(self):
        self.set_header("Content-Type", "application/x-ndjson")
        cursor = self.feed.last_seq
        try:
            await self.flush()
            while True:
                for event in await self.feed.wait_after(cursor):
                    self.write(json.dumps(event.to_json()) + "\\n")
                    cursor = event.seq
                if cursor % 10 == 0:  # change this
                    await self.flush()
        except (tornado.iostream.StreamClosedError, asyncio.CancelledError):
            pass


q3.check(MyStream)'''),
code("# q3.hint()\n# q3.solution()"),
md("""**4.** *Change the code.* `my_listen` is a push client that reads the whole response and then
records the events in it. Run it against the real server and see what it records. Then change it so
it records each event as it arrives."""),
code('''import aiohttp


async def my_listen(base_url, recorder):
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base_url}/stream") as response:
            recorder.ready.set()
            body = await response.text()  # change this
            for line in body.splitlines():
                recorder.saw(json.loads(line)["seq"])


q4.check(my_listen)'''),
code("# q4.hint()\n# q4.solution()"),
],
"02": [
md("""**5.** *Change the code.* `my_poll` polls every 0.1 s for news that comes once a second, so most
answers carry nothing new, yet each one carries the whole body again. Change it so an unchanged
answer comes back as `304 Not Modified`. The check counts the 304s the real server sent."""),
code('''import asyncio
import json
import time

import aiohttp

from labsupport.exercises.ch02 import q5, q6


async def my_poll(base_url, recorder, interval=0.1):
    async with aiohttp.ClientSession() as session:
        held, etag = 0, None
        recorder.ready.set()
        while True:
            headers = {}  # change this
            sent = time.monotonic()
            async with session.get(f"{base_url}/latest", headers=headers) as response:
                body = await response.read()
                new = 0
                if response.status == 200:
                    event = json.loads(body)
                    etag = response.headers.get("ETag")
                    if event["seq"] > held:
                        held, new = event["seq"], 1
                        recorder.saw(held)
                recorder.request(sent, response.status, new)
            await asyncio.sleep(interval)


q5.check(my_poll)'''),
code("# q5.hint()\n# q5.solution()"),
md("""**6.** *Change the code.* This poller opens its session inside the loop. The check counts the
TCP connections the wire meter saw. Change it so that every poll reuses one connection."""),
code('''async def my_poll(base_url, recorder, interval=0.1):
    recorder.ready.set()
    while True:
        async with aiohttp.ClientSession() as session:  # change this
            sent = time.monotonic()
            async with session.get(f"{base_url}/latest") as response:
                event = json.loads(await response.read())
                recorder.saw(event["seq"])
                recorder.request(sent, response.status, int(response.status == 200))
        await asyncio.sleep(interval)


q6.check(my_poll)'''),
code("# q6.hint()\n# q6.solution()"),
],
"03": [
md("""**5.** *Change the code.* `my_long_poll` asks for news without saying what it already has. The
check runs it against the chapter's server on a link with a 40 ms round trip, at 50 events a
second, and counts the events that never reached it. Change it so that nothing falls into the gap
between an answer and the next request."""),
code('''import asyncio
import json
import time

import aiohttp

from labsupport.exercises.ch03 import q5, q6


async def my_long_poll(base_url, recorder):
    async with aiohttp.ClientSession() as session:
        cursor = 0
        while True:
            params = {}  # change this
            sent = time.monotonic()
            async with session.get(f"{base_url}/events", params=params) as response:
                answer = await response.json()
            for event in answer["events"]:
                recorder.saw(event["seq"])
                cursor = event["seq"]
            recorder.request(sent, response.status, len(answer["events"]))


q5.check(my_long_poll)'''),
code("# q5.hint()\n# q5.solution()"),
md("""**6.** *Change the code.* Forty long-polling clients wait on one server; the server restarts and
is down for 0.6 s. Each client waits `my_retry_delay(failures)` seconds after each failure in a row.
The check counts how many clients reach the new server within the same 100 ms. Change the delay so
they do not all come back at once (and every client still catches up)."""),
code('''import random


def my_retry_delay(failures):
    return min(0.05 * 2 ** (failures - 1), 2.0)  # change this


q6.check(my_retry_delay)'''),
code("# q6.hint()\n# q6.solution()"),
],
"04": [
md("""**4.** *Change the code.* `my_listen` is an SSE client that reconnects 200 ms after its stream
breaks. The check cuts its connection 0.6 s into a 50-events-a-second feed and counts the events
it never saw. Change it so that the cut costs a pause, not events."""),
code('''import asyncio
import json

import aiohttp

from labsupport.exercises.ch04 import q4, q5
from labsupport.patterns import sse
from labsupport.patterns.sse_codec import EventStreamParser


async def my_listen(base_url, recorder):
    last_id = ""
    async with aiohttp.ClientSession() as session:
        while True:
            headers = {"Accept": "text/event-stream"}  # change this
            try:
                async with session.get(f"{base_url}/events", headers=headers) as response:
                    recorder.ready.set()
                    parser = EventStreamParser()
                    async for chunk in response.content.iter_any():
                        for event in parser.feed(chunk):
                            if event.event == "message":
                                recorder.saw(json.loads(event.data)["seq"])
                        last_id = parser.last_event_id
            except aiohttp.ClientError:
                pass  # the stream broke: wait, then reconnect
            await asyncio.sleep(0.2)


q4.check(my_listen)'''),
code("# q4.hint()\n# q4.solution()"),
md("""**5.** *Change the code.* The server's `retry:` line tells each client how long to wait before
reconnecting. Forty clients follow `MyEvents`; the server restarts under them. The check counts how
many reconnect within the same 100 ms. Change `MyEvents` so the reconnects spread out."""),
code('''import random


class MyEvents(sse.EventStreamHandler):
    def initialize(self, feed, **options):
        super().initialize(feed, **options)
        self.retry = 1000  # change this (milliseconds)


q5.check(MyEvents)'''),
code("# q5.hint()\n# q5.solution()"),
],
"05": [
md("""**4.** *Change the code.* The client below offers `permessage-deflate` (RFC 7692), as browsers do.
`MyFeed` is the chapter's `/feed` socket. The check measures the bytes per frame on the wire. Change
`MyFeed` so the server accepts the offer and the frames shrink."""),
code('''import asyncio
import json
import time

import aiohttp

from labsupport.exercises.ch05 import q4, q5
from labsupport.patterns import websocket as ws


class MyFeed(ws.FeedSocket):
    def get_compression_options(self):
        return None  # change this


q4.check(MyFeed)'''),
code("# q4.hint()\n# q4.solution()"),
md("""**5.** *Change the code.* A game client should send an input every 20 ms while the server sends
the game state 10 times a second. `my_play` sends an input, then waits for the next state. The check
counts the inputs the server received per second. Change it so inputs go up on their own clock."""),
code('''async def my_play(base_url, recorder):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(ws.ws_url(base_url, "/game")) as conn:
            recorder.ready.set()
            n = 0
            while True:
                n += 1
                await conn.send_str(json.dumps({"n": n, "t": time.monotonic()}))
                state = json.loads((await conn.receive()).data)  # change this
                await asyncio.sleep(0.02)


q5.check(my_play)'''),
code("# q5.hint()\n# q5.solution()"),
],
"06": [
md("""**Q5.** *Change the code.* Sending one email takes 0.5 s. Three workers share the durable consumer
configured below; two jobs arrive. The check runs them on the real broker and counts the emails
each customer got. Change the configuration so every customer gets one email."""),
code('''import asyncio

from nats.js.api import AckPolicy, ConsumerConfig

from labsupport.exercises.ch06 import q5, q6

my_config = ConsumerConfig(
    durable_name="mailer",
    ack_policy=AckPolicy.EXPLICIT,
    ack_wait=0.3,  # change this (seconds)
    max_deliver=-1,
)

q5.check(my_config)'''),
code("# q5.hint()\n# q5.solution()"),
md("""**Q6.** *Change the code.* `my_worker` handles one job: it gets the message and a `send_email`
coroutine. The check runs it on the real broker with four jobs, and the worker crashes in the
middle of two emails (a fresh worker takes its place). It counts the emails that never went out.
Change the worker so no email is lost."""),
code('''async def my_worker(message, send_email):
    await message.ack()  # change this
    await send_email(message)


q6.check(my_worker)'''),
code("# q6.hint()\n# q6.solution()"),
],
"09": [
md("""**Q4.** *Change the code.* `my_place_order` publishes an order and publishes it again whenever no
ack comes back. The check places six orders on a real stream; two acks get lost on their way back
(the orders *were* stored) and one publish gets lost on its way there. It counts what the stream
stored. Change the producer so every order is stored exactly once."""),
code('''import asyncio
import json

import aiohttp
import nats.errors

from labsupport.exercises.ch09 import q4, q5
from labsupport.patterns import websocket as ws


async def my_place_order(publish, order_id, body):
    while True:
        try:
            return await publish(body, headers={})  # change this
        except nats.errors.TimeoutError:
            await asyncio.sleep(0.05)  # no ack: publish again


q4.check(my_place_order)'''),
code("# q4.hint()\n# q4.solution()"),
md("""**Q5.** *Change the code.* `my_follow` reads the stream over a WebSocket from one gateway and,
when it breaks, moves to the next with `?after=` its cursor. The check connects it to gateway 0 of
two, on a stream that is already running, and kills gateway 0 under it. It counts events lost and
events received twice. Change the cursor so the failover loses nothing and repeats nothing."""),
code('''async def my_follow(gateways, recorder):
    cursor, received, at = None, 0, 0
    async with aiohttp.ClientSession() as session:
        while True:
            url = ws.ws_url(gateways[at], "/feed" + ("" if cursor is None else f"?after={cursor}"))
            try:
                async with session.ws_connect(url) as socket:
                    recorder.ready.set()
                    async for message in socket:
                        seq = json.loads(message.data)["seq"]
                        received += 1
                        cursor = received  # change this
                        recorder.saw(seq)
            except aiohttp.ClientError:
                pass  # the gateway is gone: try the next one
            at = (at + 1) % len(gateways)
            await asyncio.sleep(0.2)


q5.check(my_follow)'''),
code("# q5.hint()\n# q5.solution()"),
],
}

# Chapters without a summary: the heading the new cells go before (after the chapter's exercises).
ANCHORS = {"06": "## Where RabbitMQ and Kafka fit"}

def main(path, key):
    nb = nbformat.read(path, as_version=4)
    cells = nb.cells
    anchor = ANCHORS.get(key, "## Summary")
    summary = next(i for i, c in enumerate(cells) if c.cell_type == "markdown" and c.source.lstrip().startswith(anchor))
    nb.cells = cells[:summary] + CELLS[key] + cells[summary:]
    nbformat.write(nb, path)

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
