"""The README's first command really serves JupyterLab on the course."""

import json
import os
import subprocess
import sys
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
    sys.path.insert(0, str(ROOT))
    try:
        import course
    finally:
        sys.path.remove(str(ROOT))
    assert course.parallel([]) == ["-n", str(course.WORKERS), "--dist", "loadscope", "--no-loadscope-reorder"]
    assert course.parallel(["tests/test_wire.py", "-x"])[:2] == ["-n", str(course.WORKERS)]
    assert course.parallel(["-n", "0"]) == [] and course.parallel(["-p", "no:xdist"]) == []
