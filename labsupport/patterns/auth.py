"""Authenticating push connections, and checking where a WebSocket comes from.

A browser's ``EventSource(url, {withCredentials})`` and ``WebSocket(url, protocols)`` take a URL
and little else: neither lets a page set request headers, so the usual ``Authorization: Bearer``
cannot be sent (WHATWG HTML §9.2 for EventSource, the WHATWG WebSockets standard for WebSocket).
What is left:

* **cookies**, which the browser attaches by itself. Convenient, but it attaches them for other
  sites' pages too (when ``SameSite`` allows), so a WebSocket server must check ``Origin``:
  WebSockets are not bound by the same-origin policy or CORS (RFC 6455 §10.2), and without
  the check any site the user visits can open a socket *as the user*: cross-site WebSocket
  hijacking.
* **a token in the query string**, which works everywhere, and ends up wherever URLs are
  written down: the server's and every proxy's access log, the browser's history. The server
  below accepts ``?token=`` only to show that leak: do not copy it.
* **a ticket fetched first**: the page asks for a short-lived, single-use ticket with an
  ordinary ``fetch`` that *can* carry ``Authorization``, then opens the stream with
  ``?ticket=...``. If the URL leaks, the ticket is already spent.

Server side (Tornado): ``POST /ticket`` (needs the bearer token), ``GET /events`` (an event
stream that takes a ticket or a token), ``/ws`` (a WebSocket that authenticates by cookie and
checks ``Origin`` against ``allowed_origins``; with ``trust_any_origin`` it does not, the bug).
"""

from __future__ import annotations

import secrets
import time

import tornado.web
import tornado.websocket

TICKET_LIFETIME = 30.0   # seconds a ticket stays valid, if unused


class Tickets:
    """Single-use tickets that expire: issue one to an authenticated caller, spend it once."""

    def __init__(self, lifetime: float = TICKET_LIFETIME) -> None:
        self.lifetime = lifetime
        self._open: dict[str, tuple[str, float]] = {}   # ticket -> (user, expires)

    def issue(self, user: str) -> str:
        ticket = secrets.token_urlsafe(24)
        self._open[ticket] = (user, time.monotonic() + self.lifetime)
        return ticket

    def spend(self, ticket: str) -> str | None:
        """The user the ticket was issued to, once; None if unknown, spent or expired."""
        user, expires = self._open.pop(ticket, (None, 0.0))
        return user if time.monotonic() < expires else None


class Accounts:
    """The server's view of who is who: bearer tokens and session cookies, each naming a user."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        self.sessions: dict[str, str] = {}
        self.tickets = Tickets()


class TicketHandler(tornado.web.RequestHandler):
    def initialize(self, accounts: Accounts) -> None:
        self.accounts = accounts

    def post(self) -> None:
        scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
        user = self.accounts.tokens.get(token) if scheme == "Bearer" else None
        if user is None:
            self.set_status(401)
            self.set_header("WWW-Authenticate", 'Bearer realm="lab"')  # a 401 names its scheme (RFC 6750 3)
            self.finish({"error": "send Authorization: Bearer <token>"})
            return
        self.finish({"ticket": self.accounts.tickets.issue(user)})


class EventsHandler(tornado.web.RequestHandler):
    """``GET /events?ticket=...`` (or ``?token=...``): a one-event stream for the authenticated user.

    Do not copy the ``?token=`` branch: a long-lived token in a URL is written to access logs in
    clear. It is here to show that; the single-use ticket is the way to copy.
    """

    def initialize(self, accounts: Accounts) -> None:
        self.accounts = accounts

    def get(self) -> None:
        ticket, token = self.get_query_argument("ticket", ""), self.get_query_argument("token", "")
        user = self.accounts.tickets.spend(ticket) if ticket else self.accounts.tokens.get(token)
        if user is None:
            self.set_status(401)
            self.finish("not authenticated")
            return
        self.set_header("Content-Type", "text/event-stream")
        self.finish(f"data: hello {user}\n\n")


class AccountSocket(tornado.websocket.WebSocketHandler):
    """``/ws``: authenticated by the session cookie; sends the user's private data on open."""

    def initialize(self, accounts: Accounts, allowed_origins: set[str], trust_any_origin: bool) -> None:
        self.accounts, self.allowed, self.trust_any = accounts, allowed_origins, trust_any_origin

    def check_origin(self, origin: str) -> bool:
        return self.trust_any or origin in self.allowed

    async def get(self, *args, **kwargs) -> None:
        """Refuse a socket without a session in the handshake, as any page is refused: no 101, so no
        socket is ever opened for it (the other way, accept and then close with 1008, lets every
        anonymous client hold a connection first). 403, not 401: a 401 must name an HTTP
        authentication scheme (RFC 9110 15.5.2), and a session cookie is none."""
        self.user = self.signed_in_user()
        if self.user is None:
            self.set_status(403)
            self.finish({"error": "not signed in: no session cookie"})
            return
        await super().get(*args, **kwargs)

    def signed_in_user(self) -> str | None:
        """The user whose session cookie came with the handshake, if any."""
        return self.accounts.sessions.get(self.get_cookie("sid", ""))

    def open(self) -> None:
        self.write_message(f"private data of {self.user}")


def handlers(accounts: Accounts, *, allowed_origins: set[str], trust_any_origin: bool = False) -> list:
    return [(r"/ticket", TicketHandler, {"accounts": accounts}),
            (r"/events", EventsHandler, {"accounts": accounts}),
            (r"/ws", AccountSocket, {"accounts": accounts, "allowed_origins": allowed_origins,
                                     "trust_any_origin": trust_any_origin})]
