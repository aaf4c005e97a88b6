"""`crosstune train` (and `accelerate launch -m crosstune.train`): the run as numbered steps around the loop."""
from __future__ import annotations

from crosstune.train.artifact.model import load_model, load_tokenizer
from crosstune.train.config import Config
from crosstune.train.evaluation.dashboard import plot_runs
from crosstune.train.training.devcheck import DevSet, dev_check
from crosstune.train.training.loop import Loop, run_loop
from crosstune.train.training.losses import chance_loss, make_loss
from crosstune.train.training.setup import (
    banner,
    data_loader,
    optimization,
    resume_state,
    start_run,
)
from crosstune.train.training.student import dev_at_start, freeze


def train(cfg: Config, resume: str | None = None, overwrite: bool = False, cpu: bool = False) -> dict:
    # 1. inputs checked before the run folder is touched; accelerator, run folder, resolved config
    accelerator, out, resume_path = start_run(cfg, resume, overwrite, cpu)
    # 2. data: mined groups, tokenized per batch in the collate function; the split that chooses
    tokenizer = load_tokenizer(cfg.model.name, cfg.model.max_length)
    dataset, loader = data_loader(cfg, tokenizer)
    dev = DevSet(cfg, accelerator) if cfg.data.dev_split else None
    # 3. model, optimizer, schedule, loss
    model = load_model(cfg.model.name, cfg.train.dropout, cfg.model.layers)
    params = freeze(model, cfg.model)
    model, optimizer, loader, scheduler, steps = optimization(cfg, accelerator, model, loader)
    t = cfg.train
    loop = Loop(cfg, accelerator, model, tokenizer, optimizer, scheduler, loader, dataset, dev, out, steps,
                make_loss(t.loss, t.group_size, t.pos_weight, t.distill_weight, t.distill_temperature, t.teacher_scale),
                chance_loss(t.loss, t.group_size, t.pos_weight))
    # 4. resume: model, optimizer, schedule and RNG from the checkpoint; the data order from (seed, epoch)
    state = resume_state(accelerator, out, resume_path, cfg)
    accelerator.print(banner(cfg, accelerator, len(dataset), steps, params, state.step))
    if resume_path is None and dev is not None and dev_at_start(cfg.train.dev_at_start, cfg.model.name):
        # the starting model's own scores, logged as step 0: what training then adds is read against them
        accelerator.print("dev check before training (step 0: the starting model)")
        state.best = dev_check(accelerator, model, tokenizer, cfg, dev, 0, state.best, out)
    # 5. the loop: log, dev checks (early stopping), checkpoints
    state, seconds, pairs_seen = run_loop(loop, state)
    # 6. what the run did, and its curves
    accelerator.end_training()
    summary = {"steps": state.step, "best_dev_ndcg@10": round(state.best, 4) if state.best >= 0 else None,
               "train_seconds": round(seconds, 1), "pairs_seen": pairs_seen}
    accelerator.print(f"train | {summary} -> {out}")
    if accelerator.is_main_process:
        accelerator.print(f"train | loss, learning rate and dev nDCG@10 over steps: {plot_runs([str(out)])}")
    return summary
