"""The tests' notebook kernels talk to their clients over Unix sockets, not TCP ports.

jupyter_client picks a kernel's five TCP ports itself, finds them free, closes them, and the kernel
binds them a moment later. In between, a lab server elsewhere in the test run, binding a port the
operating system chose, can take one: the kernel then dies with "Address already in use" and its
client waits a minute for an answer (CI met exactly this). A Unix socket in a folder of this
process's own cannot be taken by anyone else.

It is also a pytest plugin (``-p kernels`` in pyproject.toml): nbval's kernels start this way too.
"""

import atexit
import shutil
import tempfile
from pathlib import Path

from jupyter_client.manager import KernelManager

_SOCKETS = Path(tempfile.mkdtemp(prefix="course-kernels-"))   # short: a socket's path has at most 107 bytes
atexit.register(shutil.rmtree, _SOCKETS, ignore_errors=True)


class UnixSocketKernelManager(KernelManager):
    """A ``KernelManager`` whose kernels listen on Unix sockets in this process's own folder."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("transport", "ipc")
        kwargs.setdefault("ip", str(_SOCKETS / "kernel"))
        super().__init__(**kwargs)


def pytest_configure(config) -> None:
    import nbval.kernel

    nbval.kernel.KernelManager = UnixSocketKernelManager
