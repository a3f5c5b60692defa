#!/usr/bin/env python3
"""Set up the course's environment and open it, or run every test. Needs only Python 3.10+.

    python3 course.py lab     # create .venv if needed, then open JupyterLab on the course
    python3 course.py test    # create .venv if needed, then run every test (unit, notebooks, browser)
    python3 course.py bench   # speed and memory figures, each beside a baseline from the same run
    python3 course.py test --busy-core   # the same tests while another process keeps one core busy
    python3 course.py mutants [NOTEBOOK ...]   # the mutation suite: each claim shown to fail against a bug

Extra arguments are passed on: to JupyterLab (``lab --no-browser --port 8899``) or to pytest
(``test tests/test_wire.py -x``). ``--busy-core`` runs a spinning child process for as long as
the tests run: every claim must hold on a loaded machine, not only on a quiet one. The environment is made once and refreshed only when
requirements.txt changes. The browser tests use Debian's Chromium and the capture tests its
tshark: ``test`` installs them with apt-get when run as root on Debian, and otherwise those tests
are skipped.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv"
REQUIREMENTS = HERE / "requirements.txt"
STAMP = VENV / "requirements.sha256"
WORKERS = 2


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_environment() -> Path:
    """Create .venv and install the course into it, unless requirements.txt is unchanged."""
    if sys.version_info < (3, 10):
        sys.exit(f"The course needs Python 3.10 or newer; this is {sys.version.split()[0]}.")
    python = venv_python()
    if not python.exists():
        print("Creating the course environment in .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes() + b"editable").hexdigest()
    if not STAMP.exists() or STAMP.read_text() != wanted:
        print("Installing the course's packages (first time: a few minutes) ...", flush=True)
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        subprocess.run(pip + ["--upgrade", "pip"], check=True)
        subprocess.run(pip + ["-r", str(REQUIREMENTS), "-e", str(HERE)], check=True)
        STAMP.write_text(wanted)
    return python


TEST_PACKAGES = {  # Debian package: (the programs it provides, the tests that drive them)
    "chromium": (("chromium", "chromium-browser"), "browser tests"),
    "tshark": (("tshark",), "Wireshark tests"),
}
# tshark's package asks whether users who are not root may capture: the tests only read files
TSHARK_ANSWER = b"wireshark-common wireshark-common/install-setuid boolean false\n"


def ensure_test_packages() -> None:
    """The browser tests drive Debian's Chromium, the capture tests its tshark: install them where we can."""
    missing = [name for name, (programs, _) in TEST_PACKAGES.items() if not any(map(shutil.which, programs))]
    if not missing:
        return
    names, tests = " and ".join(missing), " and the ".join(TEST_PACKAGES[name][1] for name in missing)
    if not (shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0):
        print(f"{names} {'is' if len(missing) == 1 else 'are'} not installed, so the {tests} will be skipped "
              f"(on Debian or Ubuntu: apt-get install {' '.join(missing)}).", flush=True)
        return
    print(f"Installing Debian's {names} for the {tests} ...", flush=True)
    quiet = {"stdout": subprocess.DEVNULL, "env": {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}}
    if shutil.which("debconf-set-selections"):
        subprocess.run(["debconf-set-selections"], input=TSHARK_ANSWER, **quiet)
    if subprocess.run(["apt-get", "update", "-qq"], **quiet).returncode or \
            subprocess.run(["apt-get", "install", "-y", "-qq", *missing], **quiet).returncode:
        print(f"Could not install {names}; the {tests} will be skipped.", flush=True)


def start_busy_core() -> subprocess.Popen:
    """Another process that keeps one core busy, as a second program on a 2-core machine would."""
    print("Keeping one core busy while the tests run (--busy-core) ...", flush=True)
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def parallel(rest: list[str]) -> list[str]:
    """Run the tests on WORKERS processes, unless the command line chose otherwise.

    Most tests wait on sockets and timers rather than compute, so two workers share two cores
    well (about 450 s). Three took about 330 s, but kept the cores 61 % busy on average, and two
    of their runs each found a timing weakness (both fixed); two stay the default until three
    have a longer clean record. A notebook's cells (a test file, a class) stay together on one
    worker.
    """
    if any(arg.startswith(("-n", "--numprocesses", "--dist", "-p")) for arg in rest):
        return []
    return ["-n", str(WORKERS), "--dist", "loadscope", "--no-loadscope-reorder"]


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("lab", "test", "bench", "mutants"):
        print(__doc__)
        return 2
    python = ensure_environment()
    command, rest = argv[0], argv[1:]
    if command == "lab":
        args = [str(python), "-m", "jupyter", "lab", "--notebook-dir", str(HERE),
                "--ServerApp.default_url=/lab/tree/notebooks/00_start_here.ipynb", *rest]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.append("--allow-root")  # containers and CI machines often run as root
    elif command == "bench":
        args = [str(python), str(HERE / "benchmark.py"), *rest]
    elif command == "mutants":
        args = [str(python), str(HERE / "tests" / "mutants" / "run.py"), *rest]
    else:
        ensure_test_packages()
        busy = "--busy-core" in rest
        rest = [arg for arg in rest if arg != "--busy-core"]
        args = [str(python), "-m", "pytest", *parallel(rest), *(rest or ["tests", "notebooks"])]
        if busy:
            spinner = start_busy_core()
            try:
                return subprocess.call(args, cwd=HERE)
            finally:
                spinner.kill()
                spinner.wait()
    return subprocess.call(args, cwd=HERE)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
