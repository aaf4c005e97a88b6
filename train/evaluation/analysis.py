"""What a report says beyond the means: confidence intervals, per-query wins and losses, quality over rerank depth.

Pure functions over the data contract (Run, Qrels) and report.json's per-query values; `depth_analysis`, the one
function here that calls a model, scores the pairs the depth curve needs beyond the evaluation's own rerank.
"""
from __future__ import annotations

import random
import time

import numpy as np

from crosstune.data.types import Qrels, Queries, Run, ranked
from crosstune.train.evaluation.metrics import aggregate, per_query
from crosstune.train.ranking.fusion import (
 Fusion,  # here: `crosstune plot` reaches this module and needs no model code
 )

RESAMPLES = 2000


SEED = 0


def kind(delta: float, tolerance: float = 1e-6) -> str:
    """nDCG@10 moves in steps: a change under 1e-6 is the same ranking of the judged passages, not a gain."""
    return "improved" if delta > tolerance else "worse" if delta < -tolerance else "unchanged"


def bootstrap_ci(values: list[float], level: float = 0.95, resamples: int = RESAMPLES, seed: int = SEED) -> list[float]:
    """Percentile bootstrap interval of the mean over queries. The per-query values of a ranking metric are far from
    normal (many 0s and 1s), so a resampled interval is more honest than a t-interval; a fixed seed makes a report
    reproducible to the digit."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return [0.0, 0.0]
    if len(v) == 1 or np.all(v == v[0]):
        return [float(v[0]), float(v[0])]
    means = v[np.random.default_rng(seed).integers(0, len(v), size=(resamples, len(v)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))]


def intervals(report: dict) -> dict:
    """95% bootstrap intervals of every system's mean, and of each system's difference to the baseline (paired: the
    same queries resampled for both), from report.json's per-query values."""
    pq, base = report["per_query"], report["baseline"]
    out: dict = {"method": f"percentile bootstrap over queries, {RESAMPLES} resamples, seed {SEED}", "level": 0.95,
                 "mean": {}, "delta": {}}
    for metric in report["metrics"]:
        qids = sorted(pq[base][metric])
        out["mean"][metric] = {s: bootstrap_ci([pq[s][metric].get(q, 0.0) for q in qids]) for s in pq}
        out["delta"][metric] = {s: bootstrap_ci([pq[s][metric].get(q, 0.0) - pq[base][metric][q] for q in qids])
                                for s in pq if s != base}
    return out


def query_changes(before: dict[str, float], after: dict[str, float]) -> tuple[list[tuple[str, float]], dict[str, int]]:
    """(query, after - before) sorted best first (ties by query id), and how many improve, stay, get worse."""
    deltas = sorted(((q, after.get(q, 0.0) - v) for q, v in before.items()), key=lambda x: (-x[1], x[0]))
    counts = {"improved": 0, "unchanged": 0, "worse": 0}
    for _, d in deltas:
        counts[kind(d)] += 1
    return deltas, counts


def pick_examples(deltas: list[tuple[str, float]], n: int, seed: int = SEED) -> dict[str, list[str]]:
    """The n biggest wins and losses, and n other queries drawn at random (seeded): the wins and losses are the
    extremes, the random ones show what a typical query looks like."""
    wins = [q for q, d in deltas if kind(d) == "improved"][:n]
    losses = [q for q, d in reversed(deltas) if kind(d) == "worse"][:n]
    rest = sorted(q for q, _ in deltas if q not in wins and q not in losses)
    return {"examples": sorted(random.Random(seed).sample(rest, min(n, len(rest)))), "wins": wins, "losses": losses}


# -- quality over rerank depth ------------------------------------------------------------------------------------------
def missing_pairs(first_stage: Run, scored: Run, max_depth: int) -> Run:
    """Each query's top-`max_depth` candidates that `scored` (the evaluation's own rerank) has no logit for: all
    the depth curve must score. It costs (max_depth - eval.depth) pairs a query at most."""
    todo: Run = {}
    for q, docs in first_stage.items():
        missing = [d for d in ranked(docs)[:max_depth] if d not in scored.get(q, {})]
        if missing:
            todo[q] = {d: docs[d] for d in missing}
    return todo


def depth_curve(qrels: Qrels, first_stage: Run, logits: Run, depths: list[int], rank, seconds_per_pair: float,
                bm25_ms: float) -> list[dict]:
    """nDCG@10 and MRR@10 of the cross-encoder alone reranking each query's top-d, for each depth d (capped at the
    candidates a query has), and the milliseconds a query costs there.

    The cost is estimated, not timed per depth: pairs a query x the seconds a pair cost in this evaluation's own
    rerank (+ BM25's measured time a query). Scoring is linear in pairs (length-sorted batches), and timing each
    depth separately would score the top-10 five times over and measure mostly noise on a shared CPU.
    `rank(first_stage, top_d_logits)` is the pipeline's ordering (the top-d by logit, the tail in BM25 order)."""
    points = []
    for depth in sorted(set(depths)):
        top = {q: {d: logits[q][d] for d in ranked(docs)[:depth] if d in logits.get(q, {})}
               for q, docs in first_stage.items()}
        values = aggregate(per_query(qrels, rank(first_stage, top), ["nDCG@10", "MRR@10"]))
        pairs = float(np.mean([len(t) for t in top.values()])) if top else 0.0
        points.append({"depth": depth, "nDCG@10": values["nDCG@10"], "MRR@10": values["MRR@10"],
                       "pairs_per_query": round(pairs, 1),
                       "ms_per_query": round(bm25_ms + 1000 * pairs * seconds_per_pair, 1)})
    return points


def depth_analysis(pipe, queries: Queries, qrels: Qrels, first_stage: Run, ranking, depths: list[int],
                   seconds: dict) -> dict:
    """The depth curve of one evaluation: BM25 deeper when a depth asks for more candidates than were retrieved,
    the missing logits scored once, the points, and what the extra scoring cost."""
    max_depth = max(depths)
    retrieved = max((len(d) for d in first_stage.values()), default=0)
    deep = first_stage if max_depth <= retrieved else pipe.index.search(queries, max_depth)
    todo = missing_pairs(deep, ranking.cross_encoder, max_depth)
    extra = sum(len(d) for d in todo.values())
    alone = pipe.with_fusion(Fusion(source="the cross-encoder alone (depth curve)"))
    t0 = time.time()
    if todo:
        print(f"evaluate | depth curve {sorted(set(depths))}: scoring {extra} more pairs (ranks past "
              f"eval.depth), the cross-encoder alone")
    scored, _ = alone.signals(todo, queries, pipe.corpus, depth=max_depth) if todo else ({}, None)
    logits = {q: {**ranking.cross_encoder.get(q, {}), **scored.get(q, {})} for q in deep}
    pairs = sum(len(d) for d in ranking.cross_encoder.values())
    per_pair = seconds["rerank"] / pairs if pairs else 0.0
    points = depth_curve(qrels, deep, logits, depths, alone.fuse, per_pair, 1000 * seconds["bm25"] / max(1, len(queries)))
    return {"points": points, "ranked_by": "the cross-encoder alone (fusion weights are tuned for one depth)",
            "extra_pairs": extra, "extra_seconds": round(time.time() - t0, 2), "seconds_per_pair": per_pair,
            "latency": "estimated: BM25's measured ms a query + pairs a query x the seconds a pair cost in this "
                       "evaluation's rerank"}
