"""The house: the floors of train/ hold (import-linter's contracts in pyproject.toml, lazy imports included), no
module of the package is over 300 lines and no function over 60 (the training loop's body may run to 80)."""
from __future__ import annotations

import ast
import subprocess
import sys
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
    # in a process of its own: import-linter's command line reconfigures logging, which other tests read
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(ROOT / 'pyproject.toml')!r}, no_cache=True))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    # exit code 0: every contract kept (the report names any import that breaks one)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def test_every_floor_says_what_it_holds_and_may_import():
    for init in sorted((ROOT / "train").glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "import" in doc.lower(), f"{init.relative_to(ROOT)}: say what lives here and what it may import"
