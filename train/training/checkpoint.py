"""Checkpoint folders `step_000500/`: naming, finding the latest, pruning, and what to resume from."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from crosstune.data.types import DataError
from crosstune.train.artifact.model import safetensors_problem

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


STATE_KEYS = ("step", "epoch", "batch_in_epoch", "best")


def zip_problem(path: Path) -> str | None:
    """torch.save writes a zip archive whose index sits at the end: a truncated file has none."""
    import zipfile

    try:
        with zipfile.ZipFile(path):
            return None
    except (zipfile.BadZipFile, OSError) as e:
        return f"is truncated or corrupt ({e})"


def checkpoint_problem(path: Path) -> str | None:
    """What makes a checkpoint unusable for --resume, found without loading it: '<file> <problem>' or None."""
    meta = path / "trainer_state.json"
    if not meta.is_file():
        return "trainer_state.json is missing"
    try:
        state = json.loads(meta.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return f"trainer_state.json is not JSON ({e})"
    missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        return f"trainer_state.json lacks {', '.join(missing)}"
    folder = path / "state"
    weights = [folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).is_file()]
    if not weights:
        return "state/ has no model weights (model.safetensors)"
    files = [weights[0], folder / "optimizer.bin", folder / "scheduler.bin", folder / "random_states_0.pkl"]
    for f in files:
        if not f.is_file():
            return f"{f.relative_to(path)} is missing"
        if f.stat().st_size == 0:
            return f"{f.relative_to(path)} is empty"
    for f in files[:3]:
        if problem := (safetensors_problem(f) if f.suffix == ".safetensors" else zip_problem(f)):
            return f"{f.relative_to(path)} {problem}"
    return None


def validate_checkpoint(path: Path, run_dir: Path) -> Path:
    """Refuse a checkpoint that would fail (or half-load) in accelerator.load_state, naming the file and the way out."""
    problem = checkpoint_problem(path)
    if problem is None:
        return path
    older = [p.name for _, p in list_checkpoints(run_dir) if p != path and checkpoint_problem(p) is None]
    way_out = "no other intact checkpoint here"
    if older:
        way_out = f"resume from the newest intact one, --resume {run_dir / older[-1]}" + (
            f" (intact: {', '.join(older)})" if len(older) > 1 else "")
    raise DataError(f"--resume {path}: {problem}; {way_out}, or start over with --overwrite")


def resolve_resume(resume: str | None, run_dir: Path) -> Path | None:
    """`--resume latest` takes the highest step of this run; `--resume PATH` a given checkpoint."""
    if not resume:
        return None
    if resume == "latest":
        found = list_checkpoints(run_dir)
        if not found:
            aside = " (an earlier run set aside by --overwrite is in .replaced/)" if (run_dir / ".replaced").exists() else ""
            raise DataError(f"--resume latest: no step_* checkpoint in {run_dir}{aside}; start without --resume")
        return validate_checkpoint(found[-1][1], run_dir)
    path = Path(resume)
    if not (path / "state").is_dir() or not (path / "trainer_state.json").exists():
        raise DataError(f"--resume {path}: not a crosstune checkpoint (needs state/ and trainer_state.json)")
    return validate_checkpoint(path, path.parent)


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
