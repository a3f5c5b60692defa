"""The mutation suite: every claim of a chapter with mutants is killed by at least one of them.

Each chapter's notebook runs once as it is and once per group of its mutants
(``tests/mutants/run.py``; ``python3 course.py mutants`` runs the same and prints the table).
Each chapter is a class of its own, so that parallel workers take chapters side by side.
"""

from mutants import every_mutant
from mutants.run import chapter

NOTEBOOKS = sorted({m.notebook for m in every_mutant().values()})


def check_chapter(notebook: str) -> None:
    mutants = [m for m in every_mutant().values() if m.notebook == notebook]
    report = chapter(notebook, mutants, baseline=False)
    text = "\n".join(report.lines())
    print(text)
    assert report.claims, f"{notebook}: the chapter declares no claim"
    assert len(report.covered) == len(report.claims) and not report.missed, text


for _notebook in NOTEBOOKS:
    _name = "TestMutants_" + _notebook.replace("-", "_")
    globals()[_name] = type(_name, (), {
        "test_every_claim_has_a_killing_mutant": lambda self, nb=_notebook: check_chapter(nb)})
