"""Every registered method has a parity test: its name is the first argument of a call (build_method
or a helper that builds it) in some tests/parity/test_*.py. No exception list: a new method fails
this until its parity test exists."""

from __future__ import annotations

import ast
from pathlib import Path

from methods.registry import available


def methods_called_in_parity_tests() -> set[str]:
    names = set()
    for path in Path(__file__).parent.glob("test_*.py"):
        if path.name == Path(__file__).name:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)):
                names.add(node.args[0].value)
    return names


def test_every_registered_method_has_a_parity_test():
    missing = sorted(set(available()) - methods_called_in_parity_tests())
    assert not missing, f"registered methods without a parity test in tests/parity/: {missing}"
