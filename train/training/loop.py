"""The training loop: reads like nanoGPT, powered by Accelerate (precision, accumulation, devices, state)."""
from __future__ import annotations

import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from crosstune.data.batching import group_logits
from crosstune.train.artifact.outputs import replace_dir
from crosstune.train.config import Config
from crosstune.train.training.checkpoint import prune, step_name
from crosstune.train.training.devcheck import dev_check
from crosstune.train.training.plan import agree, past_deadline
from crosstune.train.training.records import log_metrics
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
        replace_dir(tmp, final)
        prune(out, cfg.train.keep_last)
        discard_replaced(out)  # the run an --overwrite set aside goes once this one has a checkpoint
    accelerator.wait_for_everyone()


@dataclass
class LoopState:
    """What a checkpoint's trainer_state.json holds: where the loop is, and the best dev figure so far."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best: float = -1.0
    stale: int = 0  # dev checks since the last new best (early stopping)


@dataclass
class Loop:
    """Everything the loop runs with, built by the recipe."""

    cfg: Config
    accelerator: Any
    model: Any
    tokenizer: Any
    optimizer: Any
    scheduler: Any
    loader: Any
    dataset: Any
    dev: Any  # a DevSet, or None
    out: Path
    steps: int
    loss_fn: Callable
    chance: float
    plan: Any = None  # a training/plan.Plan under train.time_budget
    resumed: bool = False  # a resumed run keeps its plan's steps: no deadline cut (the deadline was the first run's)
    busy_s: float = 0.0  # seconds spent in dev checks and checkpoints (the step rate leaves them out)


def run_loop(loop: Loop, state: LoopState) -> tuple[LoopState, float, int]:
    """Optimizer steps until loop.steps (or early stopping); returns (state, seconds, pairs seen)."""
    cfg, acc, model = loop.cfg, loop.accelerator, loop.model
    model.train()
    losses, recent, warned = [], deque(maxlen=20), False
    bar = tqdm(total=loop.steps, initial=state.step, desc="train", unit="step", disable=not acc.is_main_process)
    t0, pairs_seen, first = time.time(), 0, state.step
    while state.step < loop.steps:
        # Accelerate forwards set_epoch only to the sampler: the dataset draws each epoch's negatives itself
        loop.dataset.set_epoch(state.epoch)
        loop.loader.set_epoch(state.epoch)
        skip = state.batch_in_epoch
        for batch in acc.skip_first_batches(loop.loader, skip) if skip else loop.loader:
            state.batch_in_epoch += 1
            with acc.accumulate(model):
                logits = group_logits(model, batch, cfg.train.group_size)
                loss = loop.loss_fn(logits, batch["labels"], batch.get("teacher"))
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm)
                loop.optimizer.step()
                loop.scheduler.step()
                loop.optimizer.zero_grad()
            losses.append(loss.item())
            pairs_seen += logits.numel() * acc.num_processes
            if not acc.sync_gradients:
                continue  # count optimizer steps, not micro-batches
            state.step += 1
            bar.update(1)
            step_s = (time.time() - t0 - loop.busy_s) / (state.step - first)
            step_loss = acc.gather(torch.tensor(sum(losses) / len(losses), device=acc.device)).mean().item()
            recent.append((step_loss, logits.detach().float().std().item()))
            losses = []
            if state.step % cfg.train.log_every == 0 or state.step == loop.steps:
                record = {"step": state.step, "epoch": state.epoch, "loss": round(step_loss, 5),
                          "elapsed_s": round(time.time() - t0, 3), "lr": loop.scheduler.get_last_lr()[0],
                          "pairs_per_s": round(pairs_seen / (time.time() - t0), 1)}
                log_metrics(acc, loop.out, record)
                bar.set_postfix(loss=f"{step_loss:.4f}", **eta(loop, state.step, step_s))
                if not warned and (reason := collapse_reason(recent, loop.chance)):
                    warned = True
                    acc.print(f"warning: {reason}")
            if loop.plan is not None and not loop.resumed:
                budget_end(loop, state, step_s)
            busy = time.time()
            after_step(loop, state)
            loop.busy_s += time.time() - busy
            if state.step >= loop.steps:
                break
        else:
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
    bar.close()
    return state, time.time() - t0, pairs_seen


def eta(loop: Loop, step: int, step_s: float) -> dict:
    """The progress bar's "done by" under a time budget: steps left at the rate so far, checks left, the export."""
    if loop.plan is None:
        return {}
    done = loop.plan.eta(step, loop.dev is not None, time.time(), step_s)
    return {"done_by": time.strftime("%H:%M:%S", time.localtime(done))}


def budget_end(loop: Loop, state: LoopState, step_s: float) -> None:
    """End the run at this step when one more, then the final check and the export, would overrun the budget: the
    machine turned out slower than the plan measured. The step gets the final dev check and checkpoint."""
    if state.step >= loop.steps:
        return
    if agree(loop.accelerator, past_deadline(loop.plan, time.time(), step_s, loop.dev is not None)):
        loop.accelerator.print(f"train | train.time_budget {loop.cfg.train.time_budget} ends: stopping at step "
                               f"{state.step} of the {loop.plan.steps} planned ({step_s:.2f} s a step here, "
                               f"{loop.plan.step_s:.2f} s measured at the start)")
        loop.plan.ended_by = "deadline"
        loop.steps = state.step


def after_step(loop: Loop, state: LoopState) -> None:
    """The dev check (and early stopping: loop.steps is cut to this step) and the checkpoint an optimizer step is
    due; a final step gets both."""
    cfg, acc = loop.cfg, loop.accelerator
    if state.step == loop.steps or (cfg.train.eval_every > 0 and state.step % cfg.train.eval_every == 0):
        previous = state.best
        state.best = dev_check(acc, loop.model, loop.tokenizer, cfg, loop.dev, state.step, state.best, loop.out)
        state.stale = 0 if state.best > previous else state.stale + 1
        if cfg.data.dev_split and cfg.train.patience and state.stale >= cfg.train.patience and state.step < loop.steps:
            acc.print(f"early stop at step {state.step}: {state.stale} dev checks without a better nDCG@10 than "
                      f"{state.best:.4f} (train.patience={cfg.train.patience}); best/ holds that model")
            loop.steps = state.step  # ends the run, with a final checkpoint
    if state.step == loop.steps or state.step % cfg.train.save_every == 0:
        save_checkpoint(acc, loop.model, loop.tokenizer, cfg, loop.out, state.step, state.epoch,
                        state.batch_in_epoch, state.best, state.stale)
