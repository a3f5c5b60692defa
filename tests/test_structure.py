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


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (a ``from .x import y`` of a module names that module)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        graph[name] = set()
        for source, names in _imports(name, path):
            submodules = {f"{source}.{n}" for n in names} & set(modules)
            graph[name] |= submodules or ({source} if source in modules and source != name else set())
    return graph


def test_no_module_imports_another_modules_private_names():
    reached = [f"{name} imports {source}.{imported}" for name, path in _modules().items()
               for source, names in _imports(name, path) for imported in names
               if imported.startswith("_") and source != name]
    assert reached == [], "make these public in the module they belong to, or move them"


def test_no_two_modules_import_each_other():
    # a package's own __init__ runs first anyway: importing it closes no cycle
    graph = {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in _import_graph().items()}
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


# The layers, bottom first (the design's order, DESIGN.md): a module imports only from its own layer
# and the layers below. The sans-I/O protocol code stands alone at the bottom, as h11's does.
LAYERS = [
    ("sans-I/O", ["labsupport.patterns.sse_codec", "labsupport.patterns.rfc6455", "labsupport.capture"]),
    ("lab", ["labsupport.lab", "labsupport.serving", "labsupport.progress", "labsupport.collector",
             "labsupport.machine", "labsupport.wire", "labsupport.pcap", "labsupport.feed", "labsupport.record",
             "labsupport.results", "labsupport.claims", "labsupport.checks", "labsupport.environment"]),
    ("processes", ["labsupport.server_process", "labsupport.broker", "labsupport.cluster",
                   "labsupport.named_processes"]),
    ("patterns", ["labsupport.patterns"]),
    ("experiments", ["labsupport.experiments", "labsupport.costs"]),
    ("showing", ["labsupport.plots", "labsupport.widgets", "labsupport.browser", "labsupport.wireshark",
                 "labsupport.source", "labsupport.decision_panel"]),
    ("chapters", ["labsupport.exercises"]),
    ("face", ["labsupport"]),
]


def layer_of(module: str) -> int:
    """The index of the module's layer: the longest prefix of its name that a layer lists."""
    matches = [(len(prefix), i) for i, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    if not matches:
        raise KeyError(f"{module} is in no layer: add it to LAYERS and to labsupport/README.md")
    return max(matches)[1]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import from a layer above the importing module's own."""
    return [f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
            for name, targets in sorted(graph.items()) for target in sorted(targets)
            if layer_of(target) > layer_of(name)]


def test_every_module_has_a_layer_and_imports_only_from_its_own_or_below():
    assert upward_imports(_import_graph()) == []


def test_an_import_from_a_layer_above_is_reported():
    assert upward_imports({"labsupport.patterns.sse": {"labsupport.experiments.core"},
                           "labsupport.experiments.sse": {"labsupport.patterns.sse"}}) == [
        "labsupport.patterns.sse (patterns) imports labsupport.experiments.core (experiments)"]
