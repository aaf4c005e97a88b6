"""The steps `crosstune adapt` runs: each an existing command (mine, train, export, evaluate) on <run>/adapt.yaml with
a few overrides, the command line it equals (for commands.sh), the output that shows it finished, and its share of
the budget."""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from crosstune.train.artifact.model import resolve_model
from crosstune.train.artifact.outputs import write_atomic
from crosstune.train.config import load_config, mined_dir, run_dir
from crosstune.train.config.checks import format_duration
from crosstune.train.recipes.common import evaluation_pairs
from crosstune.train.recipes.evaluate import evaluate_command
from crosstune.train.recipes.export import export_command
from crosstune.train.recipes.mine import mine_command
from crosstune.train.recipes.train import train
from crosstune.train.training.checkpoint import list_checkpoints
from crosstune.train.training.plan import load_plan

# the warm-up's share of the time left when it starts, when judged queries follow: BENCHMARKS.md's measured order
# (pseudo-queries, then the judged queries) gave each phase the same 300 steps
PSEUDO_SHARE = 0.45
# the onnx-int8 export after training (trace, fuse, quantise, hash): seconds, plus the weights at this rate
INT8_S, INT8_BYTES_S = 10.0, 5e6
PSEUDO = ["run.name=pseudo", "mining.pseudo_queries=all"]


@dataclass
class Step:
    name: str
    command: str  # the same step as a command line
    run: Callable[[float], None]  # called with the seconds left before the deadline
    done: Callable[[], bool]
    overrides: list[str] = field(default_factory=list)


def cli(command: str, config: Path, overrides: list[str], flags: str = "") -> str:
    return " ".join(["crosstune", command, "--config", str(config), *([flags] if flags else []), *overrides])


def phase_steps(phase: str, config: Path, extra: list[str], final: bool) -> list[Step]:
    """mine, train, export (hf) of one phase; the final phase also exports onnx-int8 and evaluates the test split."""
    cfg = load_config(config, extra)
    out, mined = run_dir(cfg), mined_dir(cfg)
    tested = (Path(cfg.data.path) / "qrels" / "test.tsv").is_file()  # --test-qrels, or a handful of judged queries
    share = 1.0 if final else PSEUDO_SHARE

    def train_step(left: float) -> None:
        seconds = left * share
        int8_s = INT8_S + model_bytes(cfg.model.name) / INT8_BYTES_S
        after = (evaluation_pairs(cfg, "test") if tested else 0, int8_s) if final else (0, 0.0)
        copy_embeddings(config, extra)
        c = load_config(config, [*extra, f"train.time_budget={format_duration(seconds)}"])
        train(c, resume="latest" if list_checkpoints(out) else None, after=after)

    steps = [Step(f"{phase}: mine", cli("mine", config, extra), lambda _: mine_command(load_config(config, extra)),
                  lambda: (mined / "dataset").is_dir()),
             Step(f"{phase}: train", cli("train", config, [*extra, "train.time_budget=<its share>"]), train_step,
                  lambda: bool(finished_plan(out))),
             Step(f"{phase}: export", cli("export", config, extra), lambda _: export_command(load_config(config, extra)),
                  lambda: (out / "export" / "crosstune.json").is_file())]
    if final:
        steps.append(Step(f"{phase}: export onnx-int8", cli("export", config, extra, "--format onnx-int8"),
                          lambda _: export_command(load_config(config, extra), fmt="onnx-int8"),
                          lambda: (out / "export-onnx-int8" / "crosstune.json").is_file()))
        if tested:
            steps.append(Step(f"{phase}: evaluate test", cli("evaluate", config, extra, "--split test"),
                              lambda _: evaluate_command(load_config(config, extra), str(out / "export"), "test",
                                                         overwrite=True),
                              lambda: (out / "eval_test" / "report.json").is_file()))
    return steps


def steps_for(mode: str, config: Path, overrides: list[str]) -> list[Step]:
    if mode != "pseudo+judged":
        return phase_steps("pseudo-queries", config, [*overrides, *PSEUDO], True)
    warm = load_config(config, [*overrides, *PSEUDO])
    judged = [*overrides, f"model.name={run_dir(warm) / 'export'}", "train.dev_at_start=false"]
    return phase_steps("pseudo-queries", config, [*overrides, *PSEUDO], False) + \
        phase_steps("judged queries", config, judged, True)


def run_steps(steps: list[Step], state: dict, run: Path, deadline: float) -> None:
    """Each step not done yet, in order; the time each took is added to <run>/adapt.json as it finishes."""
    for step in steps:
        if step.name in state["done"] and step.done():
            continue
        print(f"\n== adapt | {step.name}: {step.command}  "
              f"({format_duration(max(0.0, deadline - time.time()))} left)", flush=True)
        t0 = time.time()
        step.run(deadline - time.time())
        seconds = time.time() - t0
        state["done"].append(step.name)
        state["seconds"][step.name] = round(seconds, 1)
        state["spent_s"] = round(state["spent_s"] + seconds, 1)
        write_atomic(run / "adapt.json", json.dumps(state, indent=2))


def finished_plan(out: Path) -> str:
    """How the run's time-budget plan ended ("" while it has not)."""
    plan = load_plan(out)
    return plan.ended_by if plan else ""


def model_bytes(name: str) -> float:
    """Size of the starting model's weights (the trained one's are the same size)."""
    folder = Path(resolve_model(name))
    return float(sum(p.stat().st_size for p in folder.glob("*.safetensors"))) if folder.is_dir() else 0.0


def copy_embeddings(config: Path, extra: list[str]) -> None:
    """The warm-up's bi-encoder cache serves the judged phase too: the same passages, the same holdout."""
    cfg = load_config(config, extra)
    warm = mined_dir(load_config(config, [o for o in extra if not o.startswith("model.name=")] + PSEUDO))
    src, dst = warm / "biencoder", mined_dir(cfg) / "biencoder"
    if src.is_dir() and src != dst and not dst.exists():
        shutil.copytree(src, dst)
