"""Checkpoint folders `step_000500/`: naming, finding the latest, pruning, and what to resume from."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from crosstune.data.types import DataError

STEP_DIR = re.compile(r"^step_(\d+)$")


def step_name(step: int) -> str:
    return f"step_{step:06d}"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first, ordered by step (never by file times)."""
    if not run_dir.exists():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    return sorted(found)


def prune(run_dir: Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` checkpoints (0 keeps every one)."""
    if keep_last <= 0:
        return
    for _, path in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)


def resolve_resume(resume: str | None, run_dir: Path) -> Path | None:
    """`--resume latest` takes the highest step of this run; `--resume PATH` a given checkpoint."""
    if not resume:
        return None
    if resume == "latest":
        found = list_checkpoints(run_dir)
        if not found:
            raise DataError(f"--resume latest: no step_* checkpoint in {run_dir}; start without --resume")
        return found[-1][1]
    path = Path(resume)
    if not (path / "state").is_dir() or not (path / "trainer_state.json").exists():
        raise DataError(f"--resume {path}: not a crosstune checkpoint (needs state/ and trainer_state.json)")
    return path


def model_folder(path: Path) -> Path:
    """A checkpoint keeps its Hugging Face model in model/; an export or best/ is one itself."""
    return path / "model" if (path / "model" / "config.json").exists() else path
