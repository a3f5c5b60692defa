"""Run the mutation suite: each claim shown to fail against a realistic bug.

    python3 course.py mutants [NOTEBOOK ...]

For each chapter with mutants, its notebook runs once as it is (the baseline) and once per
group of mutants, in a fresh kernel, with claims recorded rather than raised
(``COURSE_CLAIMS=record``). A run stops after the last cell that holds a claim its mutants
target. A claim is *killed* by a mutant that names it when it held, judged, in the baseline
and failed, judged, with the mutant; a crash, a timeout or "not judged" is not a kill. A group
whose run left a target not judged (other programs held the lab back) runs once more.

The test command skips the baseline (``baseline=False``): the notebook's own run, in the same
command, fails on any claim that does not hold. The chapter's claims are then the ids its
notebook and its exercises declare, read from their source.
"""

from __future__ import annotations

import ast
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbclient import NotebookClient

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
NOTEBOOKS = ROOT / "notebooks"
sys.path.insert(0, str(TESTS))

from kernels import UnixSocketKernelManager  # noqa: E402
from mutants import Mutant, every_mutant  # noqa: E402

CELL_TIMEOUT = 300
CLAIM_FORMS = {"claim_near", "claim_between", "claim_at_most", "claim_at_least", "claim_equal"}


def claim_calls(source: str):
    """Every call of a plain name in ``source`` (a notebook's code, its magics left out)."""
    tree = ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            yield node


def notebook_code(notebook: str) -> str:
    nb = nbformat.read(NOTEBOOKS / f"{notebook}.ipynb", as_version=4)
    return "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")


def declared_claims(notebook: str) -> list[str]:
    """The ids of the chapter's claims, as its source declares them: the notebook's ``claim_*`` calls
    and the ``Measurement(id=...)`` of its exercises modules (``labsupport/exercises/chNN*.py``)."""
    ids = [c.args[0].value for c in claim_calls(notebook_code(notebook))
           if c.func.id in CLAIM_FORMS and c.args and isinstance(c.args[0], ast.Constant)]
    for module in sorted((ROOT / "labsupport" / "exercises").glob(f"ch{notebook[:2]}*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Measurement":
                ids += [k.value.value for k in node.keywords if k.arg == "id" and isinstance(k.value, ast.Constant)]
    return list(dict.fromkeys(ids))


def claim_cells(nb, ids: set[str]) -> int:
    """The index of the last cell that names one of ``ids`` (every cell if one is named nowhere)."""
    last, found = -1, set()
    for index, cell in enumerate(nb.cells):
        named = {i for i in ids if f'"{i}"' in cell.source}
        if named:
            last, found = index, found | named
    return last if found == ids else len(nb.cells) - 1


def execute(notebook: str, mutants: tuple[Mutant, ...] = (), ids: set[str] | None = None) -> dict[str, dict]:
    """Run ``notebook`` (a stem) with ``mutants`` applied, up to the cells of ``ids``; each claim's record by id."""
    nb = nbformat.read(NOTEBOOKS / f"{notebook}.ipynb", as_version=4)
    if ids:
        nb.cells = nb.cells[:claim_cells(nb, ids) + 1]
    with tempfile.TemporaryDirectory(prefix="course-mutant-") as scratch:
        out = Path(scratch) / "claims.json"
        nb.cells.append(nbformat.v4.new_code_cell(
            f"from labsupport.claims import write_records\nwrite_records({str(out)!r})\n"
            "from labsupport import shutdown\nshutdown()"))
        env = {"COURSE_CLAIMS": "record", "COURSE_MUTANTS": ",".join(m.name for m in mutants),
               "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS), str(TESTS / "mutants" / "boot"),
                                              os.environ.get("PYTHONPATH", "")])}
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        try:
            NotebookClient(nb, km=UnixSocketKernelManager(kernel_name="python3"), timeout=CELL_TIMEOUT,
                           allow_errors=True, resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        records = json.loads(out.read_text()) if out.exists() else []
    return {r["id"]: r for r in records}  # the last outcome of each claim


@dataclass
class ChapterReport:
    notebook: str
    claims: list[str]
    baseline: dict[str, dict] | None     # each claim's record without mutants (None: not run)
    killed_by: dict[str, list[str]] = field(default_factory=dict)   # claim id -> mutants that killed it
    missed: list[tuple[str, str, str]] = field(default_factory=list)  # (mutant, claim id, outcome seen)

    @property
    def covered(self) -> list[str]:
        return [i for i in self.claims if self.killed_by.get(i)]

    def lines(self) -> list[str]:
        out = [f"{self.notebook}: {len(self.covered)} of {len(self.claims)} claims killed"]
        for claim_id in self.claims:
            before = "not run" if self.baseline is None else self.baseline.get(claim_id, {}).get("outcome", "absent")
            killers = ", ".join(self.killed_by.get(claim_id, [])) or "NO KILLING MUTANT"
            out.append(f"  {claim_id:28} baseline {before:10} killed by: {killers}")
        for mutant, claim_id, seen in self.missed:
            out.append(f"  mutant {mutant} did not kill {claim_id} ({seen})")
        return out


def chapter(notebook: str, mutants: list[Mutant], *, baseline: bool = True) -> ChapterReport:
    """The baseline run (unless ``baseline=False``) and one run per group of ``mutants``."""
    if baseline:
        before = execute(notebook)
        report = ChapterReport(notebook, list(before), before)
    else:
        report = ChapterReport(notebook, declared_claims(notebook), None)
    groups: dict[int, list[Mutant]] = {}
    for mutant in mutants:
        groups.setdefault(mutant.group if mutant.group else -len(groups) - 1, []).append(mutant)
    for group in groups.values():
        targets = {i for m in group for i in m.kills}
        seen = execute(notebook, tuple(group), targets)
        if any(seen.get(i, {}).get("outcome") == "not judged" for i in targets):
            seen = execute(notebook, tuple(group), targets)  # other programs held the lab back: once more
        for mutant in group:
            for claim_id in mutant.kills:
                before = {"outcome": "held"} if report.baseline is None else report.baseline.get(claim_id, {})
                after = seen.get(claim_id, {})
                if before.get("outcome") == "held" and after.get("outcome") == "failed":
                    report.killed_by.setdefault(claim_id, []).append(mutant.name)
                else:
                    report.missed.append((mutant.name, claim_id,
                                          f"baseline {before.get('outcome', 'absent')}, "
                                          f"mutant {after.get('outcome', 'absent')}"))
    return report


def suite(notebooks: list[str] | None = None) -> list[ChapterReport]:
    by_notebook: dict[str, list[Mutant]] = {}
    for mutant in every_mutant().values():
        by_notebook.setdefault(mutant.notebook, []).append(mutant)
    chosen = notebooks or sorted(by_notebook)
    return [chapter(nb, by_notebook.get(nb, [])) for nb in chosen]


def main(argv: list[str]) -> int:
    reports = suite(argv or None)
    for report in reports:
        print("\n".join(report.lines()))
    total = sum(len(r.claims) for r in reports)
    covered = sum(len(r.covered) for r in reports)
    print(f"claims with a killing mutant: {covered} of {total}")
    return 0 if covered == total and not any(r.missed for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
