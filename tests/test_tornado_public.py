"""The course uses Tornado through its public interfaces only, so a new Tornado cannot break it quietly.

Three things are refused anywhere in ``labsupport``: a Tornado name that starts with ``_`` reached
through a Tornado module (``tornado.websocket._websocket_mask``, ``from tornado.web import _x``);
inside a class derived from a Tornado class, a ``_`` name Tornado itself defines (overriding or
reading its private state: ``self._reason``, ``def _receive_frame``); and reaching through
``ws_connection`` into the protocol's stream (``ws_connection.stream``).
"""

import ast
import functools
from pathlib import Path

import tornado

PACKAGE = Path(__file__).resolve().parent.parent / "labsupport"


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


@functools.cache
def tornado_private_names() -> frozenset[str]:
    """Every ``_`` name Tornado's own source defines or uses: functions, classes, attributes."""
    names = set()
    for path in Path(tornado.__file__).parent.rglob("*.py"):
        if "test" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute):
                names.add(node.attr)
    return frozenset(name for name in names if private(name))


def tornado_classes(trees: dict[Path, ast.Module]) -> set[str]:
    """Names of the package's classes derived, directly or not, from a Tornado class."""
    derived: set[str] = set()
    while True:
        found = set(derived)
        for tree in trees.values():
            imported = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                        and (node.module or "").startswith("tornado") for alias in node.names}
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef):
                    bases = [ast.unparse(base) for base in node.bases]
                    if any(b.startswith("tornado.") or b in imported or b.split(".")[-1] in derived for b in bases):
                        found.add(node.name)
        if found == derived:
            return derived
        derived = found


def offences(source: str, where: str, tornado_private: frozenset[str], derived: set[str]) -> list[str]:
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tornado"):
            found += [f"{where}:{node.lineno} imports {alias.name}" for alias in node.names if private(alias.name)]
        elif isinstance(node, ast.Attribute) and private(node.attr) and ast.unparse(node).startswith("tornado."):
            found.append(f"{where}:{node.lineno} {ast.unparse(node)}")
        elif isinstance(node, ast.Attribute) and node.attr == "stream" and "ws_connection" in ast.unparse(node.value):
            found.append(f"{where}:{node.lineno} {ast.unparse(node)}")
        elif isinstance(node, ast.ClassDef) and (node.name in derived):
            for inner in ast.walk(node):
                name = inner.name if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef)) else (
                    inner.attr if isinstance(inner, ast.Attribute) else None)
                if name in tornado_private:
                    found.append(f"{where}:{inner.lineno} {node.name} uses Tornado's {name}")
    return found


def scan(extra: dict[str, str] | None = None) -> list[str]:
    sources = {str(path.relative_to(PACKAGE.parent)): path.read_text(encoding="utf-8")
               for path in sorted(PACKAGE.rglob("*.py"))}
    sources.update(extra or {})
    derived = tornado_classes({Path(k): ast.parse(v) for k, v in sources.items()})
    names = tornado_private_names()
    return [offence for where, source in sources.items() for offence in offences(source, where, names, derived)]


def test_labsupport_uses_no_private_tornado_name():
    assert scan() == []


def test_the_scan_finds_each_kind_of_reach():
    planted = {
        "planted/protocol.py": "import tornado.websocket\n"
                               "class Strict(tornado.websocket.WebSocketProtocol13):\n"
                               "    async def _receive_frame(self):\n        self._abort()\n",
        "planted/handler.py": "from tornado.web import RequestHandler\n"
                              "class Polite(RequestHandler):\n    def write_error(self, code, **kw):\n"
                              "        self.finish(self._reason)\n",
        "planted/child.py": "from . import handler\nclass Child(handler.Polite):\n    def get(self):\n"
                            "        self._status_code = 204\n",
        "planted/reach.py": "import tornado.websocket\nmask = tornado.websocket._websocket_mask\n"
                            "def shrink(h):\n    h.ws_connection.stream.socket.setsockopt(1, 7, 8192)\n",
        "planted/fine.py": "import tornado.web\nclass Mine(tornado.web.RequestHandler):\n"
                           "    def _tick(self):\n        self._count = 1\n",   # our own private names: fine
    }
    found = [offence for offence in scan(planted) if offence.startswith("planted/")]
    assert sorted(f.split(":")[0] for f in found) == sorted(
        ["planted/protocol.py"] * 2 + ["planted/handler.py", "planted/child.py"] + ["planted/reach.py"] * 2), found
