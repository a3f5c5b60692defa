"""course.py: the README's first command serves JupyterLab; the environment comes from the lock."""

import json
import os
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import psutil
import pytest

from conftest import jupyter_url, scaled

ROOT = Path(__file__).resolve().parent.parent


def get(url: str):
    with urllib.request.urlopen(url, timeout=scaled(5)) as response:
        return response.status, response.read()


def test_course_lab_serves_jupyterlab_with_the_chapters(tmp_path):
    process = psutil.Popen(
        [sys.executable, str(ROOT / "course.py"), "lab", "--no-browser", "--port=0",
         "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=course-test"],
        cwd=ROOT, env={**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        try:
            base = jupyter_url(process, tmp_path, "course-test", scaled(90))
        except RuntimeError as error:
            pytest.fail(f"course.py lab did not serve JupyterLab: {error}")
        status, _ = get(f"{base}/api/status?token=course-test")
        assert status == 200
        status, page = get(f"{base}/lab/tree/notebooks/00_start_here.ipynb?token=course-test")
        assert status == 200 and b"JupyterLab" in page
        _, listing = get(f"{base}/api/contents/notebooks?token=course-test")
        names = {item["name"] for item in json.loads(listing)["content"]}
        assert {"00_start_here.ipynb", "01_pull_and_push.ipynb"} <= names
        _, specs = get(f"{base}/api/kernelspecs?token=course-test")
        assert "python3" in json.loads(specs)["kernelspecs"]
    finally:
        try:
            family = [process] + process.children(recursive=True)
        except psutil.NoSuchProcess:
            family = []
        for member in family:
            member.terminate()
        _, alive = psutil.wait_procs(family, timeout=scaled(10))
        for member in alive:
            member.kill()


def test_busy_core_option_runs_the_tests_beside_a_spinning_process_and_stops_it():
    before = {p.pid for p in psutil.process_iter()}
    done = subprocess.run([sys.executable, str(ROOT / "course.py"), "test", "--busy-core", "tests/test_sse_codec.py", "-q"],
                          cwd=ROOT, capture_output=True, text=True, timeout=scaled(300))
    assert done.returncode == 0, done.stdout[-2000:]
    assert "Keeping one core busy" in done.stdout and "passed" in done.stdout
    spinners = [p for p in psutil.process_iter(["cmdline", "cwd"]) if p.pid not in before  # ours: started here
                and "while True: pass" in " ".join(p.info["cmdline"] or []) and p.info["cwd"] == str(ROOT)]
    assert spinners == [], "the busy process outlived the tests"


def test_the_test_command_runs_on_workers_unless_told_otherwise():
    course = import_course()
    assert course.parallel([]) == ["-n", str(course.WORKERS), "--dist", "loadscope", "--no-loadscope-reorder",
                                   "--durations=15"]
    assert course.parallel(["tests/test_wire.py", "-x"])[:2] == ["-n", str(course.WORKERS)]
    assert course.parallel(["-n", "0"]) == [] and course.parallel(["-p", "no:xdist"]) == []


def import_course():
    sys.path.insert(0, str(ROOT))
    try:
        import course
    finally:
        sys.path.remove(str(ROOT))
    return course


def fake_environment(course, monkeypatch, tmp_path, stamp: str | None) -> list:
    """Point course.py at an empty environment in tmp_path and record the setup steps it would run."""
    monkeypatch.setattr(course, "VENV", tmp_path / "venv")
    python = course.venv_python()
    python.parent.mkdir(parents=True)
    python.touch()
    if stamp is not None:
        (course.VENV / course.STAMP).write_text(stamp)
    steps = []
    monkeypatch.setattr(course, "uv", lambda: "uv")
    monkeypatch.setattr(course, "run", lambda command, **options: steps.append([str(part) for part in command]))
    return steps


def test_the_environment_is_synced_from_the_lock_then_the_course_added_outside_it(monkeypatch, tmp_path, capsys):
    course = import_course()
    steps = fake_environment(course, monkeypatch, tmp_path, stamp="test.txt an-older-lock")
    course.ensure_environment(course.TEST_LOCK)
    python = str(course.venv_python())
    assert steps == [["uv", "pip", "sync", "--python", python, "--require-hashes", str(course.TEST_LOCK)],
                     ["uv", "pip", "install", "--quiet", "--python", python, "--no-deps", "-e", str(ROOT)]]
    assert (course.VENV / course.STAMP).read_text() == course.fingerprint(course.TEST_LOCK)
    assert "requirements/test.txt" in capsys.readouterr().out  # it says what it installs
    course.ensure_environment(course.TEST_LOCK)
    assert len(steps) == 2, "an environment at the current lock is not installed again"


def test_lab_accepts_the_test_environment_and_test_does_not_accept_the_runtime_one(monkeypatch, tmp_path):
    course = import_course()
    steps = fake_environment(course, monkeypatch, tmp_path, stamp=course.fingerprint(course.TEST_LOCK))
    course.ensure_environment(course.RUNTIME_LOCK, also_accept=(course.TEST_LOCK,))
    assert steps == [], "lab after test (or inside the tests) must not remove the test tools"
    (course.VENV / course.STAMP).write_text(course.fingerprint(course.RUNTIME_LOCK))
    course.ensure_environment(course.TEST_LOCK)
    assert steps[0][:3] == ["uv", "pip", "sync"] and steps[0][-1] == str(course.TEST_LOCK)


def test_latest_and_lowest_resolve_pyproject_afresh_in_their_own_environments(monkeypatch, tmp_path):
    course = import_course()
    steps = fake_environment(course, monkeypatch, tmp_path, stamp=None)
    for option, resolution in (("--latest", "highest"), ("--lowest", "lowest-direct")):
        steps.clear()
        python = course.unlocked_environment(option)
        assert python.parent.parent == ROOT / f".venv-{option[2:]}"
        assert steps[-1][-4:] == ["--resolution", resolution, "-e", f"{ROOT}[test]"]


def test_the_lock_covers_the_pythons_the_project_declares():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert declared == f">={import_course().LOCK_PYTHON}"
