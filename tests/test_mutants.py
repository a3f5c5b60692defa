"""The mutation suite: every claim of a chapter with mutants is killed by at least one of them.

Each chapter's notebook runs once as it is and once per group of its mutants
(``tests/mutants/run.py``; ``python3 course.py mutants`` runs the same and prints the table).
"""

import pytest

from mutants import every_mutant
from mutants.run import chapter

NOTEBOOKS = sorted({m.notebook for m in every_mutant().values()})


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_every_claim_has_a_killing_mutant(notebook):
    mutants = [m for m in every_mutant().values() if m.notebook == notebook]
    report = chapter(notebook, mutants)
    text = "\n".join(report.lines())
    print(text)
    assert report.claims, f"{notebook}: the baseline run recorded no claim"
    assert all(r["outcome"] == "held" for r in report.baseline.values()), text
    assert len(report.covered) == len(report.claims) and not report.missed, text
