"""The import graph keeps the architecture: data flows one way, and no two modules need each other.

Read from the source with ``ast`` (nothing is imported), every ``import`` counts: module level, inside functions
(lazy imports), and under ``if TYPE_CHECKING:`` for the layering rules (a type from a later stage is still a
dependency on it). Rules:

1. the core (``reenact``) imports no stage (``meta_learning``, ``finetune``, ``puppeteer``), except the front-door
   modules in :data:`FRONT_DOOR`, which exist to offer the stages to users;
2. a stage imports no later stage (``meta_learning`` < ``finetune`` < ``puppeteer``);
3. no import cycle between modules (``TYPE_CHECKING`` imports left out: they never run).

:data:`KNOWN` lists the imports that still break a rule, each with the reason; they are left out of all three
checks, and an entry that no longer exists fails the test, so the list only shrinks.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = {"reenact": 0, "meta_learning": 1, "finetune": 2, "puppeteer": 3}  # the data flow's order
FRONT_DOOR = ("reenact.api", "reenact.cli", "reenact.app", "reenact.demo")  # modules and packages

KNOWN: dict[tuple[str, str], str] = {}


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in STAGES:
        for f in sorted((REPO / pkg).rglob("*.py")):
            parts = list(f.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = f
    return mods


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            ids.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return ids


def _imports(mods: dict[str, Path]) -> list[tuple[str, str, int, bool]]:
    """``(importer, imported, line, runs)`` for every import between project modules; ``runs`` is False under
    ``TYPE_CHECKING``. ``from a import b`` names module ``a.b`` when it is one, else ``a``."""

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    out = []
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        typing_only = _type_checking_nodes(tree)
        package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [resolve(a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else resolve(base) for a in node.names]
            for t in targets:
                if t is not None and t != mod:
                    out.append((mod, t, node.lineno, id(node) not in typing_only))
    return out


def _stage(mod: str) -> int:
    return STAGES[mod.split(".")[0]]


def _front_door(mod: str) -> bool:
    return any(mod == d or mod.startswith(d + ".") for d in FRONT_DOOR)


IMPORTS = _imports(_modules())


def _where(mod: str, line: int) -> str:
    f = _modules()[mod]
    return f"{f.relative_to(REPO)}:{line}"


def test_the_core_imports_no_stage_except_the_front_door():
    bad = [f"{_where(m, ln)}: {m} imports {t}" for m, t, ln, _ in IMPORTS
           if _stage(m) == 0 and _stage(t) > 0 and not _front_door(m) and (m, t) not in KNOWN]
    assert not bad, "the core must not depend on a stage:\n" + "\n".join(sorted(set(bad)))


def test_no_stage_imports_a_later_stage():
    bad = [f"{_where(m, ln)}: {m} imports {t}" for m, t, ln, _ in IMPORTS
           if 0 < _stage(m) < _stage(t) and (m, t) not in KNOWN]
    assert not bad, "data flows meta_learning -> finetune -> puppeteer only:\n" + "\n".join(sorted(set(bad)))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_no_import_cycles():
    graph: dict[str, set[str]] = {}
    for m, t, _, runs in IMPORTS:
        graph.setdefault(m, set())
        if runs and (m, t) not in KNOWN:
            graph[m].add(t)
    cycles = _cycles(graph)
    lines = []
    for comp in cycles:
        edges = sorted({f"  {_where(m, ln)}: {m} -> {t}" for m, t, ln, runs in IMPORTS
                        if runs and m in comp and t in comp and (m, t) not in KNOWN})
        lines.append(" <-> ".join(comp) + "\n" + "\n".join(edges))
    assert not cycles, "import cycles:\n" + "\n".join(lines)


def test_known_exceptions_still_exist():
    present = {(m, t) for m, t, _, _ in IMPORTS}
    stale = [edge for edge in KNOWN if edge not in present]
    assert not stale, f"fixed, remove from KNOWN: {stale}"


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """The rules are only as good as the import finder: function-level, relative and TYPE_CHECKING imports."""
    src = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from finetune.avatar import Avatar\n"
           "def f():\n    from .. import io\n    import puppeteer.drive\n")
    mods = {"reenact.metrics.x": tmp_path / "x.py", "reenact.io": tmp_path / "io.py",
            "finetune.avatar": tmp_path / "a.py", "puppeteer.drive": tmp_path / "d.py"}
    for p in mods.values():
        p.write_text("")
    mods["reenact.metrics.x"].write_text(src)
    found = {(t, runs) for m, t, _, runs in _imports(mods) if m == "reenact.metrics.x"}
    assert found == {("finetune.avatar", False), ("reenact.io", True), ("puppeteer.drive", True)}
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
