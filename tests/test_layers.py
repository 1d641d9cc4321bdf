"""Layering (house style 2): a module may import only from layers below it."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import liverburden

# lower index = lower layer; a module may import from its own layer or below
LAYERS = [
    {"_exceptions", "_version", "_privacy"},
    {"kernels"},
    {"config", "geometry"},
    {"io"},
    {"measure"},
    {"register"},
    {"margin"},
    {"report"},
    {"pipeline", "compare"},
    {"batch", "pacs"},
    {"cli", "__main__", "__init__"},
]
SRC = Path(liverburden.__file__).parent


def _layer(top: str) -> int:
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"module '{top}' has no layer; add it to LAYERS")


def _modules():
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).with_suffix("")
        parts = rel.parts
        yield path, parts


def test_every_module_imports():
    for mod in pkgutil.walk_packages(liverburden.__path__, "liverburden."):
        if mod.name.endswith("__main__"):
            continue
        importlib.import_module(mod.name)


def _upward(parts, source):
    bad = []
    top = parts[0]
    mine = _layer(top)
    if True:
        tree = ast.parse(source)
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level == 0 and node.module and node.module.startswith("liverburden"):
                    targets = [node.module.split(".")[1]] if "." in node.module else []
                elif node.level > 0:
                    depth = len(parts) - 1  # package depth of this module
                    if node.level - 1 < depth:
                        continue  # relative import inside its own package
                    if node.module:
                        targets = [node.module.split(".")[0]]
                    else:
                        targets = [a.name for a in node.names]
            for t in targets:
                if _layer(t) > mine:
                    bad.append(f"{'/'.join(parts)} imports {t}")
    return bad


def test_no_upward_imports():
    bad = []
    for path, parts in _modules():
        bad += _upward(parts, path.read_text())
    assert not bad, "upward imports: " + "; ".join(bad)


def test_layer_check_can_fail():
    # the checker itself must catch an upward import, relative or absolute
    assert _upward(("kernels", "_x"), "from ..measure import measure_arrays")
    assert _upward(("io", "_x"), "from liverburden.report import write_bundle")
    assert not _upward(("measure", "_x"), "from ..kernels import _scan_runs")
