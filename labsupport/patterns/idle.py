"""Idle timeouts and heartbeats: what a proxy does to a quiet connection, and how to stay alive.

Between a browser and a server there is usually something that keeps state per connection:
a load balancer, a reverse proxy, a NAT box, a firewall. To bound that state, each drops a
connection that carried no bytes for a while: 60 s is a common default (nginx's
``proxy_read_timeout``, AWS's Application Load Balancer), some mobile NATs use far less. Two
ways to drop it:

* **close** it: both ends get a reset or an end of stream, so each can notice and reconnect;
* **forget** it silently: the middlebox just stops passing packets. Neither end is told. A
  client that waits for data with no read timeout waits for ever: a *half-open* connection.

``IdleCutter`` plays that middlebox on a wire meter: it watches when each relayed connection
last carried a byte and drops (``mode="close"``) or forgets (``mode="silent"``) any that was
quiet for ``timeout`` seconds.

The remedy is a **heartbeat**: a few bytes sent more often than the shortest idle timeout in
the path (an SSE comment line, a WebSocket ping (RFC 6455 §5.5.2), an empty answer to a long
poll). The heartbeat also lets the client detect a dead link: if nothing, not even a heartbeat,
arrived for a few heartbeat intervals, the connection is gone; close it and reconnect.
"""

from __future__ import annotations

import asyncio
import time

from ..wire import WireMeter

MODES = ("close", "silent")


class IdleCutter:
    """Drops (or silently forgets) every connection through ``meter`` quiet for ``timeout`` s."""

    def __init__(self, meter: WireMeter, timeout: float, *, mode: str = "close") -> None:
        if not timeout > 0:
            raise ValueError(f"the idle timeout must be a positive number of seconds, not {timeout!r}.")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}.")
        self.meter, self.timeout, self.mode = meter, timeout, mode
        self.dropped: list[tuple[int, float]] = []   # (connection id, when)
        self._task: asyncio.Task | None = None

    def start(self) -> "IdleCutter":
        self._task = asyncio.create_task(self._watch())
        return self

    async def _watch(self) -> None:
        tick = min(self.timeout / 20, 0.05)   # drop within 5 % of the timeout
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for conn in self.meter.connections:
                if conn.closed is None and not conn.blackholed and now - conn.last_active >= self.timeout:
                    self.dropped.append((conn.id, now))
                    if self.mode == "close":
                        self.meter.cut(conn)
                    else:
                        self.meter.blackhole(conn)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
