"""Chapter 8's authentication checks: a token in the query string and the access log, a
single-use ticket, and a WebSocket's ``Origin`` check against cross-site hijacking.

The "browser" here is aiohttp sending what a browser would: the victim's cookie, and the
``Origin`` of the page that opened the socket. The browser widget's test shows that a real
browser sends ``Origin`` by itself; a page cannot change it.
"""

from __future__ import annotations

import aiohttp
import pandas as pd

from ..lab import lab, on_lab_loop
from ..patterns import auth

SITE = "https://app.example"          # the origin the real application is served from
ATTACKER = "https://evil.example"     # another site the user happens to visit


async def _status(http: aiohttp.ClientSession, method: str, url: str, **kwargs) -> tuple[int, str]:
    async with http.request(method, url, **kwargs) as response:
        return response.status, (await response.text())[:80]


async def _socket(http: aiohttp.ClientSession, url: str, origin: str, cookie: str) -> tuple[str, str]:
    try:
        async with http.ws_connect(url, origin=origin, headers={"Cookie": f"sid={cookie}"}) as ws:
            message = await ws.receive(timeout=5)
            return "101 open", str(message.data)
    except aiohttp.WSServerHandshakeError as refused:
        return f"{refused.status} refused", ""


@on_lab_loop
async def run_auth() -> tuple[pd.DataFrame, list[str]]:
    """Every way in, tried against the real server; returns (attempts, the server's access log)."""
    accounts = auth.Accounts()
    token, cookie = "tok_" + "ada" * 6, "sid_ada_12345"
    accounts.tokens[token], accounts.sessions[cookie] = "ada", "ada"
    log: list[str] = []

    def access_log(handler) -> None:   # what a server or proxy writes down: status, method, full URI
        log.append(f"{handler.get_status()} {handler.request.method} {handler.request.uri}")

    rows = []
    for trusting in (False, True):
        server = await lab.serve("auth", auth.handlers(accounts, allowed_origins={SITE}, trust_any_origin=trusting),
                                 log_function=access_log)
        ws_url = server.url.replace("http://", "ws://") + "/ws"
        try:
            async with aiohttp.ClientSession() as http:
                if not trusting:
                    rows.append(("stream, token in the query string", *await _status(http, "GET", f"{server.url}/events?token={token}")))
                    rows.append(("ticket without Authorization", *await _status(http, "POST", f"{server.url}/ticket")))
                    status, body = await _status(http, "POST", f"{server.url}/ticket", headers={"Authorization": f"Bearer {token}"})
                    ticket = body.split('"ticket": "')[1].split('"')[0]
                    rows.append(("ticket with Authorization: Bearer", status, "a ticket"))
                    rows.append(("stream with the ticket", *await _status(http, "GET", f"{server.url}/events?ticket={ticket}")))
                    rows.append(("stream with the same ticket again", *await _status(http, "GET", f"{server.url}/events?ticket={ticket}")))
                    rows.append(("stream with no credentials", *await _status(http, "GET", f"{server.url}/events")))
                which = "server trusting any origin" if trusting else "server checking Origin"
                for origin in (SITE, ATTACKER):
                    page = "the app's own page" if origin == SITE else "another site's page"
                    status, data = await _socket(http, ws_url, origin, cookie)
                    rows.append((f"WebSocket from {page}, {which}", status, data))
        finally:
            await lab.stop_server("auth")
    table = pd.DataFrame(rows, columns=["attempt", "status", "answer"]).set_index("attempt")
    return table, log
