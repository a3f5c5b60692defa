"""The instructor guide cannot drift from the notebooks, and its answer key covers every chapter."""

import json
import re
from pathlib import Path

import pytest

from labsupport.exercises import answer_key, exercises_of

ROOT = Path(__file__).resolve().parent.parent
GUIDE = (ROOT / "INSTRUCTORS.md").read_text()
REFERENCE = re.compile(r"\[(\d\d) › ([^\]]+)\]")


def headings(number: str) -> set[str]:
    [path] = (ROOT / "notebooks").glob(f"{number}_*.ipynb")
    found = set()
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] == "markdown":
            found |= {line.lstrip("#").strip() for line in "".join(cell["source"]).splitlines()
                      if line.startswith("#")}
    return found


def test_the_guide_names_sections_at_all():
    assert len(REFERENCE.findall(GUIDE)) >= 10


@pytest.mark.parametrize("number, heading", sorted(set(REFERENCE.findall(GUIDE))))
def test_every_section_the_guide_names_exists(number, heading):
    assert heading in headings(number), f"INSTRUCTORS.md names '{heading}', which chapter {number} no longer has"


def test_the_routes_add_up():
    for table in re.findall(r"\n((?:\|.*\|\n)+)", GUIDE):
        rows = [row.strip("|").split("|") for row in table.strip().splitlines()[2:]]
        minutes = [int(cells[-2] if len(cells) == 3 else cells[0]) for cells in rows[:-1]
                   if (cells[-2] if len(cells) == 3 else cells[0]).strip().isdigit()]
        total = rows[-1]
        stated = next((int(c.strip(" *")) for c in total if c.strip(" *").isdigit()), None)
        if stated is not None and minutes:
            assert sum(minutes) == stated, f"a route's minutes add up to {sum(minutes)}, not {stated}"


def test_the_answer_key_shows_every_exercise_of_a_chapter(capsys):
    answer_key("04")
    out = capsys.readouterr().out
    assert all(f"{name} · " in out for name in exercises_of("04")) and "Solution:" in out
