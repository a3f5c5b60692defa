"""Chapter 7's C10K experiment: hold thousands of idle push connections and see what the server pays.

Push keeps one connection open per client, so a push server's first limit is how many it can
hold at once, not how fast it answers: the "C10K problem" (Dan Kegel, 1999, "The C10K
problem", https://www.kegel.com/c10k.html). ``hold_idle_connections`` opens ``count`` idle
connections to one push pattern's server and measures what holding them costs:

* the server runs in a process of its own (``server_process.py``), so its resident memory
  (RSS, from the operating system) grows only with what it keeps per connection;
* the clients are bare sockets on the lab loop that send the pattern's opening request (a
  stream, a held long poll, a WebSocket upgrade) and then read nothing more: the cheapest
  client there is, so the time to open them is mostly the server's;
* memory is read at a few steps on the way up; its slope is the cost of one more connection.

Every socket is a file to the operating system, and most systems allow a process 1,024 open
files by default (``ulimit -n``). Holding 10,000 needs more on both ends, so this module raises
the soft limit of the kernel's process up to the hard limit (the server process inherits it);
where the hard limit is too low it says what to change instead.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..lab import LabError, on_lab_loop
from ..patterns.registry import named
from ..server_process import ServerProcess
from ..results import Rows

PATTERNS = ("push", "long polling", "sse", "websocket")
MAX_CONNECTIONS = 20_000
OPENING_AT_ONCE = 100    # connections being opened at one time: below the server's listen backlog (128)
SPARE_FILES = 200        # open files a process needs besides its sockets (libraries, pipes, the kernel's own)
OPEN_TIMEOUT = 10.0
QUIET_CPU = 0.005        # the server has settled when it spends less than this (s) per 0.1 s


def opening_request(path: str, *, websocket: bool = False) -> bytes:
    """The request that opens one connection: a plain GET, or a WebSocket upgrade (RFC 6455 4.1)."""
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
    if websocket:
        key = base64.b64encode(os.urandom(16)).decode()
        lines += ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                  "Sec-WebSocket-Version: 13"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def allow_open_files(needed: int) -> int:
    """Let this process (and the processes it starts) open ``needed`` files; returns the new limit.

    Raises the soft ``RLIMIT_NOFILE`` as far as the hard limit allows. Only an administrator can
    raise the hard limit, so when it is too low the error says how, and how many would fit.
    """
    try:
        import resource
    except ImportError:  # Windows: no per-process limit of this kind
        return needed
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise LabError(
            f"This system lets a process open at most {hard} files (sockets count as files), and this run "
            f"needs about {needed}. Choose at most {max(hard - SPARE_FILES, 0)} connections, or raise the hard "
            "limit and restart Jupyter: `ulimit -Hn 20000` in the shell that starts it (as root), "
            "`LimitNOFILE=20000` in a systemd unit, or a `nofile` line in /etc/security/limits.conf.")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return needed


async def open_idle(port: int, path: str, count: int, *, websocket: bool = False,
                    held: bool = False) -> list[asyncio.StreamWriter]:
    """Open ``count`` connections to ``path`` on 127.0.0.1:``port`` and leave them idle.

    Each sends one opening request and waits for the response head (the stream is open, the
    upgrade done), so that no more than OPENING_AT_ONCE wait for the server at a time. A held
    long poll (``held=True``) gets no head, so its connection first makes one ordinary request
    (``GET /``, answered at once with a 404) to know the server has taken it, then sends the
    request the server holds.
    """
    request = opening_request(path, websocket=websocket)
    at_once = asyncio.Semaphore(OPENING_AT_ONCE)
    writers: list[asyncio.StreamWriter] = []

    async def one() -> None:
        async with at_once:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), OPEN_TIMEOUT)
            writers.append(writer)
            writer.write(opening_request("/") if held else request)
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), OPEN_TIMEOUT)
            if held:
                writer.write(request)

    done = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    failures = [d for d in done if isinstance(d, BaseException)]
    if failures:
        close_all(writers)
        error = failures[0]
        raise LabError(f"Opened only {count - len(failures)} of {count} connections: the first failure was "
                       f"{type(error).__name__} {str(error) or '(timed out)'}. Try fewer connections.") from error
    return writers


def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.transport.abort()


async def settled(usage) -> None:
    """Wait until the server has finished setting up what it was sent (its CPU goes quiet)."""
    before = (await usage()).cpu_seconds
    for _ in range(50):
        await asyncio.sleep(0.1)
        now = (await usage()).cpu_seconds
        if now - before < QUIET_CPU:
            return
        before = now


@dataclass
class Holding(Rows):
    """Idle connections held by one pattern's server: memory at each step, and the time to open them."""

    pattern: str
    rows: pd.DataFrame       # connections, rss_bytes, open_seconds (to open that step's new ones)

    @property
    def count(self) -> int:
        return int(self.rows["connections"].max())

    @property
    def bytes_per_connection(self) -> float:
        """The slope of the server's memory against connections held."""
        return float(np.polyfit(self.rows["connections"], self.rows["rss_bytes"], 1)[0])

    @property
    def open_seconds(self) -> float:
        return float(self.rows["open_seconds"].sum())

    def summary(self) -> dict:
        return {"pattern": self.pattern, "connections": self.count,
                "server_memory_mb": round(float(self.rows["rss_bytes"].iloc[-1]) / 1e6, 1),
                "kb_per_connection": round(self.bytes_per_connection / 1000, 2),
                "seconds_to_open": round(self.open_seconds, 2),
                "opened_per_s": round(self.count / self.open_seconds) if self.open_seconds else None}

    def _repr_html_(self) -> str:
        return pd.DataFrame([self.summary()]).to_html(index=False)


def _expected(kwargs: dict) -> float:
    return 3.0 + kwargs.get("count", 10_000) / 1500


@on_lab_loop(expected=_expected)
async def hold_idle_connections(pattern: str = "sse", count: int = 10_000, *, steps: int = 4) -> Holding:
    """Open ``count`` idle connections to ``pattern``'s server in ``steps`` steps; measure each step.

    The server's feed never starts, so the connections stay idle: only holding them costs anything.
    """
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, not {pattern!r}.")
    record = named(pattern)
    if not 1 <= count <= MAX_CONNECTIONS:
        raise ValueError(f"count must be between 1 and {MAX_CONNECTIONS:,}, not {count!r}.")
    if not 1 <= steps <= 20:
        raise ValueError(f"steps must be between 1 and 20, not {steps!r}.")
    allow_open_files(count + SPARE_FILES)  # the server process, started next, inherits it
    options = {"hold": 600.0} if record.holds_requests else {}
    server = await ServerProcess(record, rate=1.0, options=options).start()
    writers: list[asyncio.StreamWriter] = []
    rows = [{"connections": 0, "rss_bytes": (await server.usage()).rss_bytes, "open_seconds": 0.0}]
    try:
        for target in np.linspace(0, count, steps + 1)[1:].round().astype(int):
            started = time.monotonic()
            writers += await open_idle(server.port, record.path, int(target) - len(writers),
                                       websocket=record.upgrade, held=record.holds_requests)
            took = time.monotonic() - started
            await settled(server.usage)
            rows.append({"connections": len(writers), "rss_bytes": (await server.usage()).rss_bytes,
                         "open_seconds": took})
    finally:
        close_all(writers)
        await server.stop()
    return Holding(pattern, pd.DataFrame(rows))

