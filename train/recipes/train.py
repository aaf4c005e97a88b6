"""`crosstune train` (and `accelerate launch -m crosstune.train`): the run as numbered steps around the loop."""
from __future__ import annotations

import time

from crosstune.train.artifact.model import load_model, load_tokenizer
from crosstune.train.config import Config
from crosstune.train.evaluation.dashboard import plot_runs
from crosstune.train.training.cascade_choice import check_budget, check_stage_models, choose_cascade, wants_choice
from crosstune.train.training.devcheck import DevSet, dev_check
from crosstune.train.training.loop import Loop, run_loop
from crosstune.train.training.losses import chance_loss, make_loss
from crosstune.train.training.plan import budget_plan, finish_plan
from crosstune.train.training.setup import (
    banner,
    data_loader,
    make_scheduler,
    prepared,
    resume_state,
    start_run,
    total_steps,
)
from crosstune.train.training.student import dev_at_start, freeze


def train(cfg: Config, resume: str | None = None, overwrite: bool = False, cpu: bool = False,
          after: tuple[int, float] = (0, 0.0)) -> dict:
    """`after`: (pairs scored, seconds spent) after this run inside train.time_budget, by a caller that evaluates or
    exports to ONNX within the same budget (demo, adapt)."""
    # 1. inputs checked before the run folder is touched; accelerator, run folder, resolved config
    started = time.time()  # train.time_budget counts from here: loading and retrieval spend it too
    check_stage_models(cfg)
    accelerator, out, resume_path = start_run(cfg, resume, overwrite, cpu)
    # 2. data: mined groups, tokenized per batch in the collate function; the split that chooses
    tokenizer = load_tokenizer(cfg.model.name, cfg.model.max_length)
    dataset, loader = data_loader(cfg, tokenizer)
    dev = DevSet(cfg, accelerator) if cfg.data.dev_split else None
    # 3. model, optimizer, schedule, loss
    model = load_model(cfg.model.name, cfg.train.dropout, cfg.model.layers)
    params = freeze(model, cfg.model)
    check_budget(cfg, dev, model, tokenizer, accelerator.num_processes)  # an impossible latency budget stops here
    model, optimizer, loader = prepared(cfg, accelerator, model, loader)
    t = cfg.train
    loss_fn = make_loss(t.loss, t.group_size, t.pos_weight, t.distill_weight, t.distill_temperature, t.teacher_scale)
    # 4. the step count: train.max_steps / epochs, or what fits train.time_budget as measured here
    at_start = resume_path is None and dev is not None and dev_at_start(t.dev_at_start, cfg.model.name)
    plan = budget_plan(cfg, accelerator, out, resume_path is not None, started,
                       dict(model=model, tokenizer=tokenizer, dataset=dataset, collate=loader.collate_fn,
                            loss_fn=loss_fn), dev.pairs(cfg) if dev else 0, int(at_start), after)
    steps = plan.steps if plan else total_steps(cfg, len(loader))
    loop = Loop(cfg, accelerator, model, tokenizer, optimizer, make_scheduler(cfg, accelerator, optimizer, steps),
                loader, dataset, dev, out, steps, loss_fn, chance_loss(t.loss, t.group_size, t.pos_weight), plan,
                resumed=resume_path is not None)
    # 5. resume: model, optimizer, schedule and RNG from the checkpoint; the data order from (seed, epoch)
    state = resume_state(accelerator, out, resume_path, cfg)
    accelerator.print(banner(cfg, accelerator, len(dataset), steps, params, state.step))
    if plan:
        accelerator.print(plan.describe(dev is not None) + (" (the plan this run made when it started)"
                                                            if resume_path is not None else ""))
    if at_start:
        # the starting model's own scores, logged as step 0: what training then adds is read against them
        accelerator.print("dev check before training (step 0: the starting model)")
        state.best = dev_check(accelerator, model, tokenizer, cfg, dev, 0, state.best, out)
    # 6. the loop: log, dev checks (early stopping), checkpoints
    state, seconds, pairs_seen = run_loop(loop, state)
    if plan and accelerator.is_main_process:
        finish_plan(out, plan, state.step, steps)
    # 7. under eval.latency_budget_ms (or with eval.stage_models): the ranking best/ ships, chosen on the dev split
    # on this machine, by the main process alone (two processes timing at once would each measure the other)
    cascade = None
    if wants_choice(cfg) and dev is not None and (out / "best").is_dir():
        if accelerator.is_main_process:
            cascade = choose_cascade(cfg, dev, out / "best", accelerator.print)
        accelerator.wait_for_everyone()
    # 8. what the run did, and its curves
    accelerator.end_training()
    summary = {"steps": state.step, **({"planned_steps": plan.steps} if plan else {}), "best_dev_ndcg@10": round(state.best, 4) if state.best >= 0 else None,
               "train_seconds": round(seconds, 1), "pairs_seen": pairs_seen,
               **({"cascade": cascade["chosen"]["label"]} if cascade else {})}
    accelerator.print(f"train | {summary} -> {out}")
    if accelerator.is_main_process:
        accelerator.print(f"train | loss, learning rate and dev nDCG@10 over steps: {plot_runs([str(out)])}")
    return summary
