"""A change-the-code exercise's template has one home: its notebook cell, tagged ``exercise-template``.

The tests take every template from there, so what they check is what a learner starts from: edit
the cell and the tests check the new template. A template cell ends with ``qN.check(name)``; the
tagged cells of a notebook run in order in one namespace (a later one may use an earlier one's
imports), each without its ``check`` call.
"""

import ast
from pathlib import Path

import nbformat

TAG = "exercise-template"
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _check_call(statement: ast.stmt) -> tuple[str, str] | None:
    """``("q5", "my_poll")`` for the statement ``q5.check(my_poll)``, else None."""
    call = statement.value if isinstance(statement, ast.Expr) else None
    if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "check"
            and isinstance(call.func.value, ast.Name) and len(call.args) == 1 and isinstance(call.args[0], ast.Name)):
        return call.func.value.id, call.args[0].id
    return None


def templates(notebook: str) -> dict[str, tuple[object, object]]:
    """Exercise variable (``"q5"``) -> (the exercise, what its template cell passes to its check, unchanged)."""
    namespace: dict = {"__name__": f"template_of_{notebook}"}
    found = {}
    for cell in nbformat.read(NOTEBOOKS / f"{notebook}.ipynb", as_version=4).cells:
        if TAG not in cell.metadata.get("tags", []):
            continue
        tree = ast.parse(cell.source)
        checks = [c for c in map(_check_call, tree.body) if c]
        assert len(checks) == 1, f"a template cell of {notebook} ends with one qN.check(name): {cell.source[:80]!r}"
        tree.body = [s for s in tree.body if not _check_call(s)]
        exec(compile(tree, f"<{notebook} template>", "exec"), namespace)
        exercise, name = checks[0]
        found[exercise] = (namespace[exercise], namespace[name])
    return found


def every_template() -> list[tuple[str, str, object, object]]:
    """(notebook, exercise variable, exercise, template) for every tagged cell of every notebook."""
    return [(path.stem, q, exercise, template)
            for path in sorted(NOTEBOOKS.glob("*.ipynb"))
            for q, (exercise, template) in templates(path.stem).items()]
