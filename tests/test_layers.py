"""The layer order of ARCHITECTURE.md, enforced: no module imports a package of a higher floor, nor a
sibling package on its own floor (the UI never imports the CLI; eval never imports bench).

Every import statement counts, including ones inside functions (lazy imports are still dependencies).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# floor -> the top-level packages on it. A package may import its own floor's package and any lower floor.
FLOORS: list[set[str]] = [
    {"cxr_agent"},  # settings (and heap.py): the ground floor
    {"knowledge"},  # domain: vocabulary, lexicon, evidence types, labeler
    {"tools"},  # ingestion, classifier, VLM, retrieval, tool contract, model catalogue
    {"agents"},  # router, reconciler, responder, nodes, runner, memory
    {"graph"},  # the compiled graph
    {"ui", "eval", "examples", "server"},  # the chat app, HTTP routes beside LangGraph Server; eval and examples use the product
    {"cli", "bench"},  # the command line (runs eval) and the benchmarks (use eval's data readers)
]
FLOOR = {pkg: i for i, pkgs in enumerate(FLOORS) for pkg in pkgs}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _modules() -> list[tuple[str, Path]]:
    out = [("graph", ROOT / "graph.py")] if (ROOT / "graph.py").exists() else []
    for pkg in FLOOR:
        if pkg != "graph":
            out += [(pkg, p) for p in sorted((ROOT / pkg).rglob("*.py")) if "fixtures" not in p.parts]
    return out


def layer_violations() -> list[str]:
    bad = []
    for pkg, path in _modules():
        for line, module in _imports(path):
            target = module.split(".")[0]
            if target not in FLOOR or target == pkg:
                continue
            if FLOOR[target] >= FLOOR[pkg]:  # higher, or a sibling on the same floor
                bad.append(f"{path.relative_to(ROOT)}:{line} ({pkg}, floor {FLOOR[pkg]}) imports {module} "
                           f"({target}, floor {FLOOR[target]})")
    return bad


def test_every_package_is_on_a_floor():
    tops = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert tops <= set(FLOOR), f"packages missing from FLOORS: {sorted(tops - set(FLOOR))}"


def test_no_import_reaches_up_the_layers():
    assert layer_violations() == []


def test_the_checker_sees_a_violation(tmp_path, monkeypatch):
    """The test above must be able to fail: a knowledge module importing agents is caught."""
    fake = tmp_path / "knowledge"
    fake.mkdir()
    (fake / "bad.py").write_text("def f():\n    from agents.routing.rules import route\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    bad = layer_violations()
    assert bad == ["knowledge/bad.py:2 (knowledge, floor 1) imports agents.routing.rules (agents, floor 3)"]


@pytest.mark.parametrize("module", ["cxr_agent.settings", "knowledge.vocabulary", "knowledge.evidence"])
def test_low_floors_import_without_the_product_above(module):
    """Importing a low floor pulls in no higher floor (checked in a fresh interpreter)."""
    import subprocess

    code = (f"import sys, {module}\n"
            "high = sorted(m for m in sys.modules if m.split('.')[0] in {'tools','agents','graph','ui','cli','eval','bench'})\n"
            "print(','.join(high))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# ---------------------------------------------------------------------------------------------------------
# No import cycles between the product's modules, lazy imports and ``if TYPE_CHECKING:`` ones included: a
# cycle means two modules that cannot be understood (or moved) apart.
# ---------------------------------------------------------------------------------------------------------
PRODUCT = ("cxr_agent", "knowledge", "tools", "agents", "ui", "eval", "examples", "server", "cli", "bench")


def _module_files(root: Path) -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg in PRODUCT:
        for p in sorted((root / pkg).rglob("*.py")):
            if "fixtures" in p.parts:
                continue
            parts = p.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            mods[name] = p
    if (root / "graph.py").exists():
        mods["graph"] = root / "graph.py"
    return mods


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the product modules it imports (``from pkg import submodule`` counts as the submodule)."""
    mods = _module_files(root)

    def known(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in mods else node.module
                           for alias in node.names]
            for target in targets:
                if (hit := known(target)) and hit != mod:
                    edges[mod].add(hit)
    return edges


def import_cycles(root: Path) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    edges = import_graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in list(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def test_no_import_cycles():
    assert import_cycles(ROOT) == []


def test_the_cycle_checker_sees_a_lazy_cycle(tmp_path):
    pkg = tmp_path / "tools"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from tools.b import g\n")
    (pkg / "b.py").write_text("def g():\n    from tools import a\n")
    assert import_cycles(tmp_path) == [["tools.a", "tools.b"]]
