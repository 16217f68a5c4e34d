"""Functions in harness/ and leaderboard/ stay short enough to read at once: a longer one is split
into named steps."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 60


def long_functions(source: str, max_lines: int = MAX_LINES) -> list[tuple[str, int, int]]:
    """(name, first line, length) of every function (nested ones included) longer than max_lines."""
    return [(node.name, node.lineno, node.end_lineno - node.lineno + 1) for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > max_lines]


def test_the_counter_finds_a_long_function():
    def function(name: str, body_lines: int) -> str:
        return f"def {name}():\n" + "".join(f"    x{i} = {i}\n" for i in range(body_lines))

    assert long_functions(function("long", MAX_LINES)) == [("long", 1, MAX_LINES + 1)]
    assert long_functions(function("at_limit", MAX_LINES - 1)) == []


def test_no_function_in_harness_or_leaderboard_exceeds_the_limit():
    files = sorted(p for package in ("harness", "leaderboard") for p in (ROOT / package).rglob("*.py"))
    assert files
    too_long = [f"{p.relative_to(ROOT)}:{line} {name} ({n} lines)"
                for p in files for name, line, n in long_functions(p.read_text())]
    assert not too_long, f"functions over {MAX_LINES} lines (split them into named steps): {too_long}"
