"""Training curves from `metrics.jsonl`: loss, learning rate and dev nDCG@10 over steps, one or several runs.

The loop appends one JSON object a line to <run>/metrics.jsonl: every `train.log_every` steps
{"step", "epoch", "loss", "lr", "elapsed_s", "pairs_per_s"}, and at every dev check {"step", "dev/nDCG@10",
"dev/ce_nDCG@10", "dev/bm25_nDCG@10", "dev/MRR@10", "dev/fusion_weight", ...}. `crosstune plot RUN [RUN...]` and
the end of `crosstune train` draw them; best/dev_metrics.json says which step best/ holds.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from crosstune.data.types import DataError
from crosstune.train.evaluation.plots import new_figure, save

RUN_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]


@dataclass
class RunCurves:
    name: str
    loss: list[tuple[int, float]] = field(default_factory=list)
    lr: list[tuple[int, float]] = field(default_factory=list)
    dev: list[tuple[int, float]] = field(default_factory=list)  # the fused ranking dev checks choose by
    dev_alone: list[tuple[int, float]] = field(default_factory=list)  # the cross-encoder alone
    dev_bm25: float | None = None
    best_step: int | None = None


def metrics_file(run: str | Path) -> Path:
    """A run folder (checkpoints/<run>) or its metrics.jsonl."""
    path = Path(run)
    found = path if path.is_file() else path / "metrics.jsonl"
    if not found.is_file():
        hint = f" (is it {Path('checkpoints') / path}?)" if not path.exists() and (Path("checkpoints") / path).exists() else ""
        raise DataError(f"{run}: no metrics.jsonl there{hint}; give a run folder `crosstune train` wrote, e.g. "
                        "checkpoints/demo")
    return found


def read_curves(run: str | Path, name: str | None = None) -> RunCurves:
    """The series of one run; a later record of a step replaces an earlier one (a resumed run logs it again)."""
    path = metrics_file(run)
    by_step: dict[str, dict[int, float]] = {"loss": {}, "lr": {}, "dev/nDCG@10": {}, "dev/ce_nDCG@10": {},
                                            "dev/bm25_nDCG@10": {}}
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            step = int(record["step"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise DataError(f"{path}:{n}: not a metrics record ({type(e).__name__}: {e}); each line must be a JSON "
                            "object with a step") from None
        for key, series in by_step.items():
            if isinstance(record.get(key), (int, float)):
                series[step] = float(record[key])
    if not by_step["loss"] and not by_step["dev/nDCG@10"]:
        raise DataError(f"{path}: no loss or dev records yet; plot a run once it has logged a step")
    folder = path.parent
    curves = RunCurves(name or folder.resolve().name,
                       *(sorted(by_step[k].items()) for k in ("loss", "lr", "dev/nDCG@10", "dev/ce_nDCG@10")))
    bm25 = list(by_step["dev/bm25_nDCG@10"].values())
    curves.dev_bm25 = bm25[-1] if bm25 else None  # the dev candidates are fixed: BM25's figure never changes
    curves.best_step = best_step(folder, curves.dev)
    return curves


def best_step(folder: Path, dev: list[tuple[int, float]]) -> int | None:
    """The step best/ holds (its dev_metrics.json), else the first step with the highest dev nDCG@10 (the loop keeps
    a new best only when it is strictly higher)."""
    meta = folder / "best" / "dev_metrics.json"
    if meta.is_file():
        try:
            return int(json.loads(meta.read_text())["step"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            pass  # a damaged best/ is the loop's business; fall back to the log
    if not dev:
        return None
    top = max(v for _, v in dev)
    return next(s for s, v in dev if v == top)


def smooth(values: list[float], window: int) -> np.ndarray:
    """Trailing mean over `window` points: the per-step loss of a small batch is too noisy to read a trend from."""
    v = np.asarray(values, dtype=float)
    c = np.cumsum(np.insert(v, 0, 0.0))
    out = np.empty_like(v)
    for i in range(len(v)):
        lo = max(0, i + 1 - window)
        out[i] = (c[i + 1] - c[lo]) / (i + 1 - lo)
    return out


def training_figure(runs: list[RunCurves]) -> Figure:
    """Three panels sharing the step axis: loss, learning rate, dev nDCG@10 with each run's best step starred."""
    fig = new_figure(8.0, 8.0)
    ax_loss, ax_lr, ax_dev = fig.subplots(3, 1, sharex=True)
    for i, run in enumerate(runs):
        colour = RUN_COLOURS[i % len(RUN_COLOURS)]
        if run.loss:
            steps, loss = zip(*run.loss)
            window = max(1, len(loss) // 20)
            ax_loss.plot(steps, loss, color=colour, alpha=0.3 if window > 1 else 1.0, linewidth=0.8,
                         label=f"{run.name}" if window == 1 else f"{run.name} (per step)")
            if window > 1:
                ax_loss.plot(steps, smooth(list(loss), window), color=colour, linewidth=1.8,
                             label=f"{run.name} (mean of {window})")
        if run.lr:
            ax_lr.plot(*zip(*run.lr), color=colour, label=run.name)
        if run.dev:
            ax_dev.plot(*zip(*run.dev), "o-", color=colour, label=f"{run.name} reranked (fused)")
        if run.dev_alone:
            ax_dev.plot(*zip(*run.dev_alone), ".:", color=colour, label=f"{run.name} cross-encoder alone")
        if run.dev_bm25 is not None:
            ax_dev.axhline(run.dev_bm25, color=colour, linestyle="--", linewidth=0.8, alpha=0.7,
                           label=f"{run.name} BM25 ({run.dev_bm25:.3f})")
        if run.best_step is not None and run.dev:
            value = dict(run.dev).get(run.best_step)
            if value is not None:
                ax_dev.plot([run.best_step], [value], "*", markersize=16, color=colour, markeredgecolor="black",
                            label=f"{run.name} best/: step {run.best_step}, {value:.3f}")
            for ax in (ax_loss, ax_lr, ax_dev):
                ax.axvline(run.best_step, color=colour, linestyle=(0, (1, 3)), linewidth=0.8)
    ax_loss.set_ylabel("training loss")
    ax_loss.ticklabel_format(axis="y", useOffset=False)  # an offset axis ("1e-5+1.386") hides the loss's level
    ax_dev.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_lr.set_ylabel("learning rate")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax_dev.set_ylabel("dev nDCG@10")
    ax_dev.set_xlabel("optimizer step")
    if not any(run.dev for run in runs):
        ax_dev.text(0.5, 0.5, "no dev checks (data.dev_split is empty)", ha="center", va="center",
                    transform=ax_dev.transAxes, color="#666666")
    for ax in (ax_loss, ax_lr, ax_dev):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    fig.suptitle("training: " + ", ".join(r.name for r in runs) + " (dotted vertical line: the step best/ holds)",
                 fontsize=10)
    return fig


def unique_names(paths: list[str]) -> list[str]:
    """Each run's folder name, or its path where two runs share a folder name."""
    names = [Path(p).resolve().name if Path(p).is_dir() else Path(p).resolve().parent.name for p in paths]
    return [str(p) if names.count(n) > 1 else n for p, n in zip(paths, names)]


def plot_runs(runs: list[str], output: str | Path | None = None) -> Path:
    """`crosstune plot`: one figure of all the runs; by default <run>/training.png for one run, else
    ./training_comparison.png."""
    if not runs:
        raise DataError("plot needs a run folder: crosstune plot checkpoints/demo [checkpoints/other ...]")
    curves = [read_curves(r, n) for r, n in zip(runs, unique_names(runs))]
    if output is None:
        output = metrics_file(runs[0]).parent / "training.png" if len(runs) == 1 else Path("training_comparison.png")
    output = Path(output)
    if output.suffix.lower() != ".png":
        raise DataError(f"--output {output}: give a .png file name")
    return save(training_figure(curves), output)
