"""`train.time_budget`: a step count and dev-check schedule that fit the time given, from this machine's own costs.

Before the first optimizer step the loop times a few real forward+backward passes (gradients dropped, weights and
optimizer untouched, the seed set again after) and one scoring batch of the kind a dev check runs; the plan then
spends what is left of the budget on steps, a few dev checks with their checkpoints, and the export after the run.
The plan is written to <run>/plan.json: a resumed run keeps it, the model card shows it beside what ran.
"""
from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch

from crosstune.data.batching import group_logits
from crosstune.data.types import DataError
from crosstune.train.artifact.machine import describe_machine
from crosstune.train.artifact.outputs import write_atomic
from crosstune.train.config import Config
from crosstune.train.config.checks import format_duration, parse_duration

PLAN_FILE = "plan.json"
PROBE_STEPS = 3  # timed micro-batches after one untimed (allocation, first-call overheads); the median is kept
CHECK_SHARE = 0.15  # of the budget, at most, spent on dev checks and their checkpoints
MAX_EVENTS = 4  # dev checks (each with a checkpoint) a budgeted run makes at most, the final one included
# the hf export after the run (load, save, hash, card): a few seconds and the weights at ~30 MB/s (MiniLM-L6's 90 MB:
# ~6 s on a 2-core VM)
EXPORT_S, EXPORT_BYTES_S = 3.0, 30e6


@dataclass
class Plan:
    budget_s: float
    started: float  # time.time() when `crosstune train` started: loading and retrieval count against the budget
    step_s: float  # one optimizer step, measured here
    pair_s: float  # one (query, passage) pair scored as a dev check scores it, measured here
    check_s: float  # one dev check: its pairs x pair_s
    save_s: float  # one checkpoint (model + optimizer state), estimated from their size
    reserve_s: float  # kept for the export after the run
    steps: int
    eval_every: int  # optimizer steps between dev checks; checkpoints are written at each
    checks: int  # dev checks (or checkpoints, without a dev split), the final one included
    setup_s: float = 0.0  # what the run spent before the plan: loading, retrieval, the probe
    after_pairs: int = 0  # pairs the caller scores after the run within the budget (its evaluation)
    machine: str = ""  # where the costs were measured (artifact/machine.py)
    capped_by: str = ""  # "train.max_steps" when the cap, not the budget, set the step count
    ran_steps: Optional[int] = None
    ran_s: Optional[float] = None
    ended_by: str = ""  # plan | early stop | deadline

    @property
    def deadline(self) -> float:
        return self.started + self.budget_s

    def event_s(self, has_dev: bool) -> float:
        return self.save_s + (self.check_s if has_dev else 0.0)

    def describe(self, has_dev: bool) -> str:
        ends = time.strftime("%H:%M:%S", time.localtime(self.planned_end(has_dev)))
        what = f"{self.checks} dev check(s)" if has_dev else f"{self.checks} checkpoint(s)"
        cap = f", capped by {self.capped_by}" if self.capped_by else ""
        return (f"train | plan for train.time_budget {format_duration(self.budget_s)}: ~{self.steps} steps{cap}, "
                f"{what} (every {self.eval_every} steps), done by {ends} ({format_duration(self.reserve_s)} kept for "
                f"what follows: export{', evaluation' if self.after_pairs else ''}) | measured here: "
                f"{self.step_s:.2f} s a step, {self.pair_s * 1000:.1f} ms a scored pair, ~{self.check_s:.0f} s a dev "
                f"check ({self.machine})")

    def planned_end(self, has_dev: bool) -> float:
        """When the plan ends, the export included."""
        return (self.started + self.setup_s + self.steps * self.step_s + self.checks * self.event_s(has_dev)
                + self.reserve_s)

    def eta(self, step: int, has_dev: bool, now: float, step_s: float) -> float:
        """When the run will be done: the steps left at the rate measured so far, the checks left, the export."""
        events_left = math.ceil(self.steps / self.eval_every) - step // self.eval_every
        return now + (self.steps - step) * step_s + events_left * self.event_s(has_dev) + self.reserve_s


def fit(left_s: float, step_s: float, event_s: float, cap: int) -> tuple[int, int, int]:
    """(steps, eval_every, events) that fit `left_s` seconds: events (a dev check and a checkpoint each, the last at
    the final step) take up to CHECK_SHARE of it, at most MAX_EVENTS; the rest are steps, at most `cap` (0: none)."""
    events = 1 + max(0, min(MAX_EVENTS - 1, int(CHECK_SHARE * left_s / max(event_s, 1e-9)) - 1))
    steps = int((left_s - events * event_s) // step_s)
    if cap and steps > cap:
        steps = cap
    if steps < 1:
        return 0, 0, events
    every = math.ceil(steps / events)
    return steps, every, math.ceil(steps / every)


def state_bytes(model) -> int:
    """A checkpoint holds the weights and AdamW's two moments per trainable weight."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return total + 2 * trainable


def _to(batch: dict, device) -> dict:
    return {k: ([{n: t.to(device) for n, t in c.items()} for c in v] if k == "chunks"
                else v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}


def time_steps(accelerator, model, dataset, collate, cfg: Config, loss_fn) -> float:
    """Seconds of one optimizer step: real forward+backward of the first mined groups, gradients then dropped."""
    t = cfg.train
    # rows spread over the whole dataset: its first rows may all be one kind of pair (short headings, long clauses)
    n = t.batch_size * (PROBE_STEPS + 1)
    rows = [dataset[(k * len(dataset)) // n] for k in range(n)]
    batches = [_to(collate(rows[i * t.batch_size:(i + 1) * t.batch_size]), accelerator.device)
               for i in range(PROBE_STEPS + 1)]
    model.train()
    times = []
    for batch in batches:
        t0 = time.perf_counter()
        logits = group_logits(model, batch, t.group_size)
        accelerator.backward(loss_fn(logits, batch["labels"], batch.get("teacher")))
        times.append(time.perf_counter() - t0)
    model.zero_grad(set_to_none=True)
    return statistics.median(times[1:]) * t.grad_accum


def time_pairs(accelerator, model, tokenizer, dataset, cfg: Config) -> float:
    """Seconds a pair when a dev check scores: one batch of eval.batch_size mined pairs through the same scorer."""
    from crosstune.train.ranking.scorers import CrossEncoderScorer

    pairs = []
    for i in range(len(dataset)):
        query, group = dataset[i][0], dataset[i][1]
        pairs += [(query, text) for text in group]
        if len(pairs) >= 2 * cfg.eval.batch_size:
            break
    scorer = CrossEncoderScorer(model, tokenizer, cfg.model.max_length, cfg.eval.batch_size,
                                accelerator.mixed_precision, max_query_tokens=cfg.model.max_query_tokens)
    model.eval()
    scorer.score(pairs[:cfg.eval.batch_size])  # warm-up
    t0 = time.perf_counter()
    scorer.score(pairs[cfg.eval.batch_size:] or pairs)
    seconds = (time.perf_counter() - t0) / max(1, len(pairs[cfg.eval.batch_size:] or pairs))
    model.train()
    return seconds


def make_plan(cfg: Config, started: float, step_s: float, pair_s: float, dev_pairs: int, model,
              processes: int, upfront_checks: int = 0, after: tuple[int, float] = (0, 0.0)) -> Plan:
    """The plan for what is left of train.time_budget; a budget too small for one step is a one-line error.
    `upfront_checks`: dev checks run before the first step (train.dev_at_start), spent before the plan's own.
    `after`: (pairs, seconds) the caller spends after the run within the same budget (`crosstune demo` and `adapt`
    evaluate, and export to ONNX), reserved beside the hf export."""
    budget = parse_duration(cfg.train.time_budget)
    now = time.time()
    check_s = dev_pairs / max(1, processes) * pair_s * 1.1  # tuning and fusion on top of the scoring: ~10%
    save_s = 0.5 + state_bytes(model) / 150e6  # ~150 MB/s: a small VM's disk, with serialisation
    reserve = (EXPORT_S + sum(p.numel() * p.element_size() for p in model.parameters()) / EXPORT_BYTES_S
               + after[0] * pair_s * 1.1 + after[1])
    upfront = upfront_checks * check_s
    plan = Plan(budget, started, step_s, pair_s, check_s if dev_pairs else 0.0, save_s, reserve, 0, 0, 0,
                setup_s=now - started + upfront)
    left = plan.deadline - now - upfront - reserve
    cap = cfg.train.max_steps
    steps, every, events = fit(left, step_s, plan.event_s(bool(dev_pairs)), cap)
    if steps < 1:
        need = now - started + reserve + plan.event_s(bool(dev_pairs)) + 20 * step_s
        raise DataError(f"train.time_budget={cfg.train.time_budget} is too short here: loading took {now - started:.0f} "
                        f"s, a step costs {step_s:.1f} s and a dev check with its checkpoint "
                        f"{plan.event_s(bool(dev_pairs)):.0f} s; give at least {format_duration(need)}, or lower "
                        "eval.depth / train.batch_size")
    plan.steps, plan.eval_every, plan.checks, plan.after_pairs = steps, every, events, after[0]
    plan.machine = describe_machine()
    plan.capped_by = "train.max_steps" if cap and steps == cap else ""
    return plan


def save_plan(out: Path, plan: Plan) -> None:
    write_atomic(out / PLAN_FILE, json.dumps(asdict(plan), indent=2) + "\n")


def load_plan(out: Path) -> Optional[Plan]:
    path = out / PLAN_FILE
    if not path.is_file():
        return None
    try:
        return Plan(**json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError) as e:
        raise DataError(f"{path}: not a plan crosstune wrote ({e}); delete it to plan the resumed run again") from None


def past_deadline(plan: Plan, now: float, step_s: float, has_dev: bool) -> bool:
    """True when one more step, then the final check and checkpoint and the export, would end after the deadline."""
    return now + step_s + plan.event_s(has_dev) + plan.reserve_s > plan.deadline


def measured(accelerator, model, tokenizer, dataset, collate, cfg: Config, loss_fn, dev: bool) -> tuple[float, float]:
    """(seconds a step, seconds a scored pair) on this machine, the main process's figures for every process; the
    random state is restored after, so the run trains as it would without the probe."""
    from accelerate.utils import broadcast_object_list

    with torch.random.fork_rng(devices=[accelerator.device] if accelerator.device.type == "cuda" else []):
        step_s = time_steps(accelerator, model, dataset, collate, cfg, loss_fn)
        pair_s = time_pairs(accelerator, model, tokenizer, dataset, cfg) if dev else 0.0
    return tuple(broadcast_object_list([step_s, pair_s]))


def budget_plan(cfg: Config, accelerator, out: Path, resuming: bool, started: float, parts: dict,
                dev_pairs: int, extra_checks: int = 0, after: tuple[int, float] = (0, 0.0)) -> Optional[Plan]:
    """The run's plan under train.time_budget (None without one): a resumed run keeps the one it wrote; else it is
    measured and fitted now. The plan sets the dev-check and checkpoint schedule."""
    if not cfg.train.time_budget:
        return None
    plan = load_plan(out) if resuming else None
    if plan is None:
        step_s, pair_s = measured(accelerator, parts["model"], parts["tokenizer"], parts["dataset"], parts["collate"],
                                  cfg, parts["loss_fn"], dev_pairs > 0 or after[0] > 0)
        plan = make_plan(cfg, started, step_s, pair_s, dev_pairs, parts["model"], accelerator.num_processes,
                         extra_checks, after)
        if accelerator.is_main_process:
            save_plan(out, plan)
    cfg.train.eval_every = cfg.train.save_every = plan.eval_every
    return plan


def agree(accelerator, flag: bool) -> bool:
    """The main process's decision, for every process (each reads its own clock)."""
    if accelerator.num_processes == 1:
        return flag
    from accelerate.utils import broadcast_object_list

    return bool(broadcast_object_list([flag])[0])


def finish_plan(out: Path, plan: Plan, ran: int, planned: int) -> None:
    """What ran beside what was planned, for the model card."""
    plan.ran_steps, plan.ran_s = ran, round(time.time() - plan.started, 1)
    plan.ended_by = plan.ended_by or ("plan" if ran >= planned else "early stop")
    save_plan(out, plan)
