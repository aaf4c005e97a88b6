"""Figures for reports and training runs: each function returns a matplotlib Figure, `save` writes a PNG.

Figures are built with the object-oriented API on a `Figure` of their own (no pyplot, no global state), and drawn
by the Agg canvas: nothing needs a display, so `crosstune evaluate` on a server and the tests draw the same PNGs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from crosstune.train.evaluation.analysis import kind

# one colour per system, the same in every figure: BM25 grey (the baseline), the reranker blue
COLOURS = {"BM25": "#8c8c8c", "reranked": "#1f77b4", "cross-encoder": "#ff7f0e", "bi-encoder": "#2ca02c"}


BETTER, SAME, WORSE = "#2ca02c", "#b0b0b0", "#d62728"


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # Agg draws it: no display needed
    return fig


def save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def metrics_figure(metrics: dict[str, dict[str, float]], intervals: dict[str, dict[str, list[float]]],
                   title: str = "") -> Figure:
    """Grouped bars: one group per metric, one bar per system (baseline first), 95% intervals as error bars."""
    names = list(metrics)
    systems = list(next(iter(metrics.values())))
    fig = new_figure(1.6 + 1.5 * len(names), 4.6)
    ax = fig.add_subplot()
    width = 0.8 / len(systems)
    x = np.arange(len(names))
    for i, system in enumerate(systems):
        means = np.array([metrics[m][system] for m in names])
        lo = np.array([intervals[m][system][0] for m in names])
        hi = np.array([intervals[m][system][1] for m in names])
        pos = x - 0.4 + width * (i + 0.5)
        ax.bar(pos, means, width, label=system, color=COLOURS.get(system), edgecolor="white",
               yerr=np.vstack([means - lo, hi - means]), capsize=3, error_kw={"elinewidth": 1, "ecolor": "#333333"})
        for p, v in zip(pos, means):  # at the bar's foot, clear of the interval's whiskers
            ax.text(p, 0.015, f"{v:.2f}", ha="center", va="bottom", fontsize=7, rotation=90,
                    color="white" if v > 0.1 else "black")
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("mean over queries (95% bootstrap interval)")
    ax.set_title(title or "BM25 vs reranked")
    fig.legend(loc="outside lower center", fontsize=8, ncols=len(systems))  # outside: bars reach the top
    ax.grid(axis="y", alpha=0.3)
    return fig


def change_figure(deltas: list[tuple[str, float]], counts: dict[str, int], metric: str = "nDCG@10") -> Figure:
    """Per-query change (reranked - BM25), sorted best first: one bar a query, green up, red down, grey unchanged."""
    fig = new_figure(7.5, 3.6)
    ax = fig.add_subplot()
    values = np.array([d for _, d in deltas])
    colours = [BETTER if c == "improved" else WORSE if c == "worse" else SAME for c in (kind(v) for v in values)]
    ax.bar(np.arange(len(values)), values, width=1.0, color=colours, edgecolor="none")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlim(-0.5, len(values) - 0.5)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xticks([])
    ax.set_xlabel(f"{len(values)} queries, sorted by change")
    ax.set_ylabel(f"{metric}: reranked - BM25")
    ax.set_title(f"{counts['improved']} improve, {counts['unchanged']} unchanged, {counts['worse']} get worse")
    # one proxy artist a class, so the legend names the colours even when a class is empty
    for label, colour in (("improved", BETTER), ("unchanged", SAME), ("worse", WORSE)):
        ax.bar([0], [0], color=colour, label=f"{label} ({counts[label]})")
    ax.legend(loc="upper right", fontsize=8)
    return fig


def depth_figure(points: list[dict], bm25: float, fused: tuple[int, float] | None, metric: str = "nDCG@10") -> Figure:
    """Quality (left axis) and estimated latency (right axis) over the rerank depth, the cross-encoder alone."""
    fig = new_figure(7.0, 4.8)
    ax = fig.add_subplot()
    depths = [p["depth"] for p in points]
    ax.plot(depths, [p[metric] for p in points], "o-", color=COLOURS["cross-encoder"],
            label=f"{metric}, cross-encoder alone")
    ax.axhline(bm25, color=COLOURS["BM25"], linestyle="--", label=f"{metric}, BM25 ({bm25:.3f})")
    if fused is not None:
        ax.plot([fused[0]], [fused[1]], "*", markersize=13, color=COLOURS["reranked"],
                label=f"{metric}, fused at depth {fused[0]} (weights tuned there)")
    ax.set_xscale("log")
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.minorticks_off()
    ax.set_xlabel("rerank depth (BM25 candidates scored per query; fewer where a query has fewer)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    right = ax.twinx()
    right.plot(depths, [p["ms_per_query"] for p in points], "s:", color="#444444", label="ms per query (estimated)")
    right.set_ylabel("ms per query (estimated)")
    right.set_ylim(bottom=0)
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    fig.legend(handles=handles, loc="outside lower center", fontsize=8, ncols=2)
    ax.set_title("Quality and cost over rerank depth\n(fusion weights fit one depth: the curve ranks by the "
                 "cross-encoder alone)", fontsize=10)
    return fig


def frontier_figure(points: list[dict], chosen: str, budget_ms: float | None, split: str = "") -> Figure:
    """Every configuration a latency budget chose from (nDCG@10 over estimated p95 ms a query), the frontier joined,
    the budget a vertical line and the chosen configuration starred."""
    fig = new_figure(7.5, 5.0)
    ax = fig.add_subplot()
    front = sorted((p for p in points if p.get("frontier")), key=lambda p: p["p95_ms"])
    ax.scatter([p["p95_ms"] for p in points], [p["nDCG@10"] for p in points], s=14, color="#999999",
               label="a configuration (depths, stages, weights)")
    ax.plot([p["p95_ms"] for p in front], [p["nDCG@10"] for p in front], "o-", color=COLOURS["reranked"],
            label="the frontier: no configuration is both more accurate and faster")
    for p in front:
        ax.annotate(p["label"], (p["p95_ms"], p["nDCG@10"]), fontsize=6, xytext=(3, -9), textcoords="offset points")
    best = next(p for p in points if p["label"] == chosen)
    ax.plot([best["p95_ms"]], [best["nDCG@10"]], "*", markersize=15, color=COLOURS["cross-encoder"],
            label=f"chosen: {chosen}")
    if budget_ms:
        ax.axvline(budget_ms, color="#cc3333", linestyle="--", label=f"budget {budget_ms:g} ms")
    ax.set_xscale("log")
    ax.set_xlabel("p95 ms a query on the machine that chose (BM25 + stages + bi-encoder, estimated)")
    ax.set_ylabel("nDCG@10" + (f" on {split} (the choosing split: in-sample)" if split else ""))
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", fontsize=8, ncols=2)
    ax.set_title("Accuracy and latency of every configuration the budget chose from", fontsize=10)
    return fig
