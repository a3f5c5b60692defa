"""The lab's child processes of one kind (brokers, clusters), by name: started once, stopped whatever happens.

``start_broker`` and ``start_cluster`` share this: a notebook asks for "the broker" in every
cell and gets the same one; asking for a fresh one stops the old one first; ``shutdown()``
stops them all, and so does the interpreter's exit if the lab loop can no longer run.
"""

from __future__ import annotations

import atexit
from typing import Callable, Generic, Protocol, TypeVar

from .lab import lab


class ChildProcess(Protocol):
    async def start(self) -> object: ...
    async def close(self) -> None: ...
    def close_now(self) -> None: ...


P = TypeVar("P", bound=ChildProcess)


class NamedProcesses(Generic[P]):
    """The running processes of one ``kind``, by name (``running``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.running: dict[str, P] = {}
        atexit.register(self.close_all_now)

    async def replace(self, name: str, make: Callable[[], P]) -> P:
        """Stop the one of that name, then start ``make()`` in its place (closed at once if it fails)."""
        await self.stop(name)
        process = make()
        try:
            await process.start()
        except BaseException:
            process.close_now()
            raise
        self.running[name] = process
        lab.on_shutdown(f"{self.kind}:{name}", lambda: self._close(name))
        return process

    async def stop(self, name: str) -> None:
        """Stop the one of that name and delete its store, if it is running."""
        lab.forget(f"{self.kind}:{name}")
        await self._close(name)

    async def _close(self, name: str) -> None:
        process = self.running.pop(name, None)
        if process is not None:
            await process.close()

    def close_all_now(self) -> None:
        """At interpreter exit: stop every one even if the lab loop can no longer run."""
        for process in list(self.running.values()):
            process.close_now()
