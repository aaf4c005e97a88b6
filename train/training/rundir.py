"""A run folder's lifecycle: check every input before touching it; set an old run aside rather than delete it.

`train --overwrite` used to delete the previous run first, so a typo in the new config lost it. Now the
trainer checks its inputs (`preflight`), moves the old run into `<run>/.replaced/<time>/` (`set_aside`), and
deletes that only once the new run has written its first checkpoint (`discard_replaced`). `<run>/mined/`
belongs to `crosstune mine` and is never moved.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from crosstune.data.loading import check_files
from crosstune.data.types import DataError
from crosstune.train.artifact.model import check_model_source
from crosstune.train.config import Config
from crosstune.train.training.checkpoint import list_checkpoints
from crosstune.train.training.student import check_student
from crosstune.train.training.teacher import check_teacher_scores

log = logging.getLogger(__name__)


REPLACED = ".replaced"


# what training writes, and what was derived from its model: an old export/ or eval_*/ left beside a new run
# would be what `evaluate` and `rerank` pick up
OUTPUTS = ("best", "metrics.jsonl", "training.png", "tensorboard", "config.yaml", "export", "abandoned")


MODELS = ("best", "export")


def run_outputs(out: Path) -> list[Path]:
    """Everything of an earlier training run in `out` (never mined/ or hidden folders)."""
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if p.name in OUTPUTS or p.name.startswith(("step_", "eval_", "export-")))


def trained_outputs(out: Path) -> list[Path]:
    """The outputs that hold a trained model: starting over without --overwrite must not discard them."""
    return ([p for _, p in list_checkpoints(out)] + [out / m for m in MODELS if (out / m).exists()]
            + sorted(out.glob("export-*")))  # the ONNX exports


def check_mined(dataset: Path, group_size: int) -> None:
    """The mined dataset exists, has rows, and each row has the negatives a group needs (reads the Arrow
    metadata and one column, not the texts)."""
    if not (dataset / "dataset_info.json").exists():
        raise DataError(f"{dataset}: no mined dataset; run `crosstune mine` with this config first, or set train.dataset")
    import pyarrow.compute as pc
    from datasets import load_from_disk

    try:
        ds = load_from_disk(str(dataset))
    except (OSError, ValueError) as e:
        raise DataError(f"{dataset}: unreadable mined dataset ({str(e).splitlines()[0]}); "
                        "run `crosstune mine --overwrite`") from None
    if len(ds) == 0:
        raise DataError(f"{dataset}: the mined dataset is empty; see mined/stats.json for why queries were dropped")
    missing = {"query", "positive", "negatives"} - set(ds.column_names)
    if missing:
        raise DataError(f"{dataset}: not a mined dataset (no column {', '.join(sorted(missing))}); "
                        "point train.dataset at the dataset folder `crosstune mine` writes")
    have = pc.min(pc.list_value_length(ds.data.column("negatives"))).as_py()
    if have < group_size - 1:
        raise DataError(f"train.group_size={group_size} needs {group_size - 1} negatives per row but the mined rows "
                        f"in {dataset} have {have}; lower train.group_size or mine again with more negatives")


def preflight(cfg: Config, dataset: Path) -> None:
    """Every input of a training run that can be checked cheaply, before its run folder is touched."""
    check_model_source(cfg.model.name, "model.name", cfg.model.max_length, allow_onnx=False)
    check_mined(dataset, cfg.train.group_size)
    check_student(cfg.model)
    check_teacher_scores(dataset, cfg.train.loss)
    if cfg.data.dev_split:
        check_files(cfg.data, [cfg.data.dev_split])


def set_aside(out: Path) -> Path | None:
    """Move an earlier run's outputs into <run>/.replaced/<time>/; returns that folder (None if nothing to move)."""
    found, trained = run_outputs(out), trained_outputs(out)
    if not found:
        return None
    aside = out / REPLACED / time.strftime("%Y%m%d-%H%M%S")
    while aside.exists():  # two starts within a second
        aside = aside.with_name(aside.name + "+")
    aside.mkdir(parents=True)
    for p in found:
        os.replace(p, aside / p.name)  # same file system: a rename, nothing is copied
    what = "the previous run" if trained else "the leftovers of a run that saved no checkpoint"
    log.warning("moved %s (%s) to %s; it is deleted once this run writes its first checkpoint, and can be moved "
                "back until then", what, ", ".join(p.name for p in found), aside)
    return aside


def discard_replaced(out: Path) -> None:
    """The new run has a checkpoint of its own: what it replaced can go."""
    shutil.rmtree(out / REPLACED, ignore_errors=True)
