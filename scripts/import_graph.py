#!/usr/bin/env python3
"""The package's import graph, from its source alone (nothing is imported): every module, the
package modules it imports (at the top, inside functions, or for type checking alike), the import
circles, and the modules over the size limit. Exit 1 if there is a circle or an oversized module.

    python3 scripts/import_graph.py            # circles and sizes
    python3 scripts/import_graph.py --edges    # also every module's imports
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "fcn_sweep"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The package modules `path` imports; `from . import x` counts x when x is a module."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            base = f"{base}.{node.module}" if node.level and node.module else (node.module if not node.level else base)
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    # A submodule import also runs its packages' __init__, which is an edge only where it is not the importer's own.
    return {m for m in found if m in modules and m != name and not name.startswith(m + ".")}


def graph() -> dict[str, set[str]]:
    files = sorted((ROOT / PACKAGE).rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imports(f, modules) for f in files}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def oversized() -> list[tuple[str, int]]:
    sizes = ((module_name(f), len(f.read_text().splitlines())) for f in (ROOT / PACKAGE).rglob("*.py"))
    return sorted((m, n) for m, n in sizes if n > MAX_LINES)


def main(argv: list[str]) -> int:
    edges = graph()
    if "--edges" in argv:
        for module, targets in sorted(edges.items()):
            print(f"{module} -> {', '.join(sorted(targets)) or '(nothing of the package)'}")
    found, big = circles(edges), oversized()
    for c in found:
        print("import circle: " + " -> ".join([*c, c[0]]))
    for module, n in big:
        print(f"{module}: {n} lines (limit {MAX_LINES})")
    counts = f"{len(edges)} modules, {sum(map(len, edges.values()))} imports"
    print(f"{counts}, {len(found)} circles, {len(big)} over {MAX_LINES} lines")
    return 1 if found or big else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
