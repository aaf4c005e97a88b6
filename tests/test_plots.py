"""Plots and report.md: the evaluation's figures and sections, training curves, `crosstune plot`, the statistics."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.container import BarContainer

from crosstune.data.types import DataError
from crosstune.train.cli import main
from crosstune.train.config import load_config, run_dir
from crosstune.train.evaluation.analysis import (
    bootstrap_ci,
    depth_curve,
    kind,
    missing_pairs,
    pick_examples,
    query_changes,
)
from crosstune.train.evaluation.dashboard import read_curves, training_figure
from crosstune.train.evaluation.plots import change_figure, depth_figure, metrics_figure
from crosstune.train.ranking.candidates import with_tail
from crosstune.train.recipes.evaluate import evaluate_command
from crosstune.train.recipes.train import train

ROOT = Path(__file__).resolve().parent.parent


def read_trec(path: Path) -> dict[str, list[str]]:
    run: dict[str, list[str]] = {}
    for row in path.read_text().splitlines():
        q, _, d, *_ = row.split()
        run.setdefault(q, []).append(d)
    return run


def labels(ax) -> list[str]:
    return ax.get_legend_handles_labels()[1]


def line(ax, label: str):
    found = [l for l in ax.get_lines() if l.get_label() == label]
    assert found, f"no line {label!r} among {[l.get_label() for l in ax.get_lines()]}"
    return found[0]


@pytest.fixture(scope="module")
def evaluated(tiny_model, mined_tiny, tmp_path_factory):
    """A tiny run (2 steps, fixed BM25 fusion weight) evaluated with a depth curve that reaches past eval.depth."""
    root = tmp_path_factory.mktemp("plots")

    def cfg(*extra):
        return load_config(ROOT / "configs" / "tiny.yaml",
                           [f"model.name={tiny_model}", f"run.root={root}", f"data.path={ROOT / 'data' / 'demo'}",
                            f"train.dataset={mined_tiny / 'dataset'}", "train.max_steps=4", "train.eval_every=2",
                            "eval.fusion_weight=0.3", *extra])

    trained = cfg()
    train(trained)
    report = evaluate_command(trained, model=str(run_dir(trained) / "best"), overwrite=True)
    return cfg, trained, report, run_dir(trained) / "eval_test"


# -- evaluate: files, report.json, report.md ----------------------------------------------------------------------------
def test_evaluate_writes_the_plots_and_links_them_from_report_md(evaluated):
    _, _, report, ev = evaluated
    text = (ev / "report.md").read_text()
    for name in ("metrics.png", "per_query_change.png", "depth_curve.png"):
        assert (ev / name).stat().st_size > 5000, name  # a drawn figure, not an empty canvas
        assert f"]({name})" in text
    for section in ("## Settings", "## Metrics", "## Per query: where reranking wins and loses",
                    "## Quality over rerank depth", "## Biggest wins", "## Biggest losses", "## Example queries"):
        assert section in text, section
    counts = report["per_query_change"]["counts"]
    assert f"**{counts['improved']} queries improve, {counts['unchanged']} are unchanged, {counts['worse']} get worse**" in text
    assert "| # | BM25 | reranked |" in text and "Judged relevant: `" in text


def test_report_md_shows_each_picked_query_with_both_top_3s(evaluated):
    cfg, trained, report, ev = evaluated
    text = (ev / "report.md").read_text()
    picks = report["examples"]
    assert len(picks["examples"]) == 3 and len(picks["wins"]) <= 3 and len(picks["losses"]) <= 3
    wins = text.split("## Biggest wins")[1].split("## Biggest losses")[0]
    losses = text.split("## Biggest losses")[1].split("## Example queries")[0]
    examples = text.split("## Example queries")[1]
    for section, qids in ((wins, picks["wins"]), (losses, picks["losses"]), (examples, picks["examples"])):
        for q in qids:
            assert f"**`{q}`**" in section
        # one table row a rank, 3 ranks a query; each cell starts with the passage's bold title
        assert section.count("\n| 1 | ") == section.count("\n| 3 | ") == len(qids)
    deltas = dict(map(tuple, report["per_query_change"]["deltas"]))
    assert all(deltas[q] > 0 for q in picks["wins"]) and all(deltas[q] < 0 for q in picks["losses"])
    if picks["wins"]:
        assert deltas[picks["wins"][0]] == max(deltas.values())
    # the BM25 column is BM25's own top 3, with titles and first words
    from crosstune.data.loading import load_corpus

    corpus = load_corpus(trained.data)
    q = picks["examples"][0]
    bm25, reranked = read_trec(ev / "bm25.trec"), read_trec(ev / "reranked.trec")
    row = examples.split(f"**`{q}`**")[1].split("\n| 1 | ")[1].split("\n")[0]
    left, right = row.rstrip(" |").split(" | ")
    for cell, first in ((left, bm25[q][0]), (right, reranked[q][0])):
        doc = corpus[first]
        assert cell.removeprefix("✓ ").startswith(f"**{doc.title}**: {' '.join(doc.text.split()[:5])}")


def test_report_json_holds_intervals_changes_and_the_curve(evaluated):
    _, trained, report, ev = evaluated
    saved = json.loads((ev / "report.json").read_text())
    assert saved["intervals"] == report["intervals"] and "bootstrap" in saved["intervals"]["method"]
    for metric, systems in report["metrics"].items():
        for system, mean in systems.items():
            lo, hi = report["intervals"]["mean"][metric][system]
            assert lo <= mean + 1e-12 and mean <= hi + 1e-12, (metric, system)
    before, after = report["per_query"]["BM25"]["nDCG@10"], report["per_query"]["reranked"]["nDCG@10"]
    expect = {"improved": 0, "unchanged": 0, "worse": 0}
    for q in before:
        expect[kind(after[q] - before[q])] += 1
    assert report["per_query_change"]["counts"] == expect and sum(expect.values()) == report["queries"]


def test_depth_curve_reuses_the_rerank_and_matches_the_cross_encoder_alone(evaluated):
    _, trained, report, ev = evaluated
    curve = report["depth_curve"]
    points = {p["depth"]: p for p in curve["points"]}
    assert sorted(points) == trained.eval.depth_curve == [5, 10, 20, 40]
    # at eval.depth the curve (cross-encoder alone) is the report's cross-encoder column, to the digit
    assert points[trained.eval.depth]["nDCG@10"] == pytest.approx(report["metrics"]["nDCG@10"]["cross-encoder"], abs=1e-9)
    assert points[trained.eval.depth]["MRR@10"] == pytest.approx(report["metrics"]["MRR@10"]["cross-encoder"], abs=1e-9)
    # only the candidates past eval.depth were scored again: ranks 21..40 of each query that has them
    bm25 = read_trec(ev / "bm25.trec")
    assert curve["extra_pairs"] == sum(max(0, min(len(d), 40) - 20) for d in bm25.values()) > 0
    pairs = [points[d]["pairs_per_query"] for d in sorted(points)]
    assert pairs == sorted(pairs) and pairs[0] <= 5
    assert all(points[d]["ms_per_query"] > 0 for d in points)


def test_the_curve_is_optional_and_costs_nothing_when_off(evaluated, tmp_path):
    cfg, trained, _, _ = evaluated
    off = cfg("eval.depth_curve=[]")
    report = evaluate_command(off, model=str(run_dir(trained) / "best"), output=str(tmp_path / "ev"))
    assert "depth_curve" not in report and not (tmp_path / "ev" / "depth_curve.png").exists()
    assert "Not computed (`eval.depth_curve: []`)" in (tmp_path / "ev" / "report.md").read_text()
    with pytest.raises(DataError, match="eval.depth_curve"):
        cfg("eval.depth_curve=[0,10]")


# -- the figures' contents ----------------------------------------------------------------------------------------------
def test_metrics_figure_has_one_bar_per_system_and_metric_with_intervals(evaluated):
    _, _, report, _ = evaluated
    fig = metrics_figure(report["metrics"], report["intervals"]["mean"], "t")
    ax = fig.axes[0]
    systems = list(report["metrics"]["nDCG@10"])
    assert systems == ["BM25", "reranked", "cross-encoder"] and labels(ax) == systems
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(bars) == len(systems)
    for system, container in zip(systems, bars):
        heights = [p.get_height() for p in container.patches]
        assert heights == pytest.approx([report["metrics"][m][system] for m in report["metrics"]])
        assert container.errorbar is not None  # the 95% interval of each bar
    assert [t.get_text() for t in ax.get_xticklabels()] == list(report["metrics"])


def test_change_figure_draws_one_bar_per_query_sorted_and_counted():
    deltas, counts = query_changes({"a": 0.5, "b": 0.2, "c": 0.0, "d": 1.0}, {"a": 1.0, "b": 0.2, "c": 0.3, "d": 0.0})
    assert deltas == [("a", 0.5), ("c", pytest.approx(0.3)), ("b", 0.0), ("d", -1.0)]
    assert counts == {"improved": 2, "unchanged": 1, "worse": 1}
    ax = change_figure(deltas, counts).axes[0]
    queries = ax.containers[0]
    assert [p.get_height() for p in queries.patches] == pytest.approx([0.5, 0.3, 0.0, -1.0])
    assert ax.get_title() == "2 improve, 1 unchanged, 1 get worse"
    assert labels(ax) == ["improved (2)", "unchanged (1)", "worse (1)"]


def test_depth_figure_carries_quality_bm25_fused_and_latency(evaluated):
    _, trained, report, _ = evaluated
    points = report["depth_curve"]["points"]
    fig = depth_figure(points, report["metrics"]["nDCG@10"]["BM25"], (20, report["metrics"]["nDCG@10"]["reranked"]))
    ax, right = fig.axes
    ce = line(ax, "nDCG@10, cross-encoder alone")
    assert list(ce.get_xdata()) == [5, 10, 20, 40] and list(ce.get_ydata()) == [p["nDCG@10"] for p in points]
    assert line(ax, "nDCG@10, fused at depth 20 (weights tuned there)").get_ydata()[0] == report["metrics"]["nDCG@10"]["reranked"]
    assert any(l.startswith("nDCG@10, BM25") for l in labels(ax))
    assert list(line(right, "ms per query (estimated)").get_ydata()) == [p["ms_per_query"] for p in points]
    assert "cross-encoder alone" in ax.get_title()


# -- training curves and `crosstune plot` -------------------------------------------------------------------------------
def test_train_draws_its_curves_with_the_best_step_marked(evaluated):
    _, trained, _, _ = evaluated
    out = run_dir(trained)
    assert (out / "training.png").stat().st_size > 5000
    curves = read_curves(out)
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [s for s, _ in curves.loss] == [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert [s for s, _ in curves.dev] == [2, 4]
    best = json.loads((out / "best" / "dev_metrics.json").read_text())["step"]
    assert curves.best_step == best
    fig = training_figure([curves])
    ax_loss, ax_lr, ax_dev = fig.axes
    name = out.name
    assert list(line(ax_loss, name).get_ydata()) == [v for _, v in curves.loss]
    assert list(line(ax_lr, name).get_ydata()) == [r["lr"] for r in records if "lr" in r]
    star = line(ax_dev, f"{name} best/: step {best}, {dict(curves.dev)[best]:.3f}")
    assert list(star.get_xdata()) == [best]
    assert f"{name} cross-encoder alone" in labels(ax_dev) and any(l.startswith(f"{name} BM25") for l in labels(ax_dev))


def test_crosstune_plot_compares_runs_on_one_figure(evaluated, tmp_path, capsys):
    _, trained, _, _ = evaluated
    out = run_dir(trained)
    other = tmp_path / "other"
    other.mkdir()
    # a second run without dev checks and a longer, noisier loss: the mean line appears, the dev panel keeps run 1
    rows = [{"step": s, "loss": 1.0 / s + 0.1 * (s % 3), "lr": 1e-4 * (1 - s / 60)} for s in range(1, 61)]
    (other / "metrics.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n")
    target = tmp_path / "both.png"
    assert main(["plot", str(out), str(other), "--output", str(target)]) == 0
    assert target.stat().st_size > 5000 and str(target) in capsys.readouterr().out
    fig = training_figure([read_curves(out), read_curves(other)])
    loss_labels = labels(fig.axes[0])
    assert out.name in loss_labels and "other (per step)" in loss_labels and "other (mean of 3)" in loss_labels
    assert main(["plot", str(other)]) == 0 and (other / "training.png").exists()


@pytest.mark.parametrize("content, message", [
    (None, "no metrics.jsonl there"),
    ("", "no loss or dev records yet"),
    ('{"step": 1, "loss": 0.5}\nnot json\n', "metrics.jsonl:2: not a metrics record"),
])
def test_crosstune_plot_refuses_bad_runs_in_one_line(tmp_path, capsys, content, message):
    run = tmp_path / "run"
    run.mkdir()
    if content is not None:
        (run / "metrics.jsonl").write_text(content)
    assert main(["plot", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("crosstune plot: error:") and message in err and len(err.splitlines()) == 1
    assert main(["plot", str(run), "--output", str(tmp_path / "x.jpg")]) == 2


# -- the statistics -----------------------------------------------------------------------------------------------------
def test_bootstrap_interval_covers_the_mean_and_narrows_with_more_queries():
    rng = np.random.default_rng(1)
    small, large = rng.random(20), rng.random(2000)
    lo, hi = bootstrap_ci(list(small))
    assert lo < small.mean() < hi and bootstrap_ci(list(small)) == [lo, hi]  # seeded: reproducible
    lo2, hi2 = bootstrap_ci(list(large))
    assert hi2 - lo2 < (hi - lo) / 4
    # close to the normal interval for a mean of many uniform values: 1.96 * sd / sqrt(n)
    assert hi2 - lo2 == pytest.approx(2 * 1.96 * large.std() / np.sqrt(len(large)), rel=0.1)
    assert bootstrap_ci([0.4, 0.4, 0.4]) == [0.4, 0.4] and bootstrap_ci([]) == [0.0, 0.0]


def test_examples_are_the_extremes_and_a_seeded_sample_of_the_rest():
    deltas, _ = query_changes({f"q{i}": 0.5 for i in range(10)},
                              {"q0": 1.0, "q1": 0.9, "q2": 0.6, "q3": 0.1, "q4": 0.0, **{f"q{i}": 0.5 for i in range(5, 10)}})
    picks = pick_examples(deltas, 2)
    assert picks["wins"] == ["q0", "q1"] and picks["losses"] == ["q4", "q3"]
    assert len(picks["examples"]) == 2 and not set(picks["examples"]) & {"q0", "q1", "q3", "q4"}
    assert pick_examples(deltas, 2) == picks
    assert pick_examples(deltas, 0) == {"examples": [], "wins": [], "losses": []}


def test_depth_curve_caps_at_the_candidates_and_scores_only_what_is_missing():
    first = {"q": {"a": 5.0, "b": 4.0, "c": 3.0}, "r": {"x": 2.0}}
    scored = {"q": {"a": 0.1, "b": 0.2}, "r": {"x": 1.0}}
    assert missing_pairs(first, scored, 10) == {"q": {"c": 3.0}}
    assert missing_pairs(first, scored, 2) == {}
    qrels = {"q": {"c": 1}, "r": {"x": 1}}
    logits = {"q": {"a": 0.1, "b": 0.2, "c": 0.9}, "r": {"x": 1.0}}
    # the pipeline's order without fusion: the top-d by logit, then the rest in BM25 order
    points = depth_curve(qrels, first, logits, [1, 3, 100], lambda run, top: with_tail(top, run), seconds_per_pair=0.01,
                         bm25_ms=2.0)
    # depth 1: c stays third (BM25 order past the depth); depth 3 and 100 (capped at 3) put c first
    assert [p["depth"] for p in points] == [1, 3, 100]
    assert points[0]["MRR@10"] == pytest.approx((1 / 3 + 1) / 2)
    assert points[1]["MRR@10"] == points[2]["MRR@10"] == 1.0
    assert [p["pairs_per_query"] for p in points] == [1.0, 2.0, 2.0]
    assert points[1]["ms_per_query"] == pytest.approx(2.0 + 1000 * 2.0 * 0.01)
