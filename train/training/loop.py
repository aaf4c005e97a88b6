"""The training loop: reads like nanoGPT, powered by Accelerate (precision, accumulation, devices, state)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from crosstune.train.config import Config
from crosstune.train.training.checkpoint import prune, step_name
from crosstune.train.training.rundir import discard_replaced

log = logging.getLogger(__name__)


def collapse_reason(recent, chance: float) -> str | None:
    """A run whose loss sits at chance and whose scores are all equal has stopped learning."""
    if len(recent) < recent.maxlen:
        return None
    mean_loss = sum(l for l, _ in recent) / len(recent)
    mean_std = sum(s for _, s in recent) / len(recent)
    if abs(mean_loss - chance) < 0.01 * chance and mean_std < 1e-3:
        return (f"training looks collapsed: loss {mean_loss:.4f} sits at chance ({chance:.4f}) and every passage "
                "gets the same score; lower train.lr, raise train.warmup_ratio, or check the mined positives")
    return None


def log_metrics(accelerator, out: Path, record: dict) -> None:
    if accelerator.is_main_process:
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
    accelerator.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])


def save_checkpoint(accelerator, model, tokenizer, cfg: Config, out: Path, step: int, epoch: int,
                    batch_in_epoch: int, best: float, stale: int = 0) -> None:
    """Written into a hidden temporary folder, renamed to step_NNNNNN/ only once complete."""
    final = out / step_name(step)
    tmp = out / f".{final.name}.tmp"
    if accelerator.is_main_process:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp / "state"))
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(tmp / "model")
        tokenizer.save_pretrained(tmp / "model")
        state = {"step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "best": best, "stale_checks": stale}
        (tmp / "trainer_state.json").write_text(json.dumps(state))
        from crosstune.train.artifact.outputs import replace_dir

        replace_dir(tmp, final)
        prune(out, cfg.train.keep_last)
        discard_replaced(out)  # the run an --overwrite set aside goes once this one has a checkpoint
    accelerator.wait_for_everyone()
