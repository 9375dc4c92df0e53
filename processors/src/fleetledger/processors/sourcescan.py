"""A static scan of agent source for what deterministic code must not call.

The calls Temporal's workflow sandbox refuses in deterministic code, found with
:mod:`ast` (the source is parsed, never imported or run):

``D301`` wall clock      ``datetime.now/utcnow/today``, ``date.today``, ``time.time``,
                         ``time.time_ns``, ``time.localtime``, ``time.gmtime``
``D302`` global RNG      module-level ``random.*`` functions, ``numpy.random.*`` functions
``D303`` random UUIDs    ``uuid.uuid1``, ``uuid.uuid4`` (``uuid3``/``uuid5`` are derived
                         from their inputs and are fine)
``D304`` unseeded RNGs   ``random.Random()`` / ``numpy.random.default_rng()`` without a
                         seed, ``random.SystemRandom``, ``os.urandom``, ``secrets.*``
``D305`` set iteration   ``for`` loops and comprehensions over a set (a literal, a set
                         comprehension, ``set(...)``/``frozenset(...)``, or a local name
                         bound to one), and ``list``/``tuple``/``join``/``enumerate`` of one

Names are resolved through the module's imports (``from datetime import datetime as
dt`` makes ``dt.now()`` a wall-clock read).  Pure: the caller reads the files.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

__all__ = ["SourceHit", "scan_source", "scan_sources"]

_WALL_CLOCK = frozenset(
    {
        "datetime.datetime.now",
        "datetime.datetime.utcnow",
        "datetime.datetime.today",
        "datetime.date.today",
        "time.time",
        "time.time_ns",
        "time.localtime",
        "time.gmtime",
        "time.ctime",
        "time.asctime",
    }
)
_RANDOM_FUNCS = frozenset(
    {
        "random",
        "randint",
        "randrange",
        "choice",
        "choices",
        "shuffle",
        "sample",
        "uniform",
        "gauss",
        "normalvariate",
        "getrandbits",
        "randbytes",
        "triangular",
        "betavariate",
        "expovariate",
    }
)
_NUMPY_FUNCS = frozenset({"rand", "randn", "normal", "integers"})
_UUIDS = frozenset({"uuid.uuid1", "uuid.uuid4"})
_SEEDABLE = frozenset({"random.Random", "numpy.random.default_rng", "numpy.random.RandomState"})
_ENTROPY = frozenset({"random.SystemRandom", "os.urandom", "os.getrandom"})
_ORDERING_CONSUMERS = frozenset({"list", "tuple", "enumerate", "next", "iter"})


@dataclass(frozen=True)
class SourceHit:
    """One call or loop of a rule, at ``path:line:col``."""

    rule_id: str
    path: str
    line: int
    col: int
    call: str  # what was found: "datetime.datetime.now", "iteration over a set"
    code: str  # the source line, stripped


class _Scanner(ast.NodeVisitor):
    def __init__(self, path: str, lines: list[str]) -> None:
        self.path = path
        self.lines = lines
        self.aliases: dict[str, str] = {}
        self.set_names: list[set[str]] = [set()]
        self.hits: list[SourceHit] = []

    # -- names
    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            if a.asname is not None:
                self.aliases[a.asname] = a.name
            else:
                top = a.name.split(".", 1)[0]
                self.aliases[top] = top

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module is None or node.level:
            return
        for a in node.names:
            self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"

    def qualified(self, node: ast.expr) -> str | None:
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        root = self.aliases.get(node.id)
        if root is None:
            return None
        return ".".join([root, *reversed(parts)])

    def hit(self, rule_id: str, node: ast.AST, call: str) -> None:
        line = getattr(node, "lineno", 1)
        code = self.lines[line - 1].strip() if 0 < line <= len(self.lines) else ""
        self.hits.append(
            SourceHit(rule_id, self.path, line, getattr(node, "col_offset", 0), call, code)
        )

    # -- scopes (set-bound names are tracked per function)
    def _scoped(self, node: ast.AST) -> None:
        self.set_names.append(set())
        self.generic_visit(node)
        self.set_names.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._scoped(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._scoped(node)

    def is_set(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Set | ast.SetComp):
            return True
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return node.func.id in ("set", "frozenset") and node.func.id not in self.aliases
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr | ast.BitAnd | ast.Sub):
            return self.is_set(node.left) and self.is_set(node.right)
        if isinstance(node, ast.Name):
            return any(node.id in scope for scope in self.set_names)
        return False

    def visit_Assign(self, node: ast.Assign) -> None:
        is_set = self.is_set(node.value)
        for target in node.targets:
            if isinstance(target, ast.Name):
                if is_set:
                    self.set_names[-1].add(target.id)
                else:
                    self.set_names[-1].discard(target.id)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if isinstance(node.target, ast.Name) and node.value is not None:
            if self.is_set(node.value):
                self.set_names[-1].add(node.target.id)
            else:
                self.set_names[-1].discard(node.target.id)
        self.generic_visit(node)

    # -- findings
    def visit_For(self, node: ast.For) -> None:
        if self.is_set(node.iter):
            self.hit("D305", node, "iteration over a set")
        self.generic_visit(node)

    def visit_AsyncFor(self, node: ast.AsyncFor) -> None:
        if self.is_set(node.iter):
            self.hit("D305", node, "iteration over a set")
        self.generic_visit(node)

    def visit_comprehension(self, node: ast.comprehension) -> None:
        if self.is_set(node.iter):
            self.hit("D305", node.iter, "iteration over a set")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        name = self.qualified(node.func)
        if name is not None:
            self.call(node, name)
        elif isinstance(node.func, ast.Name) and node.func.id in _ORDERING_CONSUMERS:
            if node.args and self.is_set(node.args[0]):
                self.hit("D305", node, f"{node.func.id}() of a set")
        elif (
            isinstance(node.func, ast.Attribute)
            and node.func.attr == "join"
            and node.args
            and self.is_set(node.args[0])
        ):
            self.hit("D305", node, "join() of a set")
        self.generic_visit(node)

    def call(self, node: ast.Call, name: str) -> None:
        if name in _WALL_CLOCK:
            self.hit("D301", node, name)
        elif name in _UUIDS:
            self.hit("D303", node, name)
        elif name in _SEEDABLE:
            if not node.args and not node.keywords:
                self.hit("D304", node, f"{name}() without a seed")
        elif name in _ENTROPY or name.startswith("secrets."):
            self.hit("D304", node, name)
        elif _global_random(name):
            self.hit("D302", node, name)


def _global_random(name: str) -> bool:
    if name.startswith("random."):
        return name.split(".", 1)[1] in _RANDOM_FUNCS
    if name.startswith("numpy.random."):
        return name.rsplit(".", 1)[1] in _RANDOM_FUNCS | _NUMPY_FUNCS
    return False


def scan_source(text: str, path: str) -> list[SourceHit]:
    """Hits in one module's source, in line order; a file that does not parse has none
    (``SyntaxError`` is left to the caller to report)."""
    tree = ast.parse(text, filename=path)
    scanner = _Scanner(path, text.splitlines())
    scanner.visit(tree)
    return sorted(scanner.hits, key=lambda h: (h.line, h.col, h.rule_id))


def scan_sources(sources: Mapping[str, str]) -> Iterator[SourceHit]:
    """Hits of several modules (``{path: text}``), by path then line."""
    for path in sorted(sources):
        yield from scan_source(sources[path], path)
