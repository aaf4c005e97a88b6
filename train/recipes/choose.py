"""`crosstune choose`: choose again, on this machine, the ranking a trained run's best/ ships under a latency budget.

Training chooses at its end when eval.latency_budget_ms or eval.stage_models is set; this does the same for a run
already trained (a student distilled from it afterwards, another budget, another machine), then `crosstune export`
copies the choice into the export.
"""
from __future__ import annotations

from crosstune.data.types import DataError
from crosstune.train.config import Config, run_dir
from crosstune.train.training.cascade_choice import check_stage_models, choose_cascade, wants_choice
from crosstune.train.training.devcheck import DevSet


def choose_command(cfg: Config) -> dict:
    # 1. what to choose for and from, checked before anything loads
    best = run_dir(cfg) / "best"
    if not (best / "config.json").is_file():
        raise DataError(f"{best} holds no model: train the run first (crosstune train with data.dev_split set)")
    if not wants_choice(cfg):
        raise DataError("crosstune choose needs a budget or stages to choose from: give eval.latency_budget_ms=MS "
                        "and/or eval.stage_models=[EXPORT, ...]")
    check_stage_models(cfg)
    # 2. the split that chose best/, retrieved as the dev checks retrieved it; then the choice, into best/
    from accelerate import Accelerator

    dev = DevSet(cfg, Accelerator(cpu=True))
    out = choose_cascade(cfg, dev, best)
    print("choose | best/ now ranks with it; `crosstune export --overwrite` puts it in the export")
    return out
