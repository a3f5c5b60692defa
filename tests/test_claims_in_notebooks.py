"""Claims in the notebooks are data with ids, never allow for the lab's own lateness, and each
chapter has its mutants."""

import ast
import re
from pathlib import Path

import nbformat

from mutants import every_mutant
from mutants.run import CLAIM_FORMS, claim_calls

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
LATENESS = re.compile(r"lab_late|LoopWatch|again_if_late|lab_behind|late_p95|late_max")


def code(notebook: Path) -> str:
    nb = nbformat.read(notebook, as_version=4)
    return "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")


def test_no_bound_anywhere_refers_to_the_labs_own_lateness():
    places = [*NOTEBOOKS, *(ROOT / "labsupport").rglob("*.py")]
    found = [f"{p.relative_to(ROOT)}: {m.group()}" for p in places
             for m in [LATENESS.search(code(p) if p.suffix == ".ipynb" else p.read_text())] if m]
    assert not found, found


def test_every_claim_has_a_literal_id_used_once():
    for notebook in NOTEBOOKS:
        calls = list(claim_calls(code(notebook)))
        assert not [c for c in calls if c.func.id == "claim"], f"{notebook.stem} still uses claim(...) without an id"
        firsts = [c.args[0] if c.args else None for c in calls if c.func.id in CLAIM_FORMS]
        assert all(isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value for a in firsts), \
            f"{notebook.stem}: a claim whose id is not a literal string"
        ids = [a.value for a in firsts]
        assert len(ids) == len(set(ids)), f"{notebook.stem}: an id used twice: {sorted(ids)}"


def test_the_mutation_suite_covers_every_chapter():
    with_mutants = {m.notebook for m in every_mutant().values()}
    assert with_mutants == {nb.stem for nb in NOTEBOOKS}
