"""The repository's own promises: clean notebooks, agreeing environments, a runnable course."""

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_notebooks_are_stored_without_outputs():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                assert not cell["outputs"] and cell["execution_count"] is None, f"{path.name} has outputs"


def name_of(requirement: str) -> str:
    return re.split(r"[<>=!~ ]", requirement.strip())[0].lower().replace("_", "-")


def test_environment_yml_and_requirements_txt_name_the_same_packages():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    pip_names = {name_of(line) for line in lines if line.strip() and not line.startswith("#")}
    conda_names = set()
    for dependency in yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]:
        entries = dependency["pip"] if isinstance(dependency, dict) else [dependency]
        conda_names |= {name_of(e) for e in entries if not e.startswith("-e")}
    conda_names -= {"python", "pip"}
    assert pip_names == conda_names, f"only in requirements.txt: {pip_names - conda_names}; " \
                                     f"only in environment.yml: {conda_names - pip_names}"


def test_binder_installs_the_course_package_itself():
    assert "- -e ." in (ROOT / "environment.yml").read_text()


def test_readme_quick_start_holds_exactly_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1]
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", quick, re.S).group(1)
    commands = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert commands == ["python3 course.py lab", "python3 course.py test"]
    assert "python3 course.py test" in (ROOT / ".ci" / "run").read_text()


def test_every_chapter_is_listed_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for path in (ROOT / "notebooks").glob("*.ipynb"):
        assert path.name in readme, f"{path.name} is missing from the README's chapter list"
