"""The package layering holds: no module imports a package of a higher rank, nothing below
the CLI imports the root package, and no two modules import each other (even through a
longer loop). Every import counts: module level, inside functions and type-only ones.

The ranks (lowest first) are the architecture of STYLE.md's "Seams": a module may import
its own rank and lower ones.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "fbnas"

RANKS: dict[str, int] = {
    "io": 0, "errors": 0, "checks": 0, "version": 0,
    "arch": 1, "data": 1,
    "blocks": 2,
    "builder": 3,
    "zoo": 4,
    "cost": 5,
    "tasks": 6,
    "train": 7,
    "search": 8, "slim": 8,
    "export": 9, "compat": 9,
    "cli": 10, "__main__": 10,
}
"""Rank of each top-level module or package of ``fbnas``."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imported_modules(name: str, path: Path) -> set[str]:
    """The fbnas modules ``name`` names in its imports (``from pkg import sub`` names the
    submodule when one exists, else the package)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "fbnas")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "fbnas":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
    found.discard(name)
    return found


GRAPH = {name: imported_modules(name, path) for name, path in MODULES.items()}


def rank(module: str) -> int | None:
    """The module's rank; None for the root package (the public facade)."""
    parts = module.split(".")
    if len(parts) == 1:
        return None
    if parts[1] not in RANKS:
        raise AssertionError(f"{module}: fbnas.{parts[1]} has no rank in {__file__}")
    return RANKS[parts[1]]


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    """``importer -> imported`` for every import of a higher rank or of the root package."""
    bad = []
    for importer, imported in sorted(graph.items()):
        own = rank(importer)
        if own is None or own >= RANKS["cli"]:
            continue
        for target in sorted(imported):
            theirs = rank(target)
            if theirs is None:
                bad.append(f"{importer} -> {target} (the root package; only the CLI may)")
            elif theirs > own:
                bad.append(f"{importer} (rank {own}) -> {target} (rank {theirs})")
    return bad


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One loop of every strongly connected group of modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_every_module_imports_only_its_rank_and_lower_ones() -> None:
    assert layering_violations(GRAPH) == []


def test_no_import_cycle_between_modules() -> None:
    # A package's __init__ re-exporting its modules is no cycle unless a module imports the
    # package back: such a loop is reported like any other.
    assert import_cycles(GRAPH) == []


def test_the_checks_catch_an_upward_import_and_a_cycle() -> None:
    graph = {"fbnas.cost.lut": {"fbnas.export.onnx"}, "fbnas.export.onnx": {"fbnas.cost.lut"},
             "fbnas.train.trainer": {"fbnas"}, "fbnas.arch.spec": set()}
    assert layering_violations(graph) == [
        "fbnas.cost.lut (rank 5) -> fbnas.export.onnx (rank 9)",
        "fbnas.train.trainer -> fbnas (the root package; only the CLI may)",
    ]
    assert import_cycles(graph) == [["fbnas.cost.lut", "fbnas.export.onnx"]]


def test_imports_inside_functions_and_type_checking_blocks_are_read(tmp_path) -> None:
    source = tmp_path / "mod.py"
    source.write_text("from typing import TYPE_CHECKING\n"
                      "if TYPE_CHECKING:\n    from fbnas.search.space import SearchSpace\n"
                      "def f():\n    from fbnas.export import onnx\n"
                      "    import fbnas.cli.main\n")
    found = imported_modules("fbnas.cost.mod", source)
    assert found == {"fbnas.search.space", "fbnas.export.onnx", "fbnas.cli.main"}


def private_imports() -> list[str]:
    """``importer -> module.name`` for every private name imported from another package."""
    bad = []
    for name, path in MODULES.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            source_package = node.module if node.module in MODULES and MODULES[
                node.module].name == "__init__.py" else node.module.rpartition(".")[0]
            if not node.module.startswith("fbnas") or source_package == package:
                continue
            bad += [f"{name} -> {node.module}.{a.name}" for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")]
    return sorted(bad)


def test_no_private_name_is_imported_across_packages() -> None:
    assert private_imports() == []


@pytest.mark.parametrize("top", sorted({m.split(".")[1] for m in MODULES if "." in m}))
def test_every_top_level_part_has_a_rank(top: str) -> None:
    assert top in RANKS
