"""Packaging: one `crosstune` namespace in site-packages, ranges in pyproject.toml, exact pins in constraints.txt."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
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


def test_the_wheel_ships_every_train_subpackage_the_demo_data_and_the_demo_config(tmp_path):
    # a folder missing from [tool.setuptools] packages or package-data still works editable and breaks only once
    # installed from the wheel: build one (a few seconds) and read its file list. From a copy of what the build
    # reads: setuptools never empties an old build/lib, whose leftovers would hide a package dropped from the list
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("data", "train"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(src), "-w", str(tmp_path)],
                   capture_output=True, text=True, check=True)
    (wheel,) = tmp_path.glob("crosstune-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    subpackages = {p.parent.name for p in (ROOT / "train").glob("*/__init__.py")}
    assert {"recipes", "serving", "training", "evaluation", "ranking", "artifact"} <= subpackages
    for folder in ["train", "data", *(f"train/{sub}" for sub in sorted(subpackages))]:
        package = "crosstune/" + folder
        modules = {p.name for p in (ROOT / folder).glob("*.py")}
        shipped = {n.rsplit("/", 1)[1] for n in names if n.rsplit("/", 1)[0] == package}
        assert modules <= shipped, f"{package} lacks {sorted(modules - shipped)} in the wheel"
    demo = [p.relative_to(ROOT / "data").as_posix() for p in (ROOT / "data" / "demo").rglob("*") if p.is_file()]
    assert demo and {f"crosstune/data/{d}" for d in demo} <= names
    assert "crosstune/train/recipes/demo.yaml" in names
    # configs/demo.yaml (the README's path) is the same file as the one the wheel ships, not a second copy
    assert (ROOT / "configs" / "demo.yaml").resolve() == ROOT / "train" / "recipes" / "demo.yaml"
    assert not [n for n in names if n.split("/")[0] in ("data", "train", "configs", "tests")]
