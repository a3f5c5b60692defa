"""Chapter 8's sticky sessions: two servers with sessions in memory behind a balancer that is
round-robin or sticky by client address; a long-polling client and a WebSocket client each.

Each client binds its own loopback address (127.0.0.2, 127.0.0.3, ...), as clients on different
machines would have, so a balancer can tell them apart.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pandas as pd

from ..feed import Feed
from ..lab import lab, on_lab_loop
from ..patterns import sessions
from .production_deploys import RoundRobin


class StickyByAddress(RoundRobin):
    """A balancer that sends every connection from one client address to the same backend.

    It keys on the last octet, the part that differs between the lab's clients; nginx's
    ``hash $remote_addr consistent`` keys on the whole address. nginx's ``ip_hash`` keys on the
    first three octets of an IPv4 address only, so 127.0.0.2 to 127.0.0.5 would all land on one
    backend (nginx.org, ngx_http_upstream_module). In production many users behind one NAT share
    an address, and a phone changes address as it moves between networks: a cookie set by the
    balancer follows the user better.
    """

    def backend_for(self, peer: tuple) -> int:
        return self.backends[int(peer[0].rsplit(".", 1)[1]) % len(self.backends)]


async def _long_poller(url: str, address: str, polls: int, log: list) -> None:
    connector = aiohttp.TCPConnector(local_addr=(address, 0), force_close=True)  # one connection per request
    jar = aiohttp.CookieJar(unsafe=True)   # keep cookies from an IP-address host, as a browser does
    async with aiohttp.ClientSession(connector=connector, cookie_jar=jar) as http:
        async with http.post(f"{url}/login", data={"user": address}) as response:
            home = (await response.json())["server"]
        after = 0
        for _ in range(polls):
            async with http.get(f"{url}/updates", params={"after": after}) as response:
                answer = await response.json()
            log.append({"client": address, "pattern": "long polling", "logged in on": home,
                        "answered by": answer["server"], "status": response.status,
                        "events": len(answer.get("events", []))})
            if response.status != 200:
                continue   # a real client would have to log in again
            after = answer["events"][-1]["seq"] if answer["events"] else after


async def _websocket(url: str, address: str, events: int, log: list) -> None:
    connector = aiohttp.TCPConnector(local_addr=(address, 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.ws_connect(url.replace("http://", "ws://") + "/ws") as ws:
            await ws.send_str(json.dumps({"user": address}))   # log in on the connection itself
            home = None
            for _ in range(events):
                message = json.loads((await ws.receive(timeout=5)).data)
                home = home or message["server"]
                log.append({"client": address, "pattern": "websocket", "logged in on": home,
                            "answered by": message["server"], "status": 101, "events": 1})


@on_lab_loop(expected=lambda kw: 3.0)
async def run_sticky(*, clients: int = 4, polls: int = 6, rate: float = 20.0) -> pd.DataFrame:
    """Every client logs in, then long-polls ``polls`` times (or reads ``polls`` WebSocket messages),
    behind a round-robin balancer and behind a sticky one. One row per answer."""
    if not 1 <= clients <= 50 or not 1 <= polls <= 100:
        raise ValueError("clients must be 1 to 50 and polls 1 to 100.")
    feed = Feed(rate)
    servers = [await lab.serve(f"sticky-{name}", sessions.handlers(name, feed), log_function=lambda handler: None)
               for name in ("A", "B")]   # the 401s are the answers shown, not problems
    feed.start()
    log: list = []
    try:
        for kind, balancer_class in (("round robin", RoundRobin), ("sticky by address", StickyByAddress)):
            balancer = await balancer_class([s.port for s in servers]).start()
            rows: list = []
            try:
                for i in range(clients):   # one at a time: clients in lockstep could fall into a lucky rhythm
                    await asyncio.wait_for(_long_poller(balancer.url, f"127.0.0.{2 + i}", polls, rows), 30)
                await asyncio.wait_for(asyncio.gather(
                    *(_websocket(balancer.url, f"127.0.1.{2 + i}", polls, rows) for i in range(clients))), 30)
            finally:
                await balancer.stop()
            log += [{"balancer": kind, **row} for row in rows]
    finally:
        await feed.stop()
        for server in servers:
            await lab.stop_server(server.name)
    return pd.DataFrame(log)


def sticky_summary(log: pd.DataFrame) -> pd.DataFrame:
    """Per balancer and pattern: answers, refusals (unknown session), answers from another server."""
    log = log.assign(refused=log["status"] == 401, elsewhere=log["answered by"] != log["logged in on"])
    return log.groupby(["balancer", "pattern"]).agg(answers=("status", "size"), refused=("refused", "sum"),
                                                    from_another_server=("elsewhere", "sum"))
