"""The package's shape: no module reaches into another's private names, and no modules import each other."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "labsupport"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(name: str, path: Path):
    """(module imported from, the names imported) for every ``from ... import`` in the module, resolved."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                yield ".".join(base + ([node.module] if node.module else [])), [a.name for a in node.names]
            elif (node.module or "").startswith("labsupport"):
                yield node.module, [a.name for a in node.names]


def test_no_module_imports_another_modules_private_names():
    reached = [f"{name} imports {source}.{imported}" for name, path in _modules().items()
               for source, names in _imports(name, path) for imported in names
               if imported.startswith("_") and source != name]
    assert reached == [], "make these public in the module they belong to, or move them"


def test_no_two_modules_import_each_other():
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        graph[name] = set()
        for source, names in _imports(name, path):
            submodules = {f"{source}.{n}" for n in names} & set(modules)
            if submodules:  # from .experiments import scaling
                graph[name] |= submodules
            elif source in modules and not name.startswith(source + "."):  # a package's own __init__ runs first anyway
                graph[name].add(source)
    cycles, done = [], set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            cycles.append(path[path.index(node):] + [node])
            return
        if node in done:
            return
        for nxt in sorted(graph[node]):
            visit(nxt, path + [node])
        done.add(node)

    for name in sorted(graph):
        visit(name, [])
    assert cycles == [], f"import cycles: {[' -> '.join(c) for c in cycles]}"
