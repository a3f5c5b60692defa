#!/usr/bin/env python3
"""Set up the course's environment and open it, or run every test. Needs only Python 3.10+.

    python3 course.py lab     # create .venv if needed, then open JupyterLab on the course
    python3 course.py test    # create .venv if needed, then run every test (unit, notebooks, browser)
    python3 course.py bench   # speed and memory figures, each beside a baseline from the same run
    python3 course.py test --busy-core   # the same tests while another process keeps one core busy
    python3 course.py mutants [NOTEBOOK ...]   # the mutation suite: each claim shown to fail against a bug
    python3 course.py lock    # pin pyproject.toml's dependencies anew into requirements/ and .binder/
    python3 course.py test --latest      # the tests on the newest release of everything (.venv-latest)
    python3 course.py test --lowest      # the tests on each direct dependency's floor (.venv-lowest)

Extra arguments are passed on: to JupyterLab (``lab --no-browser --port 8899``), to pytest
(``test tests/test_wire.py -x``) or to ``uv pip compile`` (``lock --upgrade-package tornado``).
``--busy-core`` runs a spinning child process for as long as the tests run: every claim must hold
on a loaded machine, not only on a quiet one.

The environment comes from a lock: ``requirements/runtime.txt`` for ``lab`` and ``bench``,
``requirements/test.txt`` (the same pins, plus the test tools) for ``test``; every file is pinned
and hashed. uv installs it (fast); uv itself is pinned and hashed in ``requirements/uv.txt`` and
kept in ``.venv-uv``. The course is installed from this folder, editable, outside the hashed files.
The environment is made once and refreshed only when its lock changes. ``--latest`` and
``--lowest`` ignore the lock and resolve pyproject.toml's ranges in their own environments.
The browser tests use Debian's Chromium: ``test`` installs it with apt-get when run as root on
Debian, and otherwise the browser tests are skipped.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv"
LOCKS = HERE / "requirements"
RUNTIME_LOCK = LOCKS / "runtime.txt"
TEST_LOCK = LOCKS / "test.txt"
UV_LOCK = LOCKS / "uv.txt"
UV_VENV = HERE / ".venv-uv"
BINDER_REQUIREMENTS = HERE / ".binder" / "requirements.txt"
STAMP = "course-lock.sha256"
LOCK_PYTHON = "3.10"  # the oldest Python the locks cover (pyproject.toml's requires-python)
UNLOCKED = {"--latest": "highest", "--lowest": "lowest-direct"}  # test option: uv's --resolution
WORKERS = 2


def say(message: str) -> None:
    print(message, flush=True)


def run(command: list, **options) -> None:
    """Run a setup step; stop with a plain message (not a traceback) if it fails."""
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}  # the Python running this file, never a download
    if subprocess.run([str(part) for part in command], env=env, **options).returncode:
        sys.exit(f"This step failed: {' '.join(map(str, command))}")


def bin_path(environment: Path, name: str) -> Path:
    return environment / ("Scripts" if os.name == "nt" else "bin") / (name + (".exe" if os.name == "nt" else ""))


def venv_python() -> Path:
    return bin_path(VENV, "python")


def fingerprint(lock: Path) -> str:
    return f"{lock.name} {hashlib.sha256(lock.read_bytes()).hexdigest()}"


def uv() -> Path:
    """uv, pinned and hashed in requirements/uv.txt, installed with pip into its own small venv."""
    stamp, wanted = UV_VENV / STAMP, fingerprint(UV_LOCK)
    if not stamp.exists() or stamp.read_text() != wanted:
        say(f"Installing uv (the installer) into {UV_VENV.name} from {UV_LOCK.relative_to(HERE)} ...")
        venv.EnvBuilder(with_pip=True, clear=True).create(UV_VENV)
        run([bin_path(UV_VENV, "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q",
             "--require-hashes", "--no-deps", "-r", UV_LOCK])
        stamp.write_text(wanted)
    return bin_path(UV_VENV, "uv")


def ensure_environment(lock: Path, *, also_accept: tuple[Path, ...] = ()) -> Path:
    """Make .venv exactly the lock, plus the course from this folder, unless it already is.

    ``also_accept``: locks that hold every pin of ``lock`` and more (the test lock for ``lab``),
    so that ``lab`` after ``test`` reinstalls nothing.
    """
    python, stamp = venv_python(), VENV / STAMP
    if python.exists() and stamp.exists() and stamp.read_text() in {fingerprint(x) for x in (lock, *also_accept)}:
        return python
    started, installer = time.monotonic(), uv()
    if not python.exists():
        say(f"Creating the course environment in {VENV.name} (Python {sys.version.split()[0]}) ...")
        run([installer, "venv", "--quiet", "--python", sys.executable, VENV])
    say(f"Installing the pinned packages of {lock.relative_to(HERE)} into {VENV.name} with uv "
        "(first time, or the lock changed) ...")
    stamp.unlink(missing_ok=True)  # a half-made environment is never taken for a finished one
    run([installer, "pip", "sync", "--python", python, "--require-hashes", lock])
    say("Installing the course itself from this folder (editable) ...")
    run([installer, "pip", "install", "--quiet", "--python", python, "--no-deps", "-e", HERE])
    stamp.write_text(fingerprint(lock))
    say(f"The course environment is ready ({time.monotonic() - started:.0f} s).")
    return python


def unlocked_environment(option: str) -> Path:
    """A venv beside .venv resolved from pyproject.toml's ranges alone: newest, or each floor."""
    resolution, environment = UNLOCKED[option], HERE / f".venv-{option[2:]}"
    installer, python = uv(), bin_path(environment, "python")
    say(f"Resolving pyproject.toml afresh ({resolution}, ignoring the lock) into {environment.name} ...")
    run([installer, "venv", "--quiet", "--clear", "--python", sys.executable, environment])
    run([installer, "pip", "install", "--python", python, "--resolution", resolution, "-e", f"{HERE}[test]"])
    return python


def lock(extra: list[str]) -> int:
    """Pin pyproject.toml anew: the test lock, the runtime lock within it, Binder's copy, uv itself.

    The runtime is resolved under the test lock's pins as constraints, so every runtime pin is
    one the tests ran on; one version of a package serves every Python where one can (numpy
    would otherwise take a newer release from 3.12 on, which CI's 3.11 never runs). Existing pins are kept unless ``extra`` says otherwise (``--upgrade``,
    ``--upgrade-package NAME``).
    """
    installer = uv()
    compile_ = [installer, "pip", "compile", "--quiet", "--universal", "--python-version", LOCK_PYTHON,
                "--fork-strategy", "fewest",  # one version of a package for every Python, where one fits all
                "--generate-hashes", "--custom-compile-command", "python3 course.py lock", *extra]
    say(f"Pinning pyproject.toml for Python {LOCK_PYTHON} and newer, every platform ...")
    run([*compile_, "pyproject.toml", "--extra", "test", "-o", TEST_LOCK.relative_to(HERE)], cwd=HERE)
    run([*compile_, "pyproject.toml", "-c", TEST_LOCK.relative_to(HERE), "-o", RUNTIME_LOCK.relative_to(HERE)],
        cwd=HERE)
    run([*compile_, "-", "-o", UV_LOCK.relative_to(HERE)], cwd=HERE, input=b"uv\n")
    BINDER_REQUIREMENTS.write_text("# Binder's packages: a copy of requirements/runtime.txt, written by "
                                   "python3 course.py lock.\n" + RUNTIME_LOCK.read_text())
    say(f"Wrote {TEST_LOCK.relative_to(HERE)}, {RUNTIME_LOCK.relative_to(HERE)}, {UV_LOCK.relative_to(HERE)} "
        f"and {BINDER_REQUIREMENTS.relative_to(HERE)}.")
    return 0


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
    worker. The slowest tests are listed at the end, to see where the time goes.
    """
    if any(arg.startswith(("-n", "--numprocesses", "--dist", "-p")) for arg in rest):
        return []
    return ["-n", str(WORKERS), "--dist", "loadscope", "--no-loadscope-reorder", "--durations=15"]


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("lab", "test", "bench", "lock", "mutants"):
        print(__doc__)
        return 2
    if sys.version_info < (3, 10):
        sys.exit(f"The course needs Python 3.10 or newer; this is {sys.version.split()[0]}.")
    command, rest = argv[0], argv[1:]
    if command == "lock":
        return lock(rest)
    if command == "lab":
        python = ensure_environment(RUNTIME_LOCK, also_accept=(TEST_LOCK,))
        args = [str(python), "-m", "jupyter", "lab", "--notebook-dir", str(HERE),
                "--ServerApp.default_url=/lab/tree/notebooks/00_start_here.ipynb", *rest]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.append("--allow-root")  # containers and CI machines often run as root
    elif command == "bench":
        python = ensure_environment(RUNTIME_LOCK, also_accept=(TEST_LOCK,))
        args = [str(python), str(HERE / "benchmark.py"), *rest]
    elif command == "mutants":
        python = ensure_environment(TEST_LOCK)
        args = [str(python), str(HERE / "tests" / "mutants" / "run.py"), *rest]
    else:
        unlocked = [arg for arg in rest if arg in UNLOCKED]
        if len(unlocked) > 1:
            sys.exit("Choose one of --latest and --lowest.")
        python = unlocked_environment(unlocked[0]) if unlocked else ensure_environment(TEST_LOCK)
        ensure_test_packages()
        busy = "--busy-core" in rest
        rest = [arg for arg in rest if arg != "--busy-core" and arg not in UNLOCKED]
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
