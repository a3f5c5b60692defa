"""The repository's own promises: clean notebooks, Binder built from the lock, a runnable course."""

import json
import os
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_notebooks_are_stored_without_outputs():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                assert not cell["outputs"] and cell["execution_count"] is None, f"{path.name} has outputs"


def test_binder_builds_the_runtime_lock_on_a_python_it_covers():
    """repo2docker reads only .binder/ when it exists; an environment.yml there would win over requirements.txt."""
    binder = ROOT / ".binder"
    assert sorted(path.name for path in binder.iterdir()) == ["postBuild", "requirements.txt", "runtime.txt"]
    header, copied = (binder / "requirements.txt").read_text().split("\n", 1)
    assert header.startswith("#") and copied == (ROOT / "requirements" / "runtime.txt").read_text(), \
        ".binder/requirements.txt is not the runtime lock: run python3 course.py lock"
    python = re.fullmatch(r"python-(3\.\d+)\n", (binder / "runtime.txt").read_text())  # repo2docker wants x.y
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    floor = re.fullmatch(r">=(3\.\d+)", declared)
    assert python and floor and tuple(map(int, python[1].split("."))) >= tuple(map(int, floor[1].split(".")))


def test_binder_installs_the_course_itself_after_the_pinned_packages():
    """requirements.txt names nothing local, so repo2docker installs it before copying the repository
    (a commit that leaves the lock alone reuses that layer); postBuild then adds the course alone."""
    lines = (ROOT / ".binder" / "requirements.txt").read_text().splitlines()
    assert not [line for line in lines if line.lstrip().startswith(("-e", "-r", "-c", "."))]
    post_build = ROOT / ".binder" / "postBuild"
    assert os.access(post_build, os.X_OK) and "set -e" in post_build.read_text()
    assert re.search(r"pip\S* install .*--no-deps -e \.$", post_build.read_text(), re.M)


def test_readme_quick_start_holds_exactly_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1]
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", quick, re.S).group(1)
    commands = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert commands == ["python3 course.py lab", "python3 course.py test"]
    assert "python3 course.py test" in (ROOT / ".ci" / "run").read_text()
    for documented in ("python3 course.py lock", "python3 course.py test --latest", "python3 course.py test --lowest"):
        assert documented in readme, f"the README does not say what {documented} does"


def test_every_chapter_is_listed_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for path in (ROOT / "notebooks").glob("*.ipynb"):
        assert path.name in readme, f"{path.name} is missing from the README's chapter list"
