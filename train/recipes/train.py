"""TODO docstring."""
from __future__ import annotations

import json
import os
import time
from collections import deque

import torch
from tqdm.auto import tqdm

from crosstune.data.batching import EpochSampler, GroupCollator, GroupDataset, group_logits
from crosstune.data.types import DataError
from crosstune.train.artifact.model import load_model, load_tokenizer
from crosstune.train.config import Config, to_yaml
from crosstune.train.config import run_dir as config_run_dir
from crosstune.train.ranking.scorers import auto_precision
from crosstune.train.training.checkpoint import abandon_after, resolve_resume
from crosstune.train.training.devcheck import DevSet, dev_check
from crosstune.train.training.loop import collapse_reason, log_metrics, save_checkpoint
from crosstune.train.training.losses import chance_loss, make_loss
from crosstune.train.training.rundir import preflight
from crosstune.train.training.setup import (
    dataset_dir,
    make_optimizer,
    prepare_run_dir,
    scalar_config,
    total_steps,
    trackers,
)
from crosstune.train.training.student import describe as describe_student
from crosstune.train.training.student import dev_at_start, freeze


def train(cfg: Config, resume: str | None = None, overwrite: bool = False, cpu: bool = False) -> dict:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from datasets import load_from_disk
    from transformers import get_scheduler

    # 1. inputs checked before the run folder is touched; accelerator, run folder, resolved config
    out = config_run_dir(cfg)
    preflight(cfg, dataset_dir(cfg))
    world = int(os.environ.get("WORLD_SIZE", 1))
    # without CUDA, Accelerate only joins torchrun's processes into one run when told cpu=True;
    # otherwise each would train alone and they would overwrite each other's checkpoints
    cpu = cpu or (world > 1 and not torch.cuda.is_available())
    precision = cfg.train.precision
    if precision == "auto":  # measured on this machine: bf16 is not faster on every CPU that has it
        precision = auto_precision(torch.device("cuda" if torch.cuda.is_available() and not cpu else "cpu"))
    accelerator = Accelerator(mixed_precision=precision, gradient_accumulation_steps=cfg.train.grad_accum,
                              log_with=trackers(), project_dir=str(out), cpu=cpu)
    if accelerator.num_processes != world:
        raise DataError(f"launched {world} processes but Accelerate joined {accelerator.num_processes}; "
                        "check the accelerate config (configs/accelerate/)")
    is_main = accelerator.is_main_process
    resume_path = resolve_resume(resume, out)
    prepare_run_dir(cfg, resume, overwrite, is_main)
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(to_yaml(cfg))
    accelerator.wait_for_everyone()  # nobody starts before an --overwrite has cleared the folder
    set_seed(cfg.train.seed)

    # 2. data: mined groups, tokenized per batch in the collate function
    tokenizer = load_tokenizer(cfg.model.name, cfg.model.max_length)
    dataset = GroupDataset(load_from_disk(str(dataset_dir(cfg))), cfg.train.group_size, cfg.train.seed)  # preflight-checked
    # the loader's own generator: starting an iterator draws a seed from it, and a draw from the global RNG
    # would shift every dropout mask after a resume
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.train.batch_size,
                                         sampler=EpochSampler(len(dataset), cfg.train.seed),
                                         generator=torch.Generator().manual_seed(cfg.train.seed),
                                         collate_fn=GroupCollator(tokenizer, cfg.model.max_length, cfg.train.forward_chunk,
                                                                  cfg.model.max_query_tokens),
                                         num_workers=cfg.train.num_workers)
    dev = DevSet(cfg, accelerator) if cfg.data.dev_split else None

    # 3. model, optimizer, schedule
    model = load_model(cfg.model.name, cfg.train.dropout, cfg.model.layers)
    params = freeze(model, cfg.model)
    optimizer = make_optimizer(model, cfg)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    steps = total_steps(cfg, len(loader))
    n_proc = accelerator.num_processes
    # a prepared scheduler steps once per process per optimizer step, so its horizon is scaled to match
    scheduler = get_scheduler("constant_with_warmup" if cfg.train.schedule == "constant" else cfg.train.schedule,
                              optimizer, num_warmup_steps=int(cfg.train.warmup_ratio * steps) * n_proc,
                              num_training_steps=steps * n_proc)
    scheduler = accelerator.prepare(scheduler)
    loss_fn = make_loss(cfg.train.loss, cfg.train.group_size, cfg.train.pos_weight, cfg.train.distill_weight,
                        cfg.train.distill_temperature, cfg.train.teacher_scale)
    chance = chance_loss(cfg.train.loss, cfg.train.group_size, cfg.train.pos_weight)

    # 4. resume: model, optimizer, schedule and RNG from the checkpoint; the data order from (seed, epoch)
    step, epoch, batch_in_epoch, best, stale = 0, 0, 0, -1.0, 0
    if resume_path is not None:
        accelerator.load_state(str(resume_path / "state"))
        state = json.loads((resume_path / "trainer_state.json").read_text())
        step, epoch, batch_in_epoch, best = state["step"], state["epoch"], state["batch_in_epoch"], state["best"]
        stale = state.get("stale_checks", 0)
        from accelerate.utils import broadcast_object_list

        # every process must agree on `best`: they decide early stopping from it in step
        moved = broadcast_object_list([abandon_after(out, step) if is_main else None])[0]
        if moved:
            accelerator.print(f"resume | step {step}: moved what the run wrote after it ({', '.join(moved)}) to "
                              f"{out / 'abandoned'}/, so a later --resume latest cannot pick it up")
        if "best" in moved:
            best, stale = -1.0, 0  # best/ came from an abandoned step: the next dev check writes a new one
    if is_main:
        accelerator.init_trackers("tensorboard", config=scalar_config(cfg))  # -> <run>/tensorboard/

    group, eff = cfg.train.group_size, cfg.train.batch_size * cfg.train.grad_accum * n_proc
    accelerator.print(
        f"crosstune train | {len(dataset)} groups of {group} ({len(dataset) * group} pairs) | effective batch "
        f"{eff} groups ({eff * group} pairs) | {steps} optimizer steps (~{steps * eff / len(dataset):.2f} epochs) | "
        f"precision {accelerator.mixed_precision}{' (auto)' if cfg.train.precision == 'auto' else ''} | "
        f"{n_proc} process(es) on {accelerator.device} | {describe_student(*params, cfg.model)}"
        + (f" | resuming at step {step}" if step else ""))
    if resume_path is None and dev is not None and dev_at_start(cfg.train.dev_at_start, cfg.model.name):
        # the starting model's own scores, logged as step 0: what training then adds is read against them
        accelerator.print("dev check before training (step 0: the starting model)")
        best = dev_check(accelerator, model, tokenizer, cfg, dev, 0, best, out)

    # 5. the loop
    model.train()
    losses, recent, warned = [], deque(maxlen=20), False
    bar = tqdm(total=steps, initial=step, desc="train", unit="step", disable=not is_main)
    t0, pairs_seen = time.time(), 0
    while step < steps:
        # Accelerate forwards set_epoch only to the sampler: the dataset draws each epoch's negatives itself
        dataset.set_epoch(epoch)
        loader.set_epoch(epoch)
        epoch_loader = accelerator.skip_first_batches(loader, batch_in_epoch) if batch_in_epoch else loader
        for batch in epoch_loader:
            batch_in_epoch += 1
            with accelerator.accumulate(model):
                logits = group_logits(model, batch, group)
                loss = loss_fn(logits, batch["labels"], batch.get("teacher"))
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            losses.append(loss.item())
            pairs_seen += logits.numel() * n_proc
            if not accelerator.sync_gradients:
                continue  # count optimizer steps, not micro-batches
            step += 1
            bar.update(1)
            step_loss = accelerator.gather(torch.tensor(sum(losses) / len(losses), device=accelerator.device)).mean().item()
            recent.append((step_loss, logits.detach().float().std().item()))
            losses = []
            if step % cfg.train.log_every == 0 or step == steps:
                record = {"step": step, "epoch": epoch, "loss": round(step_loss, 5), "elapsed_s": round(time.time() - t0, 3),
                          "lr": scheduler.get_last_lr()[0], "pairs_per_s": round(pairs_seen / (time.time() - t0), 1)}
                log_metrics(accelerator, out, record)
                bar.set_postfix(loss=f"{step_loss:.4f}")
                if not warned and (reason := collapse_reason(recent, chance)):
                    warned = True
                    accelerator.print(f"warning: {reason}")
            if step == steps or (cfg.train.eval_every > 0 and step % cfg.train.eval_every == 0):
                previous, best = best, dev_check(accelerator, model, tokenizer, cfg, dev, step, best, out)
                stale = 0 if best > previous else stale + 1
                if cfg.data.dev_split and cfg.train.patience and stale >= cfg.train.patience and step < steps:
                    accelerator.print(f"early stop at step {step}: {stale} dev checks without a better nDCG@10 "
                                      f"than {best:.4f} (train.patience={cfg.train.patience}); best/ holds that model")
                    steps = step  # ends the run below, with a final checkpoint
            if step == steps or step % cfg.train.save_every == 0:
                save_checkpoint(accelerator, model, tokenizer, cfg, out, step, epoch, batch_in_epoch, best, stale)
            if step >= steps:
                break
        else:
            epoch, batch_in_epoch = epoch + 1, 0
    bar.close()
    accelerator.end_training()
    summary = {"steps": step, "best_dev_ndcg@10": round(best, 4) if best >= 0 else None,
               "train_seconds": round(time.time() - t0, 1), "pairs_seen": pairs_seen}
    accelerator.print(f"train | {summary} -> {out}")
    if is_main:
        from crosstune.train.evaluation.dashboard import plot_runs

        accelerator.print(f"train | loss, learning rate and dev nDCG@10 over steps: {plot_runs([str(out)])}")
    return summary
