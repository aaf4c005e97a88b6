"""`crosstune demo`: mine -> train -> export -> evaluate on the bundled legal demo set, from any folder."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import crosstune.data
from crosstune.data.types import DataError
from crosstune.train.recipes.common import evaluation_pairs

# both ship inside the package (package data in pyproject.toml), so a wheel install runs the demo without the
# source tree: the config beside this recipe (configs/demo.yaml links to it), the data set in crosstune.data.
# HOME holds data/ and train/: the checkout's root in an editable install, site-packages/crosstune from a wheel
HOME = Path(crosstune.data.__file__).resolve().parent.parent
DEMO_CONFIG = Path(__file__).resolve().with_name("demo.yaml")
DEMO_DATA = HOME / "data" / "demo"


def plan_line(cfg, pairs: int) -> str:
    from crosstune.train.artifact.machine import describe_machine
    from crosstune.train.config.checks import parse_duration

    budget = cfg.train.time_budget
    eta = time.strftime("%H:%M:%S", time.localtime(time.time() + parse_duration(budget))) if budget else ""
    fit = (f"within train.time_budget {budget} from the start of training, fitted to this machine ({describe_machine()}"
           f"): done by ~{eta} plus the seconds mining takes; the training plan below gives its steps" if budget else
           f"for {cfg.train.max_steps or cfg.train.epochs} {'steps' if cfg.train.max_steps else 'epochs'}")
    return (f"demo | plan: mine BM25 hard negatives, train, export, then evaluate {pairs} (query, passage) pairs of "
            f"split {cfg.data.test_split!r}; training, export and evaluation {fit}")


def run_demo(args) -> None:
    from crosstune.train.config import load_config, run_dir
    from crosstune.train.recipes.evaluate import evaluate_command
    from crosstune.train.recipes.export import export_command
    from crosstune.train.recipes.mine import mine_command
    from crosstune.train.recipes.train import train

    cfg = load_config(args.config or DEMO_CONFIG, args.overrides)
    if cfg.data.path == "data/demo" and not Path(cfg.data.path).exists():
        cfg.data.path = str(DEMO_DATA)  # run from any folder: the demo set ships inside the package
    out = run_dir(cfg)
    previous = None
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            raise DataError(f"{out} already holds a demo run; pass --overwrite to replace it or run.name=<new name>")
        # a finished demo is set aside, not deleted, so one that fails part-way leaves it to move back; the
        # leftovers of an unfinished one go (an earlier finished one stays set aside)
        previous = out.with_name(f".{out.name}.previous")
        if (out / f"eval_{cfg.data.test_split}" / "report.md").exists():
            shutil.rmtree(previous, ignore_errors=True)
            out.rename(previous)
        else:
            shutil.rmtree(out)
        if previous.exists():
            print(f"demo | the previous {out} is kept in {previous} until this run finishes")
        else:
            previous = None
    seconds = {}
    after = (evaluation_pairs(cfg, cfg.data.test_split), 0.0)  # the evaluation runs inside train.time_budget too
    print(plan_line(cfg, after[0]))
    for name, step in [("mine", lambda: mine_command(cfg)), ("train", lambda: train(cfg, after=after)),
                       ("export", lambda: export_command(cfg)), ("evaluate", lambda: evaluate_command(cfg))]:
        print(f"\n== {name} ==")
        t0 = time.time()
        result = step()
        seconds[name] = time.time() - t0
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
    print("\n== demo: wall time per step ==")
    print("  ".join(f"{k} {v:.0f}s" for k, v in seconds.items()) + f"  total {sum(seconds.values()):.0f}s")
    from crosstune.train.evaluation.metrics import headline

    print(f"{headline(result, 'reranked')} on {result['queries']} held-out {cfg.data.test_split} queries; "
          f"report: {out / f'eval_{cfg.data.test_split}' / 'report.md'}")
