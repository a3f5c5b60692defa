"""The benchmark's plain server: every pattern in the fewest lines Tornado allows, nothing measured inside.

It serves the same work as the course's servers, written for the benchmark alone: no wire
meter, no recorder, no history, no outbox, no checks of bad input. Its figures are what the
pattern costs on this machine, so the course's figures can be read against them.

* ``GET /latest``: the newest event (periodic polling);
* ``GET /events?after=n``: the events after ``n``, held until there is one (long polling);
* ``GET /stream``: one JSON line per event on a held response (push);
* ``GET /sse``: ``text/event-stream``, one flushed chunk per event (Server-Sent Events);
* ``/ws``: one text message per event (WebSockets).

Every event carries its creation time ``t`` (``time.monotonic()``, one clock for every process
on Linux), so the clients in another process measure latency without asking the server.

It talks to the benchmark in lines, as ``labsupport.server_process`` does: it prints
``{"port": p}`` once it listens; ``start RATE DURATION`` starts the feed and answers
``{"started": t}``; ``usage`` answers ``{"rss": bytes, "cpu": s, "traced": bytes}`` (``traced``
is Python's own allocations, with ``--trace`` only). It ends when its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
import tracemalloc

import psutil
import tornado.httpserver
import tornado.iostream
import tornado.netutil
import tornado.web
import tornado.websocket


class Feed:
    """Events at a fixed rate; readers wait for the ones after their cursor."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self._news: asyncio.Future | None = None

    def publish(self) -> None:
        self.events.append({"seq": len(self.events) + 1, "value": 100.0, "t": time.monotonic()})
        if self._news is not None and not self._news.done():
            self._news.set_result(None)

    async def wait_after(self, seq: int, timeout: float | None = None) -> list[dict]:
        if len(self.events) <= seq:
            if self._news is None or self._news.done():
                self._news = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._news), timeout)
            except asyncio.TimeoutError:
                pass
        return self.events[seq:]

    async def run(self, rate: float, duration: float) -> None:
        start, n = time.monotonic(), 0
        while (n := n + 1) / rate <= duration + 1e-9:
            await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
            self.publish()


class Latest(tornado.web.RequestHandler):
    def initialize(self, feed: Feed) -> None:
        self.feed = feed

    def get(self) -> None:
        self.write(self.feed.events[-1] if self.feed.events else {"seq": 0})


class Held(tornado.web.RequestHandler):
    """Shared by the handlers that wait: stop waiting when the client leaves."""

    def initialize(self, feed: Feed) -> None:
        self.feed, self.task = feed, None

    def on_connection_close(self) -> None:
        if self.task is not None:
            self.task.cancel()


class LongPoll(Held):
    async def get(self) -> None:
        self.task = asyncio.current_task()
        after = int(self.get_query_argument("after", len(self.feed.events)))
        try:
            self.write({"events": await self.feed.wait_after(after, timeout=60)})
        except asyncio.CancelledError:
            pass


class Stream(Held):
    """Push (``/stream``) and SSE (``/sse``): the same loop, two framings."""

    def initialize(self, feed: Feed, sse: bool) -> None:
        super().initialize(feed)
        self.sse = sse

    async def get(self) -> None:
        self.task = asyncio.current_task()
        self.set_header("Content-Type", "text/event-stream" if self.sse else "application/x-ndjson")
        cursor = len(self.feed.events)
        try:
            await self.flush()
            while True:
                for event in await self.feed.wait_after(cursor):
                    data = json.dumps(event)
                    self.write(f"id: {event['seq']}\ndata: {data}\n\n" if self.sse else data + "\n")
                    cursor = event["seq"]
                await self.flush()
        except (tornado.iostream.StreamClosedError, asyncio.CancelledError):
            pass


class Socket(tornado.websocket.WebSocketHandler):
    def initialize(self, feed: Feed) -> None:
        self.feed, self.task = feed, None

    def open(self) -> None:
        self.task = asyncio.create_task(self.push(len(self.feed.events)))

    async def push(self, cursor: int) -> None:
        try:
            while True:
                for event in await self.feed.wait_after(cursor):
                    await self.write_message(json.dumps(event))
                    cursor = event["seq"]
        except tornado.websocket.WebSocketClosedError:
            pass

    def on_close(self) -> None:
        self.task.cancel()


def application(feed: Feed) -> tornado.web.Application:
    args = {"feed": feed}
    return tornado.web.Application([
        (r"/latest", Latest, args), (r"/events", LongPoll, args), (r"/stream", Stream, {**args, "sse": False}),
        (r"/sse", Stream, {**args, "sse": True}), (r"/ws", Socket, args)], log_function=lambda handler: None)


def _say(**message) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def serve(trace: bool) -> None:
    if trace:
        tracemalloc.start()
    feed = Feed()
    server = tornado.httpserver.HTTPServer(application(feed))
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1", backlog=1024)
    server.add_sockets(sockets)
    loop, commands = asyncio.get_running_loop(), asyncio.Queue()

    def read_commands() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(commands.put_nowait, line.split())
        loop.call_soon_threadsafe(commands.put_nowait, None)

    threading.Thread(target=read_commands, daemon=True).start()
    _say(port=sockets[0].getsockname()[1])
    running = None
    while (command := await commands.get()) is not None:
        if command[0] == "start":
            running = asyncio.create_task(feed.run(float(command[1]), float(command[2])))
            _say(started=time.monotonic())
        elif command[0] == "usage":
            _say(rss=psutil.Process().memory_info().rss, cpu=time.process_time(),
                 traced=tracemalloc.get_traced_memory()[0] if trace else None)
    del running
    os._exit(0)  # held connections would make a polite shutdown wait; the OS closes them all


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", action="store_true", help="count Python's allocations (tracemalloc)")
    asyncio.run(serve(parser.parse_args().trace))
