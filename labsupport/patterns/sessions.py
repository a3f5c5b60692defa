"""Server-side sessions: state kept in one server's memory, and what a load balancer does to it.

``POST /login`` creates a session in *this* server's memory and sets a ``sid`` cookie. Every
later request must bring the cookie, and the server looks the session up in its own memory:

* ``GET /updates?after=n`` is a long poll that also needs the session (a real app would keep the
  user's subscriptions or a cart there); an unknown session gets ``401``.
* ``/ws`` is a WebSocket whose first message logs in: its session lives on the connection.

Behind a balancer that sends each new connection to the next server, the long poll's next
request lands on a server that never saw the login: the session is unknown there. Either the
balancer must be *sticky* (send a client back to the same server: by a cookie, or by the
client's address, nginx's ``hash $remote_addr``), or the state must live where every server can
read it (a shared store such as Redis, or the broker of chapter 6). A WebSocket does not care
while it stays open: the whole conversation is one connection, on the server that accepted it.
When it breaks, it reconnects through the balancer, maybe to another server, and must log in
and resume again there.

Do not copy the logins: they show where a session lives, not how to authenticate. ``/login``
believes the ``user`` it is sent, with no password, and ``/ws`` believes the ``user`` in the
first message; a real server checks a credential (a password, a token, the session cookie). And
the ``sid`` cookie here lacks ``secure``, because the lab speaks plain HTTP on loopback; in
production it needs ``secure`` so that it only ever travels over HTTPS (RFC 6265 §4.1.2.5).
"""

from __future__ import annotations

import asyncio
import json
import secrets

import tornado.web
import tornado.websocket

from ..feed import Feed


class Sessions(dict):
    """This server's sessions: sid -> the user's name. Nothing is shared with other servers."""


class LoginHandler(tornado.web.RequestHandler):
    def initialize(self, sessions: Sessions, name: str, feed: Feed) -> None:
        self.sessions, self.name = sessions, name

    def post(self) -> None:
        sid = secrets.token_urlsafe(16)
        self.sessions[sid] = self.get_body_argument("user", "anon")[:40]
        self.set_cookie("sid", sid, httponly=True, samesite="Strict")   # production: secure=True as well
        self.write({"server": self.name})


class UpdatesHandler(tornado.web.RequestHandler):
    """A long poll that needs the session: 401 on a server that does not know it."""

    def initialize(self, sessions: Sessions, name: str, feed: Feed) -> None:
        self.sessions, self.name, self.feed = sessions, name, feed

    async def get(self) -> None:
        if self.get_cookie("sid") not in self.sessions:
            self.set_status(401)
            self.write({"error": "unknown session: log in again", "server": self.name})
            return
        after = int(self.get_query_argument("after", "0"))
        news = await self.feed.wait_after(after, timeout=2.0)
        self.write({"events": [e.to_json() for e in news], "server": self.name})


class StreamSocket(tornado.websocket.WebSocketHandler):
    """A WebSocket that logs in with its first message and keeps that session on the connection.

    Do not copy the login: the first message names a user and is believed, with no credential.
    """

    def initialize(self, sessions: Sessions, name: str, feed: Feed) -> None:
        self.sessions, self.name, self.feed = sessions, name, feed
        self.user: str | None = None
        self.task: asyncio.Task | None = None

    def on_message(self, message) -> None:
        if self.user is None:   # the first message is the login; the session lives as long as the socket
            self.user = json.loads(message).get("user", "anon")[:40]
            self.task = asyncio.create_task(self._push())

    async def _push(self) -> None:
        cursor = self.feed.last_seq
        try:
            while True:
                for event in await self.feed.wait_after(cursor):
                    await self.write_message(json.dumps({**event.to_json(), "server": self.name}))
                    cursor = event.seq
        except tornado.websocket.WebSocketClosedError:
            pass

    def on_close(self) -> None:
        if self.task is not None:
            self.task.cancel()


def handlers(name: str, feed: Feed) -> list:
    options = {"sessions": Sessions(), "name": name, "feed": feed}
    return [(r"/login", LoginHandler, options), (r"/updates", UpdatesHandler, options), (r"/ws", StreamSocket, options)]
