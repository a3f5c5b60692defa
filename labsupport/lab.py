"""The lab loop: one background thread with its own asyncio loop, where everything runs.

Why not the kernel's own loop? It stalls whenever a cell blocks (``time.sleep``, a CPU
loop), widget callbacks cannot wait on it, and background tasks on it may sit idle between
cells. So servers, feeds, wire meters and clients all live on this separate loop, and a cell
either calls a plain function that waits, or awaits the same call.

Every server binds 127.0.0.1 on a port the OS picks. Starting a server under a name that is
already running replaces the old one, so re-running a cell never leaks a second server.
``shutdown()`` (also run at interpreter exit) stops servers, tasks and helper processes.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import functools
import inspect
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import tornado.web

from .checks import show_note
from .claims import BUSY
from .collector import older_objects_frozen
from .machine import HOLD_LIMIT, MachineWatch
from .progress import Progress
from .serving import Listener, listen
from .wire import LOOPBACK, Link, WireMeter

REFUSED_KEPT = 100
CANCEL_AGAIN_AFTER = 0.1  # seconds a cancelled task may take to end before it is cancelled again
CANCEL_GIVE_UP = 10.0     # seconds of cancelling after which a task is taken to ignore cancels on purpose


class LabError(RuntimeError):
    """A problem a learner can act on; the message says what happened and what to do."""


async def cancel_all(tasks) -> None:
    """Cancel ``tasks`` and wait until every one has ended; cancel again any that carries on.

    Before Python 3.12, ``asyncio.wait_for`` swallows a cancel that arrives just as the thing it
    waits for finishes (CPython gh-86296, fixed by gh-96764 in 3.12). A loop around it, such as
    a worker pulling jobs with nats-py's ``fetch``, then goes on as if never cancelled, and
    waiting for it hangs. Measured: 15 of 300 cancels of a ``fetch(1, timeout=0.1)`` loop timed
    near the broker's answer. A second cancel finds the task somewhere else.

    A task that still runs after ``CANCEL_GIVE_UP`` seconds of this catches every cancel (a bare
    ``except:`` in a loop does): a ``LabError`` says so rather than wait for ever.
    """
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    give_up = time.monotonic() + CANCEL_GIVE_UP
    while pending:
        if time.monotonic() > give_up:
            names = ", ".join(sorted({_coroutine_name(task) for task in pending}))
            raise LabError(f"{len(pending)} task(s) would not stop when cancelled ({names}). Code that catches "
                           "every exception (a bare `except:`) also catches the cancel: catch `Exception` instead.")
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=CANCEL_AGAIN_AFTER)
    await asyncio.gather(*tasks, return_exceptions=True)  # collects each error: none is reported unretrieved


def _coroutine_name(future: asyncio.Future) -> str:
    coroutine = future.get_coro() if isinstance(future, asyncio.Task) else None
    return getattr(coroutine, "__qualname__", repr(future))  # a gather's future has no coroutine of its own


@dataclass
class Server:
    """A Tornado server the lab started: its name, address and the state its handlers share."""

    name: str
    port: int
    listener: Listener
    state: Any = None
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def stop(self) -> None:
        await self.listener.stop()
        for cleanup in reversed(self.cleanups):
            await cleanup()

    def __repr__(self) -> str:
        return f"<Server {self.name!r} at {self.url}>"


class Lab:
    """Owns the lab loop thread and everything started on it."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.servers: dict[str, Server] = {}
        self._stoppers: dict[str, Callable[[], Awaitable[None]]] = {}
        self.refused: deque[str] = deque(maxlen=REFUSED_KEPT)  # requests the lab's servers refused, newest last
        self._measuring: set[str] = set()   # work the learner's browser does on the lab's servers, unfinished
        self._stop_when_done = False

    # -- the loop -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def loop(self) -> asyncio.AbstractEventLoop:
        """The lab loop, started on first use."""
        with self._lock:
            if not self.running:
                ready = threading.Event()
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._run_loop, args=(ready,), name="lab-loop", daemon=True
                )
                self._thread.start()
                ready.wait()
            return self._loop

    def _run_loop(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(ready.set)
        self._loop.run_forever()

    def in_lab_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def machine_watch(self, hold_limit: float = HOLD_LIMIT) -> MachineWatch:
        """A watch, from outside the lab loop, of what other programs do to the lab's thread."""
        self.loop()
        return MachineWatch(self._thread.native_id, hold_limit=hold_limit)

    def submit(self, coro: Awaitable) -> concurrent.futures.Future:
        """Schedule a coroutine on the lab loop and return a thread-safe future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop())

    def run(
        self,
        coro: Awaitable,
        *,
        timeout: float | None = None,
        expected_seconds: float | None = None,
        label: str = "running",
        bar: Any = None,
    ) -> Any:
        """Run a coroutine on the lab loop and wait for its result.

        Shows a progress bar when the work is expected to take a couple of seconds or more
        (or fills ``bar``, a control panel's own). Interrupting the kernel cancels the work
        on the lab loop too.
        """
        if self.in_lab_thread():
            coro.close()
            raise LabError(
                "This call waits for the lab loop, but it was made on the lab loop itself. "
                "Inside a coroutine, await the async form instead (for example `await f.aio(...)`)."
            )
        progress = Progress.maybe(label, expected_seconds, bar)
        started = time.monotonic()
        with older_objects_frozen():  # no long collector pause inside what the work measures
            future = self.submit(coro)
            try:
                # Wait with concurrent.futures.wait, not result(timeout=...): since Python 3.11 a
                # TimeoutError raised by the work itself is the same class as "not finished yet".
                while not concurrent.futures.wait([future], timeout=0.1).done:
                    if timeout is not None and time.monotonic() - started > timeout:
                        stuck = LabError(f"{label!r} did not finish within {timeout:.0f} s and was stopped. "
                                         "Try a shorter duration or fewer clients.")
                        stuck.__notes__ = [self._where_stuck(label)]  # IPython and Python 3.11+ print notes
                        future.cancel()
                        raise stuck from None
                    progress.update(time.monotonic() - started)
                result = future.result()
            except BaseException:
                future.cancel()
                progress.close(done=False)
                raise
        progress.close(done=True)
        return result

    def _where_stuck(self, label: str) -> str:
        """For whoever maintains the lab: where each task on the lab loop waits (a note on the error,
        so that a test's report, which shows the traceback and not stderr, names the place)."""
        lines = [f"For the lab's maintainers: {label!r} was stuck; the lab loop's tasks were waiting here:"]
        try:  # read from this thread while the loop runs: best effort, never in the way of the error
            for task in asyncio.all_tasks(self._loop):
                where = " <- ".join(f"{f.f_code.co_name} ({f.f_code.co_filename.rsplit('/', 1)[-1]}:{f.f_lineno})"
                                    for f in reversed(task.get_stack()))
                lines.append(f"  {task.get_name()}: {where or 'not started'}")
        except RuntimeError as error:
            lines.append(f"  (could not read them: {error})")
        return "\n".join(lines)

    async def arun(self, coro: Awaitable) -> Any:
        """Await a coroutine that runs on the lab loop, from any other running loop."""
        if self.in_lab_thread():
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    # -- servers --------------------------------------------------------------------------

    async def serve(
        self,
        name: str,
        handlers: list,
        *,
        state: Any = None,
        cleanups: list[Callable[[], Awaitable[None]]] | None = None,
        send_buffer: int | None = None,
        **settings: Any,
    ) -> Server:
        """Start a Tornado app on 127.0.0.1 with an OS-chosen port, replacing any server of that name.

        ``settings`` go to Tornado; ``send_buffer`` sets each connection's ``SO_SNDBUF`` (``serving.listen``).
        Must be awaited on the lab loop (experiments do that); cells use ``start_server``.
        """
        await self.stop_server(name)
        app = tornado.web.Application(handlers, **{"log_function": self._note_refused, **settings})
        listener = listen(app, send_buffer=send_buffer, idle_connection_timeout=60)
        server = Server(name, listener.port, listener, state, list(cleanups or []))
        self.servers[name] = server
        return server

    def _note_refused(self, handler: tornado.web.RequestHandler) -> None:
        """Tornado's access log, kept quiet: a refused request is noted in ``lab.refused``.

        Tornado logs every 4xx as a warning, which a notebook shows as a red box beside a cell
        whose point was that the server refused the request properly; the cell says it in words.
        """
        if handler.get_status() >= 400:
            request = handler.request
            self.refused.append(f"{handler.get_status()} {request.method} {request.uri}")

    async def stop_server(self, name: str) -> None:
        server = self.servers.pop(name, None)
        if server is not None:
            await server.stop()

    # -- other things that must stop with the lab -------------------------------------------

    def on_shutdown(self, key: str, stopper: Callable[[], Awaitable[None]]) -> None:
        """Register a coroutine function that stops something (a relay, a feed, a broker)."""
        self._stoppers[key] = stopper

    async def replace(self, key: str, stopper: Callable[[], Awaitable[None]]) -> None:
        """Stop whatever is registered under ``key``, then register ``stopper`` in its place."""
        old = self._stoppers.pop(key, None)
        if old is not None:
            await old()
        self._stoppers[key] = stopper

    def forget(self, key: str) -> None:
        self._stoppers.pop(key, None)

    # -- shutdown -------------------------------------------------------------------------

    def browser_started(self, key: str) -> None:
        """A browser panel's run began: a ``shutdown()`` cell waits until it ends (``browser_ended``)."""
        with self._lock:
            self._measuring.add(key)

    def browser_ended(self, key: str) -> None:
        with self._lock:
            self._measuring.discard(key)
            stop = self._stop_when_done and not self._measuring
            if stop:
                self._stop_when_done = False
        if stop:
            self.shutdown()

    def shutdown_when_browsers_done(self) -> bool:
        """Shut down now, or, while browser panels still run, once the last one ends: True if deferred."""
        with self._lock:
            self._stop_when_done = deferred = bool(self._measuring)
        if not deferred:
            self.shutdown()
        return deferred

    def shutdown(self) -> None:
        """Stop every server, task and helper the lab started, then the loop thread itself."""
        with self._lock:
            if not self.running:
                return
            loop, thread = self._loop, self._thread
        asyncio.run_coroutine_threadsafe(self._stop_everything(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        with self._lock:
            self._loop = self._thread = None

    async def _stop_everything(self) -> None:
        for name in list(self.servers):
            await self.stop_server(name)
        for key, stopper in list(self._stoppers.items()):
            self._stoppers.pop(key, None)
            try:
                await stopper()
            except Exception:  # one failing stopper must not leave the others running
                pass
        me = asyncio.current_task()
        with contextlib.suppress(LabError):  # a task that ignores cancels dies with the loop
            await cancel_all(t for t in asyncio.all_tasks() if t is not me)


lab = Lab()
atexit.register(lab.shutdown)


STUCK_AFTER = 120.0  # seconds after which a lab call that should take a few is stopped as stuck


class LabCall:
    """A coroutine function made callable from a cell: ``f(...)`` waits for it, ``await f.aio(...)``
    awaits it; either way the work runs on the lab loop.

    ``f.coro`` is the original coroutine function, for code already on the lab loop.
    ``f.seconds(...)`` estimates how long a call takes, for its progress bar: the arguments are
    bound to the function's signature with its defaults filled in, so the estimate sees
    positional arguments and defaults as the call does. ``f.expected`` is the estimator itself,
    a function of that dict of arguments.

    A call that ``measures`` (every experiment; not one that only starts or stops something) is
    watched from outside the lab loop (``machine.py``). If other programs held the lab back
    while it measured, it runs once more, and says so; if they held it back again, the claims
    that follow say "not judged" until a measurement runs undisturbed. ``f.tolerates(arguments)``
    is the longest wait for a core at a stretch a call's measurement tolerates, where that is less
    than the watch's own limit.
    """

    def __init__(self, coro_fn: Callable[..., Awaitable], expected: Callable[[dict], float] | None = None,
                 measures: bool = True, tolerates: Callable[[dict], float] | None = None) -> None:
        functools.update_wrapper(self, coro_fn)
        self.coro = coro_fn
        self.expected = expected
        self.measures = measures
        self.tolerates = tolerates
        self.signature = inspect.signature(coro_fn)

    def arguments(self, *args, **kwargs) -> dict:
        """Every argument of a call by name, defaults included (a ``TypeError`` for a wrong call)."""
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    def seconds(self, *args, **kwargs) -> float | None:
        return self.expected(self.arguments(*args, **kwargs)) if self.expected else None

    def hold_limit(self, *args, **kwargs) -> float:
        """The longest wait for a core at a stretch this call's measurement tolerates (s)."""
        return min(HOLD_LIMIT, self.tolerates(self.arguments(*args, **kwargs))) if self.tolerates else HOLD_LIMIT

    def __call__(self, *args, **kwargs):
        seconds = self.seconds(*args, **kwargs)
        # Every experiment bounds its own waits; this is the last guard, so that no cell ever hangs.
        stuck = max(STUCK_AFTER, 10 * (seconds or 0.0))

        def once():
            return lab.run(self.coro(*args, **kwargs), expected_seconds=seconds, label=self.__name__, timeout=stuck)

        return self._judged(once, self.hold_limit(*args, **kwargs)) if self.measures else once()

    async def aio(self, *args, **kwargs):
        if not self.measures or lab.in_lab_thread():
            return await lab.arun(self.coro(*args, **kwargs))
        tries = []
        for _ in range(2):
            watch = lab.machine_watch(self.hold_limit(*args, **kwargs)).start()
            result = await lab.arun(self.coro(*args, **kwargs))
            tries.append((result, watch.stop()))
            if not self._held_back(tries):
                break
        return self._verdict(tries)

    def _judged(self, once: Callable[[], Any], hold_limit: float) -> Any:
        tries = []
        for _ in range(2):
            watch = lab.machine_watch(hold_limit).start()
            try:
                result = once()
            finally:
                held = watch.stop()
            tries.append((result, held))
            if not self._held_back(tries):
                break
        return self._verdict(tries)

    @staticmethod
    def _held_back(tries: list) -> bool:
        held = tries[-1][1]
        return held is not None and held.held_back

    def _verdict(self, tries: list) -> Any:
        """The last try's result; notes in the cell what held the lab back, and for the claims."""
        name = self.__name__
        if len(tries) == 2:
            why = tries[0][1].describe()
            show_note(f"<div style=\"color:#8a5a00\">&#9208; While {name} measured, {why}: measured once more.</div>",
                      f"While {name} measured, {why}: measured once more.")
        result, held = tries[-1]
        if held is not None and held.held_back:
            BUSY.note(name, held.describe())
        else:  # a measurement taken undisturbed is what the claims after it judge
            BUSY.notes.clear()
        return result

    def __repr__(self) -> str:
        return f"<lab call {self.__name__}{self.signature}>"


def on_lab_loop(coro_fn: Callable[..., Awaitable] | None = None, *,
                expected: Callable[[dict], float] | None = None, measures: bool = True,
                tolerates: Callable[[dict], float] | None = None) -> LabCall | Callable:
    """Make a coroutine function a ``LabCall``: plain from a cell (it waits) or awaited (``.aio``).

    ``expected(arguments)`` estimates the seconds a call takes, for its progress bar;
    ``measures=False`` for a call that only starts or stops something (never run twice);
    ``tolerates(arguments)`` the longest wait for a core at a stretch its measurement tolerates.
    """
    if coro_fn is None:
        return functools.partial(on_lab_loop, expected=expected, measures=measures, tolerates=tolerates)
    return LabCall(coro_fn, expected, measures, tolerates)


@on_lab_loop(measures=False)
async def start_server(name: str, handlers: list, **settings: Any) -> Server:
    """Start (or restart) a named Tornado server on loopback and return it."""
    return await lab.serve(name, handlers, **settings)


@on_lab_loop(measures=False)
async def start_meter(name: str, target: Server | int, *, capture: int = 0, latency: float = 0.0,
                      log_bytes: int = 0) -> WireMeter:
    """Start (or restart) a named wire meter in front of a server; clients use ``meter.url``.

    ``log_bytes`` keeps every chunk relayed, up to that many bytes in memory over all connections,
    for a ladder (``ladder(meter.connections)``) or a capture file (``pcap.save_capture``).
    """
    port = target.port if isinstance(target, Server) else target
    link = Link(latency=latency)
    meter = await WireMeter(port, capture=capture, up=link, down=link, log_bytes=log_bytes).start()
    await lab.replace(f"meter:{name}", meter.stop)
    return meter


@on_lab_loop(measures=False)
async def stop_server(name: str) -> None:
    """Stop the named server, if it is running."""
    await lab.stop_server(name)


def shutdown() -> None:
    """Stop everything the lab started. Safe to call more than once.

    A browser panel measures while later cells run (its messages arrive between them), so "Run
    All" can reach a notebook's last cell while the browser is still at work: the lab then
    stops when the last panel is done, not under it."""
    if lab.shutdown_when_browsers_done():
        show_note("<div>The lab stops once your browser panels above have finished.</div>",
                  "The lab stops once your browser panels above have finished.")
