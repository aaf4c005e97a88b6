"""Packaging: one `crosstune` namespace in site-packages, ranges in pyproject.toml, exact pins in constraints.txt."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_installed_under_one_crosstune_namespace(tmp_path):
    # from a folder outside the repository: only the installed packages are visible
    code = ("import importlib.util as u, crosstune.data.types, crosstune.train.cli;"
            "print(u.find_spec('data') is None, u.find_spec('train') is None)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"], "a top-level `data` or `train` package is installed"
    main = subprocess.run([sys.executable, "-m", "crosstune.train", "train", "--help"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert main.returncode == 0 and "--resume" in main.stdout


def test_library_requirements_are_ranges_and_ci_pins_them_exactly():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"]
    assert not [d for d in deps if "==" in d], "the library must not force one torch or transformers on its users"
    transformers = next(d for d in deps if d.startswith("transformers"))
    lower = tuple(int(x) for x in re.search(r">=([\d.]+)", transformers).group(1).split("."))
    assert lower >= (4, 56), "from_pretrained(dtype=...) needs transformers 4.56"
    pins = [l for l in (ROOT / "constraints.txt").read_text().splitlines() if l and not l.startswith("#")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[\w.+]+", l) for l in pins)
    assert "torch==2.13.0" in pins
    for path in ("README.md", ".ci/run"):
        assert 'pip install -e ".[dev]" -c constraints.txt' in (ROOT / path).read_text(), path
