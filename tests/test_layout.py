"""The house: the floors of train/ hold (import-linter's contracts in pyproject.toml, lazy imports included), no
module of the package is over 300 lines and no function over 60 (the training loop's body may run to 80)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = [ROOT / "train", ROOT / "data"]
MODULE_LINES, FUNCTION_LINES = 300, 60
LONGER = {"run_loop": 80}  # the loop reads top to bottom, as nanoGPT's does


def sizes() -> tuple[list[str], list[str]]:
    modules, functions = [], []
    for folder in PACKAGE:
        for path in sorted(folder.rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            where = path.relative_to(ROOT).as_posix()
            if len(text.splitlines()) > MODULE_LINES:
                modules.append(f"{where}: {len(text.splitlines())} lines")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > LONGER.get(node.name, FUNCTION_LINES):
                        functions.append(f"{where}:{node.lineno} {node.name}: {lines} lines")
    return modules, functions


def test_modules_and_functions_stay_small():
    modules, functions = sizes()
    assert not modules, f"modules over {MODULE_LINES} lines: {modules}"
    assert not functions, f"functions over {FUNCTION_LINES} lines: {functions}"


def test_the_floors_hold():
    from importlinter.cli import lint_imports

    # exit code 0: every contract kept (the report on stdout names any import that breaks one)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def test_every_floor_says_what_it_holds_and_may_import():
    for init in sorted((ROOT / "train").glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "import" in doc.lower(), f"{init.relative_to(ROOT)}: say what lives here and what it may import"
