"""A pattern's server in a process of its own, so that its CPU time and memory can be measured alone.

In the lab, servers, wire meters and clients all share one Python thread, so the CPU time of
that thread mixes everything. To know what the *server* spends, the capstone chapter runs the
pattern's server here instead: a child Python process with its own event feed and its own
Tornado server on 127.0.0.1, port 0. The clients stay in the lab and reach it through a wire
meter as usual; the parent reads the child's CPU time and resident memory (RSS) from the
operating system with ``psutil``. Nothing inside the child is instrumented, so measuring costs
it nothing.

The two processes talk in lines. The child writes JSON to stdout, the parent writes commands to
the child's stdin:

* child: ``{"port": 41234}`` once it listens;
* parent: ``start 2.0``, child: ``{"started": t}``: the feed runs for 2 s from ``t``;
* parent: ``usage``, child: ``{"cpu": seconds, "rss": bytes}``: its CPU time so far and its
  resident memory now;
* parent: ``report``, child: ``{"events": [[seq, created, value], ...]}``.

The CPU time is the operating system's per-process CPU clock (``time.process_time()``, all
threads, user and system), read in the child because there it ticks in nanoseconds; read
from outside, Linux reports it in 10 ms ticks, too coarse for a two-second run.

Event times are ``time.monotonic()``, which on Linux (and macOS, Windows) is one system-wide
clock, so the parent compares them with the times its clients saw the events.

The child ends when its stdin closes. The parent closes it to stop the child; and if the
kernel dies in any way, even killed, the operating system closes it too, so no server can
outlive the kernel that started it. The child runs in its own session, so interrupting a cell
does not interrupt it. The lab stops every child it started on ``lab.shutdown()``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Awaitable, Callable
from pathlib import Path

import psutil

from .feed import Event, Feed
from .lab import LabError, lab

START_TIMEOUT = 30.0   # Python, Tornado and the course package load in about a second; a busy machine is slower
ANSWER_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
LINE_LIMIT = 2 ** 26   # the event report is one JSON line


@dataclass(frozen=True)
class Usage:
    """What the operating system says the server process has used so far."""

    cpu_seconds: float   # user + system CPU time of all its threads since the process started
    rss_bytes: int       # resident memory now


class ChildServer:
    """A server in a child process that answers the parent line by line (see above); ``start()`` it on the
    lab loop, then measure it. What the child runs is its ``command()``: a subclass says."""

    def __init__(self, label: str) -> None:
        self.label = label   # what the server is called in messages: "sse", "gateway"
        self.process: asyncio.subprocess.Process | None = None
        self.port: int | None = None
        self._key = f"server-process:{id(self)}"
        self._errors = tempfile.TemporaryFile()

    @property
    def pid(self) -> int:
        return self.process.pid

    def command(self) -> list[str]:
        raise NotImplementedError

    async def usage(self) -> Usage:
        """The child's CPU time so far and its resident memory now."""
        answer = await self._ask("usage")
        return Usage(answer["cpu"], answer["rss"])

    async def start(self) -> "ChildServer":
        """Start the child and wait until its server listens."""
        self.process = await asyncio.create_subprocess_exec(
            *self.command(), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=self._errors,
            start_new_session=True, limit=LINE_LIMIT, cwd=Path(__file__).resolve().parent.parent)
        lab.on_shutdown(self._key, self.stop)
        try:
            self.port = (await self._answer(START_TIMEOUT))["port"]
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        """Close the child's stdin (it ends by itself), and make sure it is gone."""
        lab.forget(self._key)
        if self.process is None or self.process.returncode is not None:
            return
        self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)
        except asyncio.TimeoutError:
            self.process.kill()
            await self.process.wait()

    async def _ask(self, command: str) -> dict:
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()
        return await self._answer(ANSWER_TIMEOUT)

    async def _answer(self, timeout: float) -> dict:
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        except asyncio.TimeoutError:
            raise LabError(f"The {self.label} server process did not answer within {timeout:.0f} s. "
                           "If the machine is very busy, run the cell again.") from None
        if not line:
            await self.process.wait()
            self._errors.seek(0)
            detail = self._errors.read().decode(errors="replace").strip()[-800:]
            raise LabError(f"The {self.label} server process ended (exit status {self.process.returncode}). "
                           f"What it said:\n{detail or '(nothing)'}")
        return json.loads(line)

    def __repr__(self) -> str:
        state = f"pid {self.process.pid}, port {self.port}" if self.process else "not started"
        return f"<{type(self).__name__} {self.label!r} {state}>"


class ServerProcess(ChildServer):
    """One pattern's server on its own feed in a child process. ``pattern`` is its record
    (``patterns/pattern.py``): the child imports the pattern's module by name and serves its routes."""

    def __init__(self, pattern, *, rate: float, arrivals: str = "fixed", seed: int | None = None,
                 options: dict | None = None) -> None:
        Feed(rate, arrivals=arrivals)  # the same checks the feed in the child will make, with the same messages
        super().__init__(pattern.name)
        self.module, self.rate, self.arrivals, self.seed = pattern.module, rate, arrivals, seed
        self.options = options or {}
        self._feed_ends = 0.0

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "labsupport.server_process", self.module, "--rate", str(self.rate),
                   "--arrivals", self.arrivals, "--options", json.dumps(self.options)]
        if self.seed is not None:
            command += ["--seed", str(self.seed)]
        return command

    async def start_feed(self, duration: float) -> float:
        """Start the child's feed for ``duration`` seconds; returns when it started (monotonic)."""
        started = (await self._ask(f"start {float(duration)}"))["started"]
        self._feed_ends = started + duration
        return started

    async def finished(self) -> None:
        """Wait until the child's feed has run its duration."""
        await asyncio.sleep(max(0.0, self._feed_ends - time.monotonic()))

    async def events(self) -> list[Event]:
        """Every event the child's feed has created, with its creation time."""
        return [Event(seq, created, value) for seq, created, value in (await self._ask("report"))["events"]]


# -- the child's side ------------------------------------------------------------------------

def _say(**message) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _read_commands(loop: asyncio.AbstractEventLoop, commands: asyncio.Queue) -> None:
    """Pass each stdin line to the loop; ``None`` at end of file (the parent stopped us, or died)."""
    for line in sys.stdin:
        loop.call_soon_threadsafe(commands.put_nowait, line.strip())
    loop.call_soon_threadsafe(commands.put_nowait, None)


async def serve_commands(routes: list, answer: Callable[[str, list[str]], Awaitable[dict]]) -> None:
    """The child's loop: serve ``routes`` on loopback, say the port, then answer the parent line by
    line (``usage`` here, any other word through ``answer``) until stdin closes."""
    import tornado.web

    from .serving import listen

    listener = listen(tornado.web.Application(routes))  # the lab's servers' backlog: room for a reconnect storm
    commands: asyncio.Queue = asyncio.Queue()
    threading.Thread(target=_read_commands, args=(asyncio.get_running_loop(), commands), daemon=True).start()
    # Everything imported so far (the whole labsupport package) stays as it is: frozen, the
    # collector's full walks skip it and cover only what serving creates (see collector.py).
    gc.freeze()
    _say(port=listener.port)
    while (command := await commands.get()) is not None:
        word, *rest = command.split()
        if word == "usage":
            _say(cpu=time.process_time(), rss=psutil.Process().memory_info().rss)
        else:
            _say(**await answer(word, rest))
    # Open streams and held requests would make a polite shutdown wait; the process is done,
    # so end it here and let the operating system close every socket at once.
    os._exit(0)


async def serve(module: str, rate: float, arrivals: str, seed: int | None, options: dict) -> None:
    """Serve the pattern that ``module`` defines (its ``PATTERN`` record) on a feed of its own."""
    feed = Feed(rate, arrivals=arrivals, seed=seed)
    pattern = importlib.import_module(module).PATTERN

    async def answer(word: str, rest: list[str]) -> dict:
        if word == "start":
            feed.start(float(rest[0]))
            await asyncio.sleep(0)  # the feed's task notes its start time at once
            return {"started": feed.started}
        return {"events": [[e.seq, e.created, e.value] for e in feed.events]}  # "report"

    await serve_commands(pattern.routes(feed, **options), answer)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve one pattern of the course in this process.")
    parser.add_argument("module", help="the pattern's module, such as labsupport.patterns.sse")
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--arrivals", default="fixed")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--options", type=json.loads, default={})
    args = parser.parse_args(argv)
    asyncio.run(serve(args.module, args.rate, args.arrivals, args.seed, args.options))


if __name__ == "__main__":
    main()
