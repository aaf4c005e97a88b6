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

import numpy as np
import torch
from tqdm.auto import tqdm

from crosstune.data.batching import EpochSampler, GroupCollator, GroupDataset, group_logits
from crosstune.data.bm25 import load_or_build
from crosstune.data.judgments import load_judgments
from crosstune.data.types import DataError

from .checkpoint import abandon_after, prune, resolve_resume, step_name
from .aggregate import aggregate_run, budget_candidates, document_ranking
from .documents import load_passages
from .export import serving_config
from .config import Config, mined_dir, run_dir as config_run_dir, to_yaml
from .losses import chance_loss, make_loss
from .metrics import compare, headline
from .model import load_model, load_tokenizer
from .outputs import atomic_dir
from .biencoder import BiEncoderScorer
from .fusion import tune_weights
from .pipeline import Fusion, RankingPipeline
from .rerank import score_spread, with_tail
from .rundir import discard_replaced, preflight, set_aside, trained_outputs
from .scoring import CrossEncoderScorer, auto_precision
from .student import describe as describe_student, dev_at_start, freeze

log = logging.getLogger(__name__)


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


class ShardedScorer:
    """Each process scores its share of the pairs and every process gets all the scores back, in order: a dev
    check on N processes takes 1/N of the time, and no process idles in a collective while another scores."""

    def __init__(self, scorer, accelerator):
        self.scorer, self.accelerator = scorer, accelerator

    def score(self, pairs):
        from accelerate.utils import gather_object

        with self.accelerator.split_between_processes(list(pairs)) as share:
            part = [float(x) for x in self.scorer.score(share)] if share else []
        return np.asarray(gather_object(part), dtype=np.float32)


class DevSet:
    """BM25 top-`eval.depth` of the split that chooses (data.dev_split), fixed once; each check reranks them with
    the current model and tunes the fusion weights at the depth `evaluate` and serving apply them. With document
    judgments the candidates are the passages of BM25's top documents (the passage budget `evaluate` spends) and the
    checks rank documents by eval.aggregate, as `evaluate` does."""

    def __init__(self, cfg: Config, accelerator):
        accelerator.print(f"train | dev checks on split {cfg.data.dev_split!r}: loading the corpus and BM25's "
                          f"top-{cfg.eval.depth} candidates")
        corpus = load_passages(cfg)
        self.split = cfg.data.dev_split
        self.queries, judged = load_judgments(cfg.data, self.split, corpus)
        index = load_or_build(corpus, cfg.bm25, mined_dir(cfg) / "index", cfg.data.use_title)
        self.documents = judged.level == "document"
        self.qrels = judged.documents if self.documents else judged.passages
        e = cfg.eval
        self.how = (e.aggregate, e.aggregate_k, cfg.data.document_separator)
        if self.documents:
            self.first_stage = index.search(self.queries, max(e.depth, e.first_stage_depth))
            self.run = budget_candidates(self.first_stage, e.depth, *self.how)
        else:
            self.first_stage = self.run = index.search(self.queries, e.depth)
        self.corpus = corpus
        self.bi = biencoder_run(cfg, accelerator, self) if cfg.eval.biencoder else None

    def view(self, run):
        """What the judgments rank: the passages, or documents by their passages' scores."""
        return document_ranking(run, self.first_stage, *self.how) if self.documents else run

    def evaluate(self, model, tokenizer, cfg: Config, accelerator) -> dict:
        """Cross-encoder alone and fused (a weight set in eval.* stays fixed; the others are tuned here), ranked by
        the same pipeline `evaluate` and serving use."""
        scorer = CrossEncoderScorer(model, tokenizer, cfg.model.max_length, cfg.eval.batch_size, accelerator.mixed_precision,
                                    progress=accelerator.is_main_process, max_query_tokens=cfg.model.max_query_tokens)
        pipe = RankingPipeline(ShardedScorer(scorer, accelerator), depth=cfg.eval.depth, use_title=cfg.data.use_title)
        ce, _ = pipe.signals(self.run, self.queries, self.corpus)
        weight, bi_weight, _ = tune_weights(self.qrels, self.run, ce, self.bi, cfg.eval.fusion_weight,
                                            cfg.eval.biencoder_weight, view=self.view if self.documents else None)
        tuned = Fusion(weight, cfg.eval.biencoder or None, bi_weight, cfg.eval.depth, f"tuned on split {self.split!r}")
        bm25 = aggregate_run(self.first_stage, *self.how) if self.documents else self.run
        runs = {"BM25": bm25, "reranked": self.view(pipe.with_fusion(tuned).fuse(self.run, ce, self.bi)),
                "cross-encoder": self.view(with_tail(ce, self.run))}
        if self.bi is not None:
            runs["bi-encoder"] = self.view(with_tail(self.bi, self.run))
        report = compare(self.qrels, runs, [10])
        return {"split": self.split, "depth": cfg.eval.depth, "fusion_weight": weight, "biencoder_weight": bi_weight,
                "spread": score_spread(ce), **report}


def biencoder_run(cfg: Config, accelerator, dev: DevSet):
    """The bi-encoder does not train: its scores are computed once, each process embedding its share of the queries
    (only the main process keeps the on-disk cache, so no two write it)."""
    from accelerate.utils import gather_object

    cache = mined_dir(cfg) / "biencoder" if accelerator.is_main_process else None
    accelerator.print(f"train | bi-encoder {cfg.eval.biencoder}: scoring split {dev.split!r}'s BM25 top-{cfg.eval.depth} "
                      f"({len(dev.run)} queries) once before training; passage embeddings cached in "
                      f"{mined_dir(cfg) / 'biencoder'}")
    scorer = BiEncoderScorer(cfg.eval.biencoder, cache, progress=accelerator.is_main_process)
    with accelerator.split_between_processes(sorted(dev.run)) as qids:
        part = scorer.score_run({q: dev.run[q] for q in qids}, dev.queries, dev.corpus, cfg.eval.depth,
                                cfg.data.use_title)
    return dict(gather_object(list(part.items())))


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
        from .dashboard import plot_runs

        accelerator.print(f"train | loss, learning rate and dev nDCG@10 over steps: {plot_runs([str(out)])}")
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
    """Rerank the dev candidates on every process; the main one keeps the best model (and its fusion) in best/."""
    if dev is None:
        return best
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.eval()
    result = dev.evaluate(unwrapped, tokenizer, cfg, accelerator)
    unwrapped.train()
    m = result["metrics"]
    ndcg = m["nDCG@10"]["reranked"]
    log_metrics(accelerator, out, {"step": step, "dev/nDCG@10": round(ndcg, 4),
                                   "dev/ce_nDCG@10": round(m["nDCG@10"]["cross-encoder"], 4),
                                   "dev/bm25_nDCG@10": round(m["nDCG@10"]["BM25"], 4),
                                   "dev/MRR@10": round(m["MRR@10"]["reranked"], 4),
                                   "dev/fusion_weight": result["fusion_weight"],
                                   "dev/biencoder_weight": result["biencoder_weight"]})
    accelerator.print(f"step {step} {dev.split} {headline(result, 'reranked')} | cross-encoder alone "
                      f"{m['nDCG@10']['cross-encoder']:.3f}, BM25 weight {result['fusion_weight']}"
                      + (f", bi-encoder weight {result['biencoder_weight']}" if cfg.eval.biencoder else ""))
    if result["spread"] < 1e-6:
        accelerator.print("warning: every dev passage got the same score: the model has collapsed")
    # every process computed the same metrics, so `best` agrees everywhere without a broadcast
    if ndcg > best:
        best = ndcg
        if accelerator.is_main_process:
            with atomic_dir(out / "best") as tmp:
                unwrapped.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
                dev_metrics = {"step": step, **{k: v for k, v in result.items() if k != "per_query"}}
                (tmp / "dev_metrics.json").write_text(json.dumps(dev_metrics, indent=1))
                # the same manifest an export carries: evaluating best/ ranks with the fusion tuned here
                (tmp / "crosstune.json").write_text(json.dumps(serving_config(cfg, dev_metrics), indent=1))
    accelerator.wait_for_everyone()
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
