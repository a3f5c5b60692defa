"""Chapter 1's experiments: push over one held response, what push holds, and pull swept over its
interval (one polling run is ``polling.py``)."""

from __future__ import annotations

import asyncio
import socket
import tracemalloc
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..feed import Feed
from ..lab import on_lab_loop
from ..patterns import push
from ..results import Result, Rows
from .core import Routes, Workload, established, expected_seconds, measure, served

HELD_COUNTS = (0, 100, 200, 400)
MAX_HELD = 2000


@on_lab_loop(expected=expected_seconds)
async def run_push(*, rate: float = 5.0, clients: int = 1, duration: float = 2.0, latency: float = 0.0,
                   arrivals: str = "fixed", value: str = "ticker", seed: int | None = None) -> Result:
    """Clients hold one streaming response each (see ``patterns/push.py``)."""
    workload = Workload(rate, clients, duration, latency, arrivals, value, seed)
    return await measure("push", push.handlers, push.listen, workload, drain=latency + 0.1, ready_first=True)


def _open_streams(port: int, how_many: int) -> list[socket.socket]:
    """Bare blocking sockets, each sending one stream request and reading its headers."""
    opened = []
    for _ in range(how_many):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: lab\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:  # the headers are back: the server now holds this stream
            head += sock.recv(1024)
        opened.append(sock)
    return opened


@dataclass(frozen=True)
class HeldConnections(Rows):
    """The server's Python memory at each count of idle push streams held, and what one costs."""

    rows: pd.DataFrame            # clients, open_connections (as the operating system counts them), python_bytes
    bytes_per_connection: float   # the slope of memory against clients

    def _repr_html_(self) -> str:
        return self.rows.to_html(index=False)


@on_lab_loop(expected=lambda kwargs: 0.5 + 0.003 * max(kwargs.get("counts", HELD_COUNTS)))
async def measure_held_connections(counts: tuple[int, ...] = HELD_COUNTS) -> HeldConnections:
    """Hold ever more idle push streams open and measure what the server keeps for them.

    The clients are bare sockets in a worker thread that send one request and then wait,
    so nearly all the Python memory that grows belongs to the server (Tornado's connection
    objects and the push handler). The kernel's socket buffers come on top and are not
    counted.
    """
    if not counts or min(counts) < 0 or max(counts) > MAX_HELD:
        raise ValueError(f"counts must be client counts between 0 and {MAX_HELD}.")
    feed = Feed(rate=1)  # never started: the streams stay idle, only holding them costs anything
    clients: list[socket.socket] = []
    rows = []
    async with served(Routes("held-connections", push.handlers(feed))) as server:
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            for target in sorted(counts):
                clients += await asyncio.to_thread(_open_streams, server.port, target - len(clients))
                await asyncio.sleep(0.05)  # let the server finish setting up the last streams
                rows.append({"clients": target, "open_connections": established(server.port),
                             "python_bytes": tracemalloc.get_traced_memory()[0] - baseline})
        finally:
            tracemalloc.stop()
            for sock in clients:
                sock.close()
    table = pd.DataFrame(rows)
    slope = np.polyfit(table["clients"], table["python_bytes"], 1)[0] if len(table) > 1 else float("nan")
    return HeldConnections(table, float(slope))
