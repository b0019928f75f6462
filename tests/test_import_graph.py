"""The import rule of docs/architecture.md, read from the source (AST, every runtime module,
imports inside functions and under TYPE_CHECKING included): no cycles, and every import
points the way the data path does: model <- hub <- packager -> store <- origin <- app,
playlist beside the store; ingest sees only the model and the hub's Publisher protocol;
edge and player_client see only the playlist model (the edge also the playback-token rule of
mediacore.access, a leaf); plugins see only the plugin API (mediacore.plugins.api);
nothing but the command-line tools import the app."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

RUNTIME_PACKAGES = ("mediacore", "ingest", "edge", "player_client", "benchmarks", "plugins")

# Each layer (the longest matching prefix wins) and the layers of the tree it may import,
# besides itself. Third-party and standard-library imports are not constrained here.
ALLOWED: dict[str, tuple[str, ...]] = {
    "mediacore": (),  # the package's own __init__
    "mediacore.model": (),
    "mediacore.playlist": (),
    "mediacore.access": (),
    "mediacore.hub": ("mediacore.model",),
    "mediacore.store": ("mediacore.model", "mediacore.playlist"),
    "mediacore.packager": ("mediacore.model", "mediacore.hub", "mediacore.store", "mediacore.playlist"),
    "mediacore.origin": (
        "mediacore.model",
        "mediacore.hub",
        "mediacore.store",
        "mediacore.playlist",
        "mediacore.access",
    ),
    "mediacore.plugins": ("mediacore.model", "mediacore.access"),  # the plugin API
    "mediacore.app": ("mediacore", "ingest", "edge", "player_client", "plugins"),
    "ingest": ("mediacore.model", "mediacore.hub.publisher"),
    "edge": ("mediacore.playlist", "mediacore.access"),
    "player_client": ("mediacore.playlist",),
    "benchmarks": ("mediacore", "ingest", "edge", "player_client", "plugins"),  # the mediacore-bench command
    "plugins": ("mediacore.plugins.api",),  # plugins see the plugin API only
}
TREE = ("mediacore", "ingest", "edge", "player_client", "benchmarks", "cython_ext", "plugins")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def runtime_modules() -> dict[str, Path]:
    found = {}
    for package in RUNTIME_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def imports_of(name: str, path: Path) -> set[str]:
    """Every module of the tree that `name` imports (relative imports resolved; for
    `from X import Y`, X.Y when it is a module, else X)."""
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                stem = base[: len(base) - (node.level - 1)]
                module = ".".join(stem + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] in TREE}


def layer_of(module: str) -> str:
    return max((layer for layer in ALLOWED if module == layer or module.startswith(layer + ".")), key=len)


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def graph() -> dict[str, set[str]]:
    modules = runtime_modules()
    return {name: {m for m in imports_of(name, path) if m in modules and m != name} for name, path in modules.items()}


def violations(edges: dict[str, set[str]]) -> list[str]:
    wrong = []
    for name, targets in edges.items():
        layer = layer_of(name)
        for target in targets:
            if layer_of(target) == layer or within(target, ALLOWED[layer]):
                continue
            wrong.append(f"{name} -> {target}")
    return sorted(wrong)


def cycles_in(edges: dict[str, set[str]]) -> list[list[str]]:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return cycles


def test_every_import_points_along_the_data_path() -> None:
    wrong = violations(graph())
    assert wrong == [], "imports against the direction of docs/architecture.md:\n" + "\n".join(wrong)


def test_only_the_command_line_tools_import_the_app() -> None:
    importers = sorted(
        name
        for name, targets in graph().items()
        if any(within(t, ("mediacore.app",)) for t in targets) and not within(name, ("mediacore.app", "benchmarks"))
    )
    assert importers == []


def test_no_import_cycles() -> None:
    cycles = cycles_in(graph())
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_catches_a_wrong_import_and_a_cycle(tmp_path: Path) -> None:
    """The rules are not vacuous: a store importing the origin, ingest importing the hub's
    internals, and a two-module cycle are all reported, read from real source text."""
    source = tmp_path / "probe.py"
    source.write_text("from mediacore.origin.http import not_found\nfrom ..hub import hub\n")
    found = imports_of("mediacore.store.probe", source)
    assert {"mediacore.origin.http", "mediacore.hub.hub"} <= found
    modules = set(runtime_modules())
    assert violations({"mediacore.store.probe": found & modules}) == [
        "mediacore.store.probe -> mediacore.hub",
        "mediacore.store.probe -> mediacore.hub.hub",
        "mediacore.store.probe -> mediacore.origin.http",
    ]
    assert violations({"ingest.rtp.server": {"mediacore.hub.hub"}}) == ["ingest.rtp.server -> mediacore.hub.hub"]
    assert violations({"ingest.rtp.server": {"mediacore.hub.publisher"}}) == []
    assert cycles_in({"a": {"b"}, "b": {"a"}}) == [["a", "b", "a"]]
    assert len(graph()) > 60
