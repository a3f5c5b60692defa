"""The public face: one documented import path per thing, and every exported name importable."""

import ast
import importlib
import json
from pathlib import Path

import pytest

import labsupport
from labsupport.lab import LabCall

ROOT = Path(__file__).resolve().parent.parent
CHAPTER_MODULES = ["polling", "pull_push", "longpolling", "sse", "websocket", "websocket_faults", "queues", "queues_faults", "choosing",
                   "scaling", "scaling_stage", "scaling_faults"]


def test_every_exported_name_exists_and_nothing_is_exported_twice():
    assert len(labsupport.__all__) == len(set(labsupport.__all__))
    for name in labsupport.__all__:
        assert hasattr(labsupport, name), name
    public = {n for n in vars(labsupport) if not n.startswith("_") and not isinstance(getattr(labsupport, n), type(labsupport))}
    assert public == set(labsupport.__all__)


def test_chapter_experiments_come_from_their_chapter_module_only():
    for module in CHAPTER_MODULES:
        chapter = importlib.import_module(f"labsupport.experiments.{module}")
        runs = [n for n, v in vars(chapter).items() if isinstance(v, LabCall) and v.__module__ == chapter.__name__]
        for name in runs:
            assert name not in labsupport.__all__, f"{name} has two import paths"


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_import_each_name_by_its_documented_path(notebook):
    cells = json.loads(notebook.read_text())["cells"]
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        tree = ast.parse("".join(cell["source"]))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "labsupport":
                for alias in node.names:
                    assert alias.name in labsupport.__all__ or alias.name in {"server_process"}, \
                        f"{notebook.name}: {alias.name} is not on the public face; import it from its module"
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("labsupport."):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), \
                        f"{notebook.name}: {node.module} has no {alias.name}"


def test_a_lab_call_binds_positional_arguments_and_defaults_for_its_estimate():
    async def run(interval, *, duration=2.0):
        return interval

    seen = []
    call = LabCall(run, expected=lambda arguments: seen.append(arguments) or 1.0)
    assert call.seconds(0.5) == 1.0 and seen[-1] == {"interval": 0.5, "duration": 2.0}
    with pytest.raises(TypeError):
        call.seconds(0.5, nonsense=1)
