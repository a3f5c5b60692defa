"""Start, drive and stop the plain baseline: its server in one process, its clients in another."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PATHS = {"polling": "/latest", "long polling": "/events", "push": "/stream", "sse": "/sse", "websocket": "/ws"}


class _Child:
    """A child process that answers in JSON lines on stdout and ends when its stdin closes."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen([sys.executable, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, bufsize=1)

    def answer(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.process.args[1]} ended (exit status {self.process.wait()})")
        return json.loads(line)

    def ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        return self.answer()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()


class BaselineServer(_Child):
    """``baseline_server.py`` in its own process; use as a context manager so it always stops."""

    def __init__(self, *, trace: bool = False) -> None:
        super().__init__(str(HERE / "baseline_server.py"), *(["--trace"] if trace else []))
        self.port = self.answer()["port"]

    def start_feed(self, rate: float, duration: float) -> float:
        return self.ask(f"start {rate} {duration}")["started"]

    def usage(self) -> dict:
        return self.ask("usage")

    def __enter__(self) -> "BaselineServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def run(pattern: str, *, rate: float, clients: int, duration: float, interval: float = 0.5,
        drain: float = 0.3) -> dict:
    """One baseline run: server and clients in two processes; every latency (s) and poll time (s)."""
    with BaselineServer() as server:
        crowd = _Child(str(HERE / "baseline_clients.py"), pattern, "--port", str(server.port),
                       "--clients", str(clients), "--interval", str(interval))
        try:
            crowd.answer()  # every client is in place
            started = server.start_feed(rate, duration)
            time.sleep(max(0.0, started + duration + drain - time.monotonic()))
            return crowd.ask("stop")
        finally:
            crowd.stop()
