"""Guard rails for the code's shape: no god functions or classes in the packages.

ruff's complexity rules (pyproject.toml: C901, PLR09xx) bound branches, arguments and
statements; lint-imports bounds the layering. This bounds size, which neither does: a
function or class over the limit fails here with its place, so a split happens when the
code grows, not in a later clean-up. Generated code (ridgeline/) and benchmarks are not
held to it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge_agent", "cloud_broker", "ridgeline_core", "scripts", "tools")
MAX_FUNCTION_LINES = 60
MAX_CLASS_LINES = 70  # "about 60": a class this big is split by responsibility


def sizes() -> list[tuple[int, str, str]]:
    """(lines, kind, where) of every function and class in the packages."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    kind = "class" if isinstance(node, ast.ClassDef) else "function"
                    where = f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
                    found.append((lines, kind, where))
    return found


def over(kind: str, limit: int) -> list[str]:
    return [f"{where} ({n} lines)" for n, k, where in sizes() if k == kind and n > limit]


def test_no_function_is_over_the_limit() -> None:
    too_long = over("function", MAX_FUNCTION_LINES)
    assert too_long == [], f"split these (limit {MAX_FUNCTION_LINES} lines): {too_long}"


def test_no_class_is_over_the_limit() -> None:
    too_long = over("class", MAX_CLASS_LINES)
    assert too_long == [], f"split these (limit {MAX_CLASS_LINES} lines): {too_long}"


def test_the_check_sees_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    tree = ast.parse(f"def long():\n{body}\n")
    node = tree.body[0]
    assert (node.end_lineno or 0) - node.lineno + 1 > MAX_FUNCTION_LINES
