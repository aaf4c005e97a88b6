"""TODO docstring."""
from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import torch

from crosstune.data.types import DataError
from crosstune.train.config import Config, mined_dir
from crosstune.train.config import run_dir as config_run_dir
from crosstune.train.training.rundir import set_aside, trained_outputs


def dataset_dir(cfg: Config) -> Path:
    return Path(cfg.train.dataset) if cfg.train.dataset else mined_dir(cfg) / "dataset"


def trackers() -> list[str]:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return []
    return ["tensorboard"]


def scalar_config(cfg: Config) -> dict:
    """Trackers take flat scalars: train.lr -> 3e-05, lists as strings."""
    flat = {}
    for section, values in asdict(cfg).items():
        for k, v in values.items():
            flat[f"{section}.{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return flat


def make_optimizer(model, cfg: Config):
    # no weight decay on biases and LayerNorm weights, as in BERT's own recipe
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:  # frozen parameters (model.freeze_*) get no update and no optimizer state
            (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.train.lr)


def total_steps(cfg: Config, micro_batches_per_epoch: int) -> int:
    if cfg.train.max_steps > 0:
        return cfg.train.max_steps
    per_epoch = math.ceil(micro_batches_per_epoch / cfg.train.grad_accum)
    return max(1, math.ceil(cfg.train.epochs * per_epoch))


def prepare_run_dir(cfg: Config, resume: str | None, overwrite: bool, is_main: bool) -> Path:
    """Refuse to start over a trained run without --overwrite; otherwise set its outputs aside (never delete
    them here: that waits for the new run's first checkpoint). A run that never saved one blocks nothing."""
    out = config_run_dir(cfg)
    trained = trained_outputs(out)
    if trained and not resume and not overwrite:
        raise DataError(f"{out} already holds a training run ({trained[0].name}); pass --resume latest to continue, "
                        "--overwrite to start over, or set run.name to a new name")
    if is_main and not resume:
        set_aside(out)
    return out
