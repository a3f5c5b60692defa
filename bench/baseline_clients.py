"""The benchmark's plain clients: aiohttp, one process, recording only what the figures need.

    python bench/baseline_clients.py sse --port 41234 --clients 300

Each client of the chosen pattern talks to ``baseline_server.py`` and notes, for every event it
receives, ``now - event["t"]`` (latency, on the one monotonic clock of the machine), and for
every poll the seconds from sending it to the whole answer. The process prints ``{"ready": n}``
once every client is in place (a stream open, a first answer in), and at ``stop`` on stdin (or
when stdin closes) cancels the clients and prints ``{"latencies": [...], "poll_seconds": [...]}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time

import aiohttp

PATTERNS = ("polling", "long polling", "push", "sse", "websocket")


class Log:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.poll_seconds: list[float] = []
        self.ready = 0

    def saw(self, event: dict) -> None:
        self.latencies.append(time.monotonic() - event["t"])


async def poll(url: str, log: Log, interval: float) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        held, due, first = 0, time.monotonic() + random.uniform(0, interval), True  # clients out of step
        while True:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            sent = time.monotonic()
            async with session.get(f"{url}/latest") as response:
                event = json.loads(await response.read())
            log.poll_seconds.append(time.monotonic() - sent)
            if event["seq"] > held:
                held = event["seq"]
                log.saw(event)
            if first:
                log.ready, first = log.ready + 1, False
            due = max(due + interval, time.monotonic())


async def long_poll(url: str, log: Log) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        cursor = None
        log.ready += 1
        while True:
            params = {} if cursor is None else {"after": cursor}
            async with session.get(f"{url}/events", params=params) as response:
                answer = json.loads(await response.read())
            for event in answer["events"]:
                log.saw(event)
                cursor = event["seq"]


async def stream(url: str, log: Log, sse: bool) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        async with session.get(f"{url}/sse" if sse else f"{url}/stream") as response:
            log.ready += 1
            async for line in response.content:
                if not sse:
                    log.saw(json.loads(line))
                elif line.startswith(b"data: "):
                    log.saw(json.loads(line[6:]))


async def websocket(url: str, log: Log) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url.replace("http://", "ws://") + "/ws") as ws:
            log.ready += 1
            async for message in ws:
                log.saw(json.loads(message.data))


def client(pattern: str, url: str, log: Log, interval: float):
    if pattern == "polling":
        return poll(url, log, interval)
    if pattern == "long polling":
        return long_poll(url, log)
    if pattern == "websocket":
        return websocket(url, log)
    return stream(url, log, sse=pattern == "sse")


async def main(pattern: str, port: int, clients: int, interval: float) -> None:
    log, url = Log(), f"http://127.0.0.1:{port}"
    tasks = [asyncio.create_task(client(pattern, url, log, interval)) for _ in range(clients)]
    while log.ready < clients:
        failed = [t for t in tasks if t.done()]
        if failed:
            failed[0].result()  # raises the client's error
        await asyncio.sleep(0.01)
    print(json.dumps({"ready": log.ready}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps({"latencies": log.latencies, "poll_seconds": log.poll_seconds}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pattern", choices=PATTERNS)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args()
    asyncio.run(main(args.pattern, args.port, args.clients, args.interval))
