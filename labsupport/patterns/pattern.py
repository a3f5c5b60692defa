"""What a pattern module exports so the lab can run it without knowing it: one ``Pattern`` record.

The lab starts a pattern's server on a feed (on the lab loop or in a process of its own), points
its own client at it, and opens idle connections to it, all through the record; ``registry.py``
collects the records by name. A new pattern is one module that ends with ``PATTERN = Pattern(...)``
and one line in the registry.

The record names its module's functions rather than holding them: they are looked up when
called, so a process started later imports them by name, and code that replaces a function of
the module (a mutant of the mutation suite, say) is what runs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Awaitable


@dataclass(frozen=True)
class Pattern:
    """One pattern, as the lab runs it."""

    name: str              # how chapters, tables and figures call it: "long polling"
    module: str            # the module that defines it
    path: str              # the route its client follows
    server_function: str = "handlers"   # the module's function of (feed, **options): its server's routes
    client_function: str = "listen"     # the module's function of (base_url, recorder, **settings): its client
    upgrade: bool = False          # a connection opens with a WebSocket upgrade (RFC 6455 section 4.1)
    holds_requests: bool = False   # the server holds a request open until there is news (long polling)

    def routes(self, feed, **options) -> list:
        """The Tornado routes of the pattern's server on ``feed``."""
        return getattr(importlib.import_module(self.module), self.server_function)(feed, **options)

    def client(self, base_url: str, recorder, **settings) -> Awaitable[None]:
        """The pattern's own client on ``base_url``, recording into ``recorder`` (a coroutine)."""
        return getattr(importlib.import_module(self.module), self.client_function)(base_url, recorder, **settings)
