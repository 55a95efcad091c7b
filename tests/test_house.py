"""The house: ablate's modules import one another without a circle, counting imports
placed inside functions (a circle held together by a late import is still a circle)."""
import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "ablate"


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The ablate modules a file imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "ablate":
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ablate."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("ablate.")}
    return found & modules


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import path that comes back to where it started (one per circle found)."""
    out, done = [], set()

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                out.append([*path[path.index(nxt):], nxt])
            elif nxt not in done:
                walk(nxt, [*path, nxt])
        done.add(node)

    for start in sorted(graph):
        if start not in done:
            walk(start, [start])
    return out


def test_no_module_of_ablate_imports_itself_round_a_circle():
    """Each module is a node, and each subpackage (ablate/report/, ablate/data/) one node
    for all its files: a circle through a package's files is still a circle."""
    units = {p.stem: [p] for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    units |= {d.name: sorted(d.glob("*.py")) for d in PACKAGE.iterdir() if (d / "__init__.py").exists()}
    assert {"report", "data"} <= set(units)
    graph = {u: set().union(*(imports_of(f, set(units)) for f in files)) - {u} for u, files in units.items()}
    assert circles(graph) == []


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]
