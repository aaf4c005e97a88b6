"""Output folders: never clobber another run's output, and never leave a half-written one that looks done."""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from crosstune.data.types import DataError


def refuse_existing(path: Path, overwrite: bool, what: str) -> None:
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise DataError(f"{path} already holds {what}; pass --overwrite to replace it or set run.name to a new name")


@contextlib.contextmanager
def atomic_dir(path: Path):
    """Yield a temporary sibling folder; on success it replaces `path` by rename, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, path)


def replace_dir(src: Path, dst: Path) -> None:
    # rename is atomic; an old folder is moved aside first so a crash never leaves neither
    old = dst.with_name(f".{dst.name}.old")
    if dst.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


def write_atomic(path: Path, text: str) -> None:
    """Write a small file whole or not at all: a temporary sibling, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
