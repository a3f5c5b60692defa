"""The mutation suite's registry: realistic bugs, each shown to make named claims fail.

A mutant is a bug a developer could write (a handler that blocks, a poller at twice its
interval, an encoder that adds bytes), applied as a patch of the code under test, never of
``checks`` or of a claim. Each chapter's module here (named by the chapter's topic) lists its
mutants; ``run.py`` runs a chapter's notebook once without them and once per group of mutants,
and a claim counts as killed when it held in the first run and failed, judged, in the second.

A mutant is applied inside every Python process of the run (the kernel, and the server
processes it starts) by ``boot/sitecustomize.py``, which reads ``COURSE_MUTANTS``.
"""

from __future__ import annotations

import __future__
import importlib
import inspect
import pkgutil
import re
import textwrap
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Mutant:
    name: str                   # short and unique: "poller-double-interval"
    bug: str                    # the bug, as a developer would write it
    notebook: str               # the chapter's notebook, e.g. "01_pull_and_push"
    kills: tuple[str, ...]      # ids of the claims it must make fail
    patch: Callable[[], None]   # applies the bug (monkeypatching labsupport)
    group: int = 0              # mutants of one notebook with the same group run together (disjoint code and claims)


def swap(target: str, make: Callable[[Callable], Callable]) -> Callable[[], None]:
    """A patch that replaces ``module:attribute`` (or ``module:Class.method``) with ``make(original)``."""
    module_name, _, path = target.partition(":")

    def patch() -> None:
        owner = importlib.import_module(module_name)
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        setattr(owner, name, make(getattr(owner, name)))

    return patch


def edit(*changes: tuple[str, str]) -> Callable[[Callable], Callable]:
    """A ``make`` for ``swap``: the function's own source with each ``(old, new)`` replaced, recompiled
    in its own module, so that the mutant is the code a developer would have written.

    ``old`` must occur exactly once (a mutant whose line has moved fails loudly instead of testing
    nothing); the lines of ``new`` after its first take the indentation of the line ``old`` is on.
    """
    def make(original: Callable) -> Callable:
        function = inspect.unwrap(original)
        source = getattr(function, "__mutated_source__", None) or textwrap.dedent(inspect.getsource(function))
        for old, new in changes:
            if source.count(old) != 1:
                raise LookupError(f"{function.__qualname__}: {old!r} must occur exactly once in its source")
            indent = re.search(r"^( *).*" + re.escape(old.splitlines()[0]), source, re.M).group(1)
            source = source.replace(old, new.replace("\n", "\n" + indent))
        namespace = dict(function.__globals__)
        exec(compile(source, inspect.getsourcefile(function), "exec",
                     flags=__future__.annotations.compiler_flag, dont_inherit=True), namespace)
        mutated = namespace[function.__name__]
        mutated.__qualname__, mutated.__mutated_source__ = function.__qualname__, source
        return mutated
    return make


def every_mutant() -> dict[str, Mutant]:
    """Every chapter's mutants, by name."""
    found: dict[str, Mutant] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name in ("run", "boot"):
            continue
        for mutant in importlib.import_module(f"{__name__}.{info.name}").MUTANTS:
            if mutant.name in found:
                raise ValueError(f"two mutants are named {mutant.name!r}")
            found[mutant.name] = mutant
    return found


def apply(names: str) -> None:
    """Apply the comma-separated mutants ``names`` in this process."""
    mutants = every_mutant()
    for name in filter(None, names.split(",")):
        mutants[name].patch()
