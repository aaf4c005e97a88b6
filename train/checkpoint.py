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


def abandon_after(run_dir: Path, step: int) -> list[str]:
    """Resuming at `step` abandons what the run wrote after it: newer step_* folders, a best/ chosen at a later
    step, and metrics.jsonl records past it. They move to abandoned/<time>/ (nothing is deleted), so neither a
    later `--resume latest` nor `export` picks them up and metrics.jsonl holds each step once."""
    import json
    import os
    import time

    target = run_dir / "abandoned" / time.strftime("%Y%m%d-%H%M%S")
    moved = []

    def move(path: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        os.replace(path, target / path.name)
        moved.append(path.name)

    for s, path in list_checkpoints(run_dir):
        if s > step:
            move(path)
    best = run_dir / "best" / "dev_metrics.json"
    if best.exists() and json.loads(best.read_text()).get("step", 0) > step:
        move(run_dir / "best")
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        keep, drop = [], []
        for line in metrics.read_text().splitlines(keepends=True):
            (keep if record_step(line) <= step else drop).append(line)
        if drop:
            target.mkdir(parents=True, exist_ok=True)
            (target / "metrics.jsonl").write_text("".join(drop))
            tmp = metrics.with_name(".metrics.jsonl.tmp")
            tmp.write_text("".join(keep))
            os.replace(tmp, metrics)
            moved.append("metrics.jsonl records")
    return moved


def record_step(line: str) -> float:
    """The step of a metrics.jsonl record; a line torn by a crash counts as past every step."""
    import json

    try:
        return json.loads(line).get("step", 0)
    except (json.JSONDecodeError, AttributeError):
        return float("inf")
