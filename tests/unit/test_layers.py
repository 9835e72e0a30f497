"""The layering of ARCHITECTURE.md, read from the imports with ``ast``.

Every import counts: module-level, function-level, under ``if TYPE_CHECKING:``, and relative ones.
``from P import x`` depends on the module ``P`` (its ``__init__`` supplies ``x``) and also on
``P.x`` when that is a module. Rules:

- no import cycle anywhere in ``gossipml/``;
- the pure layers (``ops``, ``codecs``, ``aggregation``, ``data``, ``tasks``, ``policies``,
  ``wire.py``) and the config tables import no zmq, threading or time, directly or through any
  other gossipml module;
- no module imports one in a layer above its own (same layer is fine). Layers, low to high:
  ``errors`` -> ``ops`` (tensor math, the bottom of the pure layers) -> the other pure layers ->
  config tables -> ``events``, ``comm`` -> ``config`` -> ``peer``, ``featuresplit`` -> ``launch``,
  ``cli``, ``__main__`` and the ``gossipml`` package itself (a lazy facade). A module's layer is
  its folder's (a top module's, its own), except the config tables: the ``config.py`` of a folder
  above the pure layers (``comm/config.py``, ``peer/config.py``) sits just above the pure layers,
  so it may import only ``errors``, pure modules and other config tables, and the top
  ``config.py`` (which composes every table into ``ExperimentConfig``) may import it. A pure
  folder's ``config.py`` stays in its folder's (pure) layer;
- at most 8 modules at the top of ``gossipml/``, and no module over 400 lines.

Parent packages are not counted as imported: a pure module can only reach pure packages (or
``errors``) without breaking the layer rule, and those ``__init__`` modules are checked themselves.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "gossipml"
FORBIDDEN = {"zmq", "threading", "time"}
MAX_TOP_MODULES = 8
MAX_LINES = 400

OPS = 1
PURE = 2
TABLE = 3  # comm/config.py, peer/config.py: config tables above the pure layers
TOP = 7
LAYERS = {"errors": 0,
          "ops": OPS,
          "codecs": PURE, "aggregation": PURE, "data": PURE, "tasks": PURE, "policies": PURE,
          "wire": PURE, "schema": PURE,
          "events": 4, "comm": 4,
          "config": 5,
          "peer": 6, "featuresplit": 6,
          "launch": TOP, "cli": TOP, "__main__": TOP}


def find_modules(pkg: Path) -> dict[str, Path]:
    """Every module under ``pkg`` by dotted name (a package by its own name, not ``.__init__``)."""
    mods = {}
    for path in sorted(pkg.rglob("*.py")):
        parts = path.relative_to(pkg.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def imported_names(name: str, path: Path) -> set[str]:
    """Every dotted name the module imports, anywhere in it, relative imports resolved."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                here = name.split(".") if is_package else name.split(".")[:-1]
                base = here[: len(here) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.add(module)
            out.update(f"{module}.{alias.name}" for alias in node.names)
    return out


def import_graph(mods: Mapping[str, Path]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(edges between our modules, top-level names of outside modules each one imports)."""
    edges: dict[str, set[str]] = {}
    outside: dict[str, set[str]] = {}
    root = next(iter(mods)).split(".")[0]
    for name, path in mods.items():
        names = imported_names(name, path)
        edges[name] = {n for n in names if n in mods and n != name}
        outside[name] = {n.split(".")[0] for n in names if n.split(".")[0] != root}
    return edges, outside


def cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
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


def layer_of(name: str) -> int:
    """The layer of a gossipml module, per the rule in this module's docstring."""
    parts = name.split(".")[1:]
    if not parts:
        return TOP  # the gossipml package: a lazy facade over Peer and config
    if parts[0] not in LAYERS:
        raise AssertionError(f"{name}: folder or top module {parts[0]!r} has no layer; add it to "
                             "LAYERS in tests/unit/test_layers.py and to docs/design-notes.md")
    folder = LAYERS[parts[0]]
    if len(parts) == 2 and parts[1] == "config" and folder > PURE:
        return TABLE
    return folder


def is_pure(name: str) -> bool:
    """A module of a pure layer, or a config table."""
    return layer_of(name) in (OPS, PURE, TABLE)


def reached_forbidden(name: str, edges: Mapping[str, set[str]],
                      outside: Mapping[str, set[str]]) -> list[str]:
    """Each path ``name -> ... -> zmq|threading|time`` (one per forbidden name reached)."""
    paths: list[str] = []
    parent: dict[str, str | None] = {name: None}
    queue = [name]
    seen_bad: set[str] = set()
    while queue:
        mod = queue.pop(0)
        for bad in sorted(outside[mod] & FORBIDDEN - seen_bad):
            seen_bad.add(bad)
            chain, at = [bad], mod
            while at is not None:
                chain.append(at)
                at = parent[at]
            paths.append(" -> ".join(reversed(chain)))
        for nxt in sorted(edges[mod]):
            if nxt not in parent:
                parent[nxt] = mod
                queue.append(nxt)
    return paths


MODULES = find_modules(PKG)
EDGES, OUTSIDE = import_graph(MODULES)


def test_no_import_cycles():
    found = cycles(EDGES)
    assert not found, "import cycles (break each by moving the shared part down a layer):\n" + \
        "\n".join(" <-> ".join(c) for c in found)


def test_pure_layers_import_no_sockets_threads_or_clocks():
    pure = [m for m in MODULES if is_pure(m)]
    assert len(pure) >= 40 and "gossipml.wire" in pure and "gossipml.comm.config" in pure
    offenders = [p for m in pure for p in reached_forbidden(m, EDGES, OUTSIDE)]
    assert not offenders, "pure modules reach zmq/threading/time; pass clocks in instead:\n" + \
        "\n".join(offenders)


def test_no_layer_imports_one_above_it():
    upward = [f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
              for m in sorted(EDGES) for t in sorted(EDGES[m]) if layer_of(t) > layer_of(m)]
    assert not upward, "imports that point up a layer (see this module's docstring):\n" + \
        "\n".join(upward)


def test_few_top_modules_and_no_long_module():
    top = sorted(p.name for p in PKG.glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, f"{len(top)} modules at the top of gossipml/ ({top}); " \
        f"at most {MAX_TOP_MODULES}: move one into the folder of its layer"
    long = {str(p.relative_to(PKG.parent)): n for p in MODULES.values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split by concept): {long}"


def test_readme_layout_names_every_module():
    rows = {}
    for line in (PKG.parent / "README.md").read_text().splitlines():
        if line.startswith("| `gossipml/"):
            folder = line.split("`")[1].rstrip("/").removeprefix("gossipml").lstrip("/")
            rows[folder] = set(line.split("`")[1::2])
    missing = [str(p.relative_to(PKG.parent)) for p in MODULES.values() if p.name != "__init__.py"
               and p.name not in rows.get(str(p.parent.relative_to(PKG)).strip("."), set())]
    assert not missing, f"name these in the README's Layout row of their folder: {missing}"


def _write(root: Path, files: Mapping[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return find_modules(root / "pkg")


def test_the_checker_reads_every_kind_of_import(tmp_path):
    # Prepare: a package whose cycles hide in a relative, a TYPE_CHECKING and a function import
    mods = _write(tmp_path, {
        "pkg/__init__.py": "def f():\n    from pkg import a\n",
        "pkg/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import b\n",
        "pkg/b.py": "from .sub import c\n",
        "pkg/sub/__init__.py": "from . import c\n",
        "pkg/sub/c.py": "import time\nfrom ..a import x\nfrom pkg.sub import d\n",
        "pkg/sub/d.py": "def g():\n    from pkg.sub.c import y\n",
        "pkg/e.py": "import zmq.sugar\nfrom pkg.b import z\n"})
    # Execute
    edges, outside = import_graph(mods)
    # Assert
    assert edges["pkg.b"] == {"pkg.sub", "pkg.sub.c"}
    assert edges["pkg.sub.c"] == {"pkg.a", "pkg.sub", "pkg.sub.d"}
    assert cycles(edges) == [["pkg", "pkg.a", "pkg.b", "pkg.sub", "pkg.sub.c", "pkg.sub.d"]]
    assert outside["pkg.e"] == {"zmq"} and "time" in outside["pkg.sub.c"]
    assert reached_forbidden("pkg.b", edges, outside) == ["pkg.b -> pkg.sub.c -> time"]
    assert not cycles({"x": {"y"}, "y": {"z"}, "z": set()})


def test_layer_rule_places_config_tables_and_unknown_folders():
    assert layer_of("gossipml.comm.config") == TABLE < layer_of("gossipml.comm.transport")
    assert layer_of("gossipml.peer.config") < layer_of("gossipml.config")
    assert layer_of("gossipml.config") < layer_of("gossipml.peer")
    assert layer_of("gossipml.codecs.config") == PURE and layer_of("gossipml") == TOP
    assert layer_of("gossipml.ops.sparse") < layer_of("gossipml.codecs.sparse")
    with pytest.raises(AssertionError, match="add it to LAYERS"):
        layer_of("gossipml.newfolder.thing")


def test_importing_gossipml_starts_nothing():
    code = ("import sys, threading, gossipml; "
            "assert threading.active_count() == 1; "
            "assert 'torch' not in sys.modules and 'zmq' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
