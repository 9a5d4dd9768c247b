"""`make lint`'s architecture checks beyond import-linter's contracts: no import cycles between modules (function-
local imports included: a lazy import does not make a cycle acceptable) and no module over 500 lines."""

from __future__ import annotations

import sys
from pathlib import Path

import grimp

PACKAGES = ("heygem_pipeline", "assets", "resources")
MAX_LINES = 500


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in graph.modules:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def package_parents(graph: grimp.ImportGraph) -> set[tuple[str, str]]:
    """A package's ``__init__`` importing its own submodules is not a cycle of the design: drop those edges."""
    return {(m, c) for m in graph.modules for c in graph.find_children(m)}


def main() -> int:
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True)
    for parent, child in package_parents(graph):
        if graph.direct_import_exists(importer=parent, imported=child):
            graph.remove_import(importer=parent, imported=child)
    problems = [f"import cycle: {' ⇄ '.join(c)}" for c in cycles(graph)]
    root = Path(__file__).resolve().parents[1]
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            lines = len(path.read_text().splitlines())
            if lines > MAX_LINES:
                problems.append(f"{path.relative_to(root)}: {lines} lines (at most {MAX_LINES}: split it by concern)")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
