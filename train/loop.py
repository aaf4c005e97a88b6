"""The training loop: reads like nanoGPT, powered by Accelerate (precision, accumulation, devices, state)."""
from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import deque
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from crosstune.data.batching import EpochSampler, GroupCollator, GroupDataset, group_logits
from crosstune.data.bm25 import load_or_build
from crosstune.data.loading import load_corpus, load_split
from crosstune.data.types import DataError

from .checkpoint import list_checkpoints, prune, resolve_resume, step_name
from .config import Config, run_dir as config_run_dir, to_yaml
from .losses import chance_loss, make_loss
from .metrics import compare, headline
from .model import load_model, load_tokenizer
from .outputs import atomic_dir
from .biencoder import BiEncoderScorer
from .fusion import fuse, tune_weights
from .rerank import score_candidates, score_spread, with_tail
from .rundir import discard_replaced, preflight, set_aside, trained_outputs
from .scoring import CrossEncoderScorer

log = logging.getLogger(__name__)


def mined_dir(cfg: Config) -> Path:
    return config_run_dir(cfg) / "mined"


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


class DevSet:
    """BM25 candidates for the dev queries, fixed once; each check reranks them with the current model."""

    def __init__(self, cfg: Config):
        corpus = load_corpus(cfg.data)
        self.queries, self.qrels = load_split(cfg.data, cfg.data.dev_split, corpus)
        index = load_or_build(corpus, cfg.bm25, mined_dir(cfg) / "index", cfg.data.use_title)
        self.corpus, self.run = corpus, index.search(self.queries, cfg.eval.dev_depth)
        # the bi-encoder does not train: its scores are computed once
        self.bi = BiEncoderScorer(cfg.eval.biencoder, mined_dir(cfg) / "biencoder").score_run(
            self.run, self.queries, corpus, cfg.eval.dev_depth, cfg.data.use_title) if cfg.eval.biencoder else None

    def evaluate(self, model, tokenizer, cfg: Config) -> dict:
        """Cross-encoder alone and fused (weights fixed by eval.fusion_weight / biencoder_weight or tuned here)."""
        scorer = CrossEncoderScorer(model, tokenizer, cfg.model.max_length, cfg.eval.batch_size, cfg.train.precision,
                                    progress=True)
        ce = score_candidates(self.run, self.queries, self.corpus, scorer, cfg.eval.dev_depth, cfg.data.use_title)
        weight, bi_weight = cfg.eval.fusion_weight, cfg.eval.biencoder_weight or 0.0
        if weight is None or (self.bi is not None and cfg.eval.biencoder_weight is None):
            weight, bi_weight, _ = tune_weights(self.qrels, self.run, ce, self.bi)
        runs = {"BM25": self.run, "reranked": with_tail(fuse(self.run, ce, weight, self.bi, bi_weight), self.run),
                "cross-encoder": with_tail(ce, self.run)}
        if self.bi is not None:
            runs["bi-encoder"] = with_tail(self.bi, self.run)
        report = compare(self.qrels, runs, [10])
        return {"fusion_weight": weight, "biencoder_weight": bi_weight, "spread": score_spread(ce), **report}


def make_optimizer(model, cfg: Config):
    # no weight decay on biases and LayerNorm weights, as in BERT's own recipe
    decay, no_decay = [], []
    for name, p in model.named_parameters():
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
    accelerator = Accelerator(mixed_precision=cfg.train.precision, gradient_accumulation_steps=cfg.train.grad_accum,
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
    ddir = dataset_dir(cfg)
    if not (ddir / "dataset_info.json").exists():
        raise DataError(f"{ddir}: no mined dataset; run `crosstune mine` with this config first, or set train.dataset")
    tokenizer = load_tokenizer(cfg.model.name, cfg.model.max_length)
    dataset = GroupDataset(load_from_disk(str(ddir)), cfg.train.group_size, cfg.train.seed)
    if len(dataset) == 0:
        raise DataError(f"{ddir}: the mined dataset is empty; see mined/stats.json for why queries were dropped")
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.train.batch_size,
                                         sampler=EpochSampler(len(dataset), cfg.train.seed),
                                         collate_fn=GroupCollator(tokenizer, cfg.model.max_length, cfg.train.forward_chunk),
                                         num_workers=cfg.train.num_workers)
    dev = DevSet(cfg) if cfg.data.dev_split and is_main else None

    # 3. model, optimizer, schedule
    model = load_model(cfg.model.name, cfg.train.dropout)
    optimizer = make_optimizer(model, cfg)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    steps = total_steps(cfg, len(loader))
    n_proc = accelerator.num_processes
    # a prepared scheduler steps once per process per optimizer step, so its horizon is scaled to match
    scheduler = get_scheduler("constant_with_warmup" if cfg.train.schedule == "constant" else cfg.train.schedule,
                              optimizer, num_warmup_steps=int(cfg.train.warmup_ratio * steps) * n_proc,
                              num_training_steps=steps * n_proc)
    scheduler = accelerator.prepare(scheduler)
    loss_fn = make_loss(cfg.train.loss, cfg.train.group_size, cfg.train.pos_weight)
    chance = chance_loss(cfg.train.loss, cfg.train.group_size, cfg.train.pos_weight)

    # 4. resume: model, optimizer, schedule and RNG from the checkpoint; the data order from (seed, epoch)
    step, epoch, batch_in_epoch, best, stale = 0, 0, 0, -1.0, 0
    if resume_path is not None:
        accelerator.load_state(str(resume_path / "state"))
        state = json.loads((resume_path / "trainer_state.json").read_text())
        step, epoch, batch_in_epoch, best = state["step"], state["epoch"], state["batch_in_epoch"], state["best"]
        stale = state.get("stale_checks", 0)
    if is_main:
        accelerator.init_trackers("tensorboard", config=scalar_config(cfg))  # -> <run>/tensorboard/

    group, eff = cfg.train.group_size, cfg.train.batch_size * cfg.train.grad_accum * n_proc
    accelerator.print(
        f"crosstune train | {len(dataset)} groups of {group} ({len(dataset) * group} pairs) | effective batch "
        f"{eff} groups ({eff * group} pairs) | {steps} optimizer steps (~{steps * eff / len(dataset):.2f} epochs) | "
        f"precision {cfg.train.precision} | {n_proc} process(es) on {accelerator.device}"
        + (f" | resuming at step {step}" if step else ""))

    # 5. the loop
    model.train()
    losses, recent, warned = [], deque(maxlen=20), False
    bar = tqdm(total=steps, initial=step, desc="train", unit="step", disable=not is_main)
    t0, pairs_seen = time.time(), 0
    while step < steps:
        loader.set_epoch(epoch)
        epoch_loader = accelerator.skip_first_batches(loader, batch_in_epoch) if batch_in_epoch else loader
        for batch in epoch_loader:
            batch_in_epoch += 1
            with accelerator.accumulate(model):
                logits = group_logits(model, batch, group)
                loss = loss_fn(logits, batch["labels"])
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
    return summary


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


def dev_check(accelerator, model, tokenizer, cfg: Config, dev: DevSet | None, step: int, best: float, out: Path) -> float:
    """Rerank the dev candidates on the main process; keep the best model in best/."""
    if dev is not None:
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.eval()
        result = dev.evaluate(unwrapped, tokenizer, cfg)
        unwrapped.train()
        m = result["metrics"]
        ndcg = m["nDCG@10"]["reranked"]
        log_metrics(accelerator, out, {"step": step, "dev/nDCG@10": round(ndcg, 4),
                                       "dev/ce_nDCG@10": round(m["nDCG@10"]["cross-encoder"], 4),
                                       "dev/bm25_nDCG@10": round(m["nDCG@10"]["BM25"], 4),
                                       "dev/MRR@10": round(m["MRR@10"]["reranked"], 4),
                                       "dev/fusion_weight": result["fusion_weight"],
                                       "dev/biencoder_weight": result["biencoder_weight"]})
        accelerator.print(f"step {step} dev {headline(result, 'reranked')} | cross-encoder alone "
                          f"{m['nDCG@10']['cross-encoder']:.3f}, BM25 weight {result['fusion_weight']}"
                          + (f", bi-encoder weight {result['biencoder_weight']}" if cfg.eval.biencoder else ""))
        if result["spread"] < 1e-6:
            accelerator.print("warning: every dev passage got the same score: the model has collapsed")
        if ndcg > best:
            best = ndcg
            with atomic_dir(out / "best") as tmp:
                unwrapped.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
                (tmp / "dev_metrics.json").write_text(json.dumps({"step": step, **result}, indent=1))
    accelerator.wait_for_everyone()
    if accelerator.num_processes > 1:  # every process writes `best` into its checkpoint state
        from accelerate.utils import broadcast_object_list

        best = broadcast_object_list([best])[0]
    return best


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
        from .outputs import replace_dir

        replace_dir(tmp, final)
        prune(out, cfg.train.keep_last)
        discard_replaced(out)  # the run an --overwrite set aside goes once this one has a checkpoint
    accelerator.wait_for_everyone()
