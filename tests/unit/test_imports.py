"""The project's modules form a tree: no import cycle among module-level imports, every module
imports on its own in a fresh interpreter, harness/ reaches into methods/ only where a config
names a method (validation and sweep expansion), and neither reaches into leaderboard/ (which
consumes records, harness and the method registry)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("harness", "methods", "leaderboard")
# the only harness modules that may import methods.*: they build a method from its config name
HARNESS_TO_METHODS = {"harness.validate", "harness.sweep"}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, module: str, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:  # relative import
                pkg = module.split(".")[: -node.level] if not path.name == "__init__.py" else module.split(".")
                base = ".".join([*pkg, node.module])
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def test_module_level_imports_have_no_cycle():
    modules = _modules()
    graph = {m: {i for i in _imports(p, m, top_level_only=True) if i in modules and i != m}
             for m, p in modules.items()}
    # importing a.b.c runs a/__init__ and a/b/__init__ first
    for m in modules:
        parts = m.split(".")
        graph[m] |= {".".join(parts[:k]) for k in range(1, len(parts)) if ".".join(parts[:k]) in modules} - {m}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_harness_reaches_methods_only_in_validation_and_sweep_expansion():
    offenders = {m: sorted(i for i in _imports(p, m, top_level_only=False) if i.split(".")[0] == "methods")
                 for m, p in _modules().items() if m.startswith("harness") and m not in HARNESS_TO_METHODS}
    offenders = {m: i for m, i in offenders.items() if i}
    assert not offenders, offenders


def test_harness_and_methods_never_import_the_leaderboard():
    offenders = {m: sorted(i for i in _imports(p, m, top_level_only=False) if i.split(".")[0] == "leaderboard")
                 for m, p in _modules().items() if m.split(".")[0] in ("harness", "methods")}
    offenders = {m: i for m, i in offenders.items() if i}
    assert not offenders, offenders


def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(_modules())
    code = ("import importlib, sys\nbad = []\n"
            f"for name in {names!r}:\n"
            "    try:\n        importlib.import_module(name)\n"
            "    except Exception as exc:\n        bad.append(f'{name}: {type(exc).__name__}: {exc}')\n"
            "print('\\n'.join(bad)); sys.exit(1 if bad else 0)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
