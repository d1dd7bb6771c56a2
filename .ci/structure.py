"""Structure gate: no import cycle between the modules of src/nanogerman, and none over MAX_LINES lines.

Every import of a ``nanogerman`` module counts, at module level or inside a function, so a
function-level import used to dodge a cycle is still seen as one. A cycle fails the gate
(exit 1). A module over MAX_LINES lines is printed as a warning, and fails the gate with
--strict, which .ci/lint passes (issue 14: split such a module by purpose).

    .venv/bin/python .ci/structure.py --strict
"""

import ast
import sys
from pathlib import Path

MAX_LINES = 600
PACKAGE = "nanogerman"


def imported_modules(path: Path) -> set[str]:
    """The nanogerman modules a file imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and (node.module == PACKAGE or node.module.startswith(PACKAGE + ".")):
            if node.module == PACKAGE:
                found.update(f"{PACKAGE}.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith(PACKAGE + "."))
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (or a self-import)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def main() -> int:
    strict = "--strict" in sys.argv[1:]
    source = Path(__file__).resolve().parents[1] / "src" / PACKAGE
    large, graph = [], {}
    for path in sorted(source.glob("*.py")):
        name = f"{PACKAGE}.{path.stem}" if path.stem != "__init__" else PACKAGE
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            large.append(f"{path.relative_to(source.parents[1])}: {lines} lines (at most {MAX_LINES}); split it by purpose")
        graph[name] = imported_modules(path) - {name}
    found = [f"import cycle between {', '.join(component)}" for component in cycles(graph)]
    for problem in found:
        print(f"structure: {problem}", file=sys.stderr)
    for warning in large:
        print(f"structure: {'' if strict else 'warning: '}{warning}", file=sys.stderr)
    print(f"structure: {len(graph)} modules, {len(found)} import cycle(s), {len(large)} over {MAX_LINES} lines", file=sys.stderr)
    return 1 if found or (strict and large) else 0


if __name__ == "__main__":
    sys.exit(main())
