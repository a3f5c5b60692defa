"""Claims in the notebooks are data with ids, never allow for the lab's own lateness, and each
chapter whose claims are data has its mutants."""

import ast
import re
from pathlib import Path

import nbformat

from mutants import every_mutant

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CLAIM_FORMS = ("claim_near", "claim_between", "claim_at_most", "claim_at_least", "claim_equal")
# Chapters whose claims still use the older form, without ids or mutants: to convert, then remove from here.
NOT_YET_DATA = {"05_websockets", "06_message_queues", "08_in_production", "09_scaling_out"}
LATENESS = re.compile(r"lab_late|LoopWatch|again_if_late|lab_behind|late_p95|late_max")


def code(notebook: Path) -> str:
    nb = nbformat.read(notebook, as_version=4)
    return "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")


def claim_calls(source: str):
    tree = ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            yield node


def test_no_bound_anywhere_refers_to_the_labs_own_lateness():
    places = [*NOTEBOOKS, *(ROOT / "labsupport").rglob("*.py")]
    found = [f"{p.relative_to(ROOT)}: {m.group()}" for p in places
             for m in [LATENESS.search(code(p) if p.suffix == ".ipynb" else p.read_text())] if m]
    assert not found, found


def test_every_claim_of_a_converted_chapter_has_a_literal_id_used_once():
    for notebook in NOTEBOOKS:
        if notebook.stem in NOT_YET_DATA:
            continue
        calls = list(claim_calls(code(notebook)))
        assert not [c for c in calls if c.func.id == "claim"], f"{notebook.stem} still uses claim(...) without an id"
        firsts = [c.args[0] if c.args else None for c in calls if c.func.id in CLAIM_FORMS]
        assert all(isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value for a in firsts), \
            f"{notebook.stem}: a claim whose id is not a literal string"
        ids = [a.value for a in firsts]
        assert len(ids) == len(set(ids)), f"{notebook.stem}: an id used twice: {sorted(ids)}"


def test_the_mutation_suite_covers_exactly_the_converted_chapters():
    with_mutants = {m.notebook for m in every_mutant().values()}
    assert with_mutants == {nb.stem for nb in NOTEBOOKS} - NOT_YET_DATA
