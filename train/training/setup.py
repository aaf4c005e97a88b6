"""What the loop is built from: the dataset folder, trackers, optimizer, step count and the run folder's state."""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path

import torch

from crosstune.data.batching import EpochSampler, GroupCollator, GroupDataset
from crosstune.data.types import DataError
from crosstune.train.config import Config, mined_dir, to_yaml
from crosstune.train.config import run_dir as config_run_dir
from crosstune.train.ranking.scorers import auto_precision
from crosstune.train.training.checkpoint import abandon_after, resolve_resume
from crosstune.train.training.loop import LoopState
from crosstune.train.training.rundir import preflight, set_aside, trained_outputs
from crosstune.train.training.student import describe as describe_student


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


def start_run(cfg: Config, resume: str | None, overwrite: bool, cpu: bool):
    """(accelerator, run folder, checkpoint to resume from): inputs checked before the folder is touched, the old
    run set aside, the resolved config written, the seed set."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

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
    resume_path = resolve_resume(resume, out)
    prepare_run_dir(cfg, resume, overwrite, accelerator.is_main_process)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(to_yaml(cfg))
    accelerator.wait_for_everyone()  # nobody starts before an --overwrite has cleared the folder
    set_seed(cfg.train.seed)
    return accelerator, out, resume_path


def data_loader(cfg: Config, tokenizer):
    """(dataset, loader) of the mined groups, in a seeded epoch order."""
    from datasets import load_from_disk

    t = cfg.train
    dataset = GroupDataset(load_from_disk(str(dataset_dir(cfg))), t.group_size, t.seed)  # preflight-checked
    # the loader's own generator: starting an iterator draws a seed from it, and a draw from the global RNG
    # would shift every dropout mask after a resume
    loader = torch.utils.data.DataLoader(dataset, batch_size=t.batch_size, sampler=EpochSampler(len(dataset), t.seed),
                                         generator=torch.Generator().manual_seed(t.seed),
                                         collate_fn=GroupCollator(tokenizer, cfg.model.max_length, t.forward_chunk,
                                                                  cfg.model.max_query_tokens),
                                         num_workers=t.num_workers)
    return dataset, loader


def prepared(cfg: Config, accelerator, model, loader):
    """(model, optimizer, loader) prepared by Accelerate."""
    return accelerator.prepare(model, make_optimizer(model, cfg), loader)


def make_scheduler(cfg: Config, accelerator, optimizer, steps: int):
    """The learning-rate schedule over `steps` optimizer steps, prepared by Accelerate."""
    from transformers import get_scheduler

    n_proc = accelerator.num_processes
    # a prepared scheduler steps once per process per optimizer step, so its horizon is scaled to match
    scheduler = get_scheduler("constant_with_warmup" if cfg.train.schedule == "constant" else cfg.train.schedule,
                              optimizer, num_warmup_steps=int(cfg.train.warmup_ratio * steps) * n_proc,
                              num_training_steps=steps * n_proc)
    return accelerator.prepare(scheduler)


def resume_state(accelerator, out: Path, resume_path: Path | None, cfg: Config) -> LoopState:
    """Where the loop starts: step 0, or the checkpoint's step with its model, optimizer, schedule and RNG loaded
    (what the run wrote after that step is moved to abandoned/). Starts the trackers."""
    state = LoopState()
    if resume_path is not None:
        from accelerate.utils import broadcast_object_list

        accelerator.load_state(str(resume_path / "state"))
        saved = json.loads((resume_path / "trainer_state.json").read_text())
        state = LoopState(saved["step"], saved["epoch"], saved["batch_in_epoch"], saved["best"],
                          saved.get("stale_checks", 0))
        # every process must agree on `best`: they decide early stopping from it in step
        main = accelerator.is_main_process
        moved = broadcast_object_list([abandon_after(out, state.step) if main else None])[0]
        if moved:
            accelerator.print(f"resume | step {state.step}: moved what the run wrote after it ({', '.join(moved)}) "
                              f"to {out / 'abandoned'}/, so a later --resume latest cannot pick it up")
        if "best" in moved:
            state.best, state.stale = -1.0, 0  # best/ came from an abandoned step: the next dev check writes one
    if accelerator.is_main_process:
        accelerator.init_trackers("tensorboard", config=scalar_config(cfg))  # -> <run>/tensorboard/
    return state


def banner(cfg: Config, accelerator, groups: int, steps: int, params: tuple[int, int], step: int) -> str:
    """One line before the loop: examples, effective batch, optimizer steps, precision, processes."""
    group, n_proc = cfg.train.group_size, accelerator.num_processes
    eff = cfg.train.batch_size * cfg.train.grad_accum * n_proc
    return (f"crosstune train | {groups} groups of {group} ({groups * group} pairs) | effective batch "
            f"{eff} groups ({eff * group} pairs) | {steps} optimizer steps (~{steps * eff / groups:.2f} epochs) | "
            f"precision {accelerator.mixed_precision}{' (auto)' if cfg.train.precision == 'auto' else ''} | "
            f"{n_proc} process(es) on {accelerator.device} | {describe_student(*params, cfg.model)}"
            + (f" | resuming at step {step}" if step else ""))
