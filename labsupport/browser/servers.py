"""What a lab server needs so that a browser can be its client.

* ``/clock`` answers the server's ``time.monotonic()``: the browser's clock is aligned with it
  (see ``clock.py``).
* A page of JupyterLab at ``http://127.0.0.1:8888`` asking ``http://127.0.0.1:<port>`` directly
  is a *cross-origin* request (another port is another origin, RFC 6454). ``fetch`` and
  ``EventSource`` then hand the answer to the page only if it carries
  ``Access-Control-Allow-Origin`` naming the page's origin (WHATWG Fetch, "CORS check").
  A WebSocket has no such check in the browser: the server must look at ``Origin`` itself, and
  Tornado refuses any origin other than its own host by default (``check_origin``).
  ``browser_facing`` gives a route's handler both: the header for the origins allowed, and an
  ``Origin`` check that accepts them. Through jupyter-server-proxy the page and the server share
  an origin, so none of this is needed there.
* ``/stream`` ends when the run is over (the course's push stream never ends by itself): a
  buffering proxy hands on a response only once it has ended, so only an ending stream shows it.
* ``/chat`` is chapter 5's room, noting the ``Origin``, cookies and any ``Authorization`` each
  client's opening request carried: a browser's ``WebSocket`` (like ``EventSource``) cannot add
  headers of its own, so what it sends is what the browser decides.
* ``/refuse`` answers 503 to count how often an ``EventSource`` asks after a non-200 answer.
"""

from __future__ import annotations

import asyncio
import time

import tornado.web
import tornado.websocket

from ..feed import Feed
from ..patterns import push, websocket


class ClockHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.write({"t": time.monotonic()})


class EndingStream(push.StreamHandler):
    """The push stream of chapter 1, ended cleanly once ``over`` is set."""

    def initialize(self, feed: Feed, over: asyncio.Event, opened: list) -> None:
        super().initialize(feed)
        self.over, self.opened = over, opened

    async def get(self) -> None:
        self.opened.append(time.monotonic())
        ender = asyncio.ensure_future(self._end_when_over())
        try:
            await super().get()
        finally:
            ender.cancel()

    async def _end_when_over(self) -> None:
        await self.over.wait()
        await asyncio.sleep(0.05)  # the handler first writes what was published in the same instant
        while self.waiting is None:
            await asyncio.sleep(0.01)
        self.waiting.cancel()  # the handler returns and Tornado ends the response properly


class RefuseHandler(tornado.web.RequestHandler):
    """Answers 503 every time, counting the requests per ``?route=``."""

    def initialize(self, hits: dict) -> None:
        self.hits = hits

    def get(self) -> None:
        route = self.get_query_argument("route", "")[:20]
        self.hits[route] = self.hits.get(route, 0) + 1
        self.set_status(503)
        self.finish("not now")


class WitnessedChat(websocket.ChatSocket):
    """The chat room of chapter 5, noting what each client's opening request carried."""

    def initialize(self, hub, witnessed: list) -> None:
        super().initialize(hub)
        self.witnessed = witnessed

    def open(self) -> None:
        headers = self.request.headers
        self.witnessed.append({"name": self.get_query_argument("name", "anon")[:40],
                               "origin": headers.get("Origin"), "authorization": "Authorization" in headers,
                               "cookies": sorted(self.request.cookies), "forwarded": "X-Forwarded-Context" in headers})
        super().open()


def browser_facing(handler: type, allowed_origins: set[str]) -> type:
    """``handler`` answering the browser origins in ``allowed_origins`` (a set that may grow)."""
    if issubclass(handler, tornado.websocket.WebSocketHandler):
        def check_origin(self, origin: str) -> bool:
            return origin in allowed_origins or tornado.websocket.WebSocketHandler.check_origin(self, origin)
        return type(handler.__name__, (handler,), {"check_origin": check_origin})

    def set_default_headers(self) -> None:
        handler.set_default_headers(self)
        origin = self.request.headers.get("Origin")
        if origin in allowed_origins:
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Vary", "Origin")

    def options(self, *args) -> None:
        """A CORS preflight (WHATWG Fetch, "CORS-preflight fetch"): say what the real request may do.

        ``Access-Control-Max-Age: 0`` forbids the browser to remember the answer, so every
        request that needs a preflight gets one (without it, a browser keeps it 5 s).
        """
        self.set_header("Access-Control-Allow-Methods", "GET, POST")
        self.set_header("Access-Control-Allow-Headers", self.request.headers.get("Access-Control-Request-Headers", ""))
        self.set_header("Access-Control-Max-Age", "0")
        self.set_status(204)
        self.finish()

    return type(handler.__name__, (handler,), {"set_default_headers": set_default_headers, "options": options})


def open_to_browsers(routes: list, allowed_origins: set[str]) -> list:
    """The same routes, each handler made ``browser_facing``, plus ``/clock``."""
    opened = [(path, browser_facing(handler, allowed_origins), *rest) for path, handler, *rest in routes]
    return opened + [(r"/clock", browser_facing(ClockHandler, allowed_origins))]
