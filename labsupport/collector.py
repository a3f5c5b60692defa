"""Python's garbage collector, kept off the kernel's older objects while the lab measures.

CPython's cyclic collector now and then walks every object the process holds. Late in a notebook
that is some 300,000 objects (modules, results, figures), and one such walk stops the whole
process for 0.1 to 0.25 s on a quiet machine, longer on a busy one. The lab's servers, meters and
clients stop with it, and a run then measures the pause, not the pattern: arrivals bunch, a
poll goes missing from every client's count, a worst case grows by the pause.

While lab work runs, the objects that were there before it are frozen (``gc.freeze``): the
collector still runs, but only over what the work itself creates, which is small and quick to
walk. When the last lab work ends they are unfrozen, and the collector sees them again.
"""

from __future__ import annotations

import gc
import threading
from contextlib import contextmanager
from typing import Iterator

_lock = threading.Lock()
_holders = 0


@contextmanager
def older_objects_frozen() -> Iterator[None]:
    """Freeze the objects that exist now for as long as the block (or any overlapping one) runs."""
    global _holders
    with _lock:
        if _holders == 0:
            gc.freeze()
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                gc.unfreeze()
