"""What ranking costs on this machine: p95 milliseconds a query for BM25 and for each scorer at each depth.

Measured as a server answers: one query at a time, each scorer's own batching over that query's candidates (so
batch effects are in the figure), after one untimed call that loads what a first call loads. A bi-encoder's passage
embeddings are computed before its timing (as an index-time pass would), so its figure is the query's encoding and
the cosines.
"""
from __future__ import annotations

import time

from crosstune.data.types import Corpus, Queries, Run
from crosstune.train.ranking.cascade import Stage, stage_scores


def p95(values: list[float]) -> float:
    """The nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(0.95 * (len(ordered) - 1))))]


def milliseconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def bm25_cost(index, queries: Queries, qids: list[str], depth: int) -> float:
    index.search({qids[0]: queries[qids[0]]}, depth)
    return p95([milliseconds(lambda q=q: index.search({q: queries[q]}, depth)) for q in qids])


def scorer_costs(scorer, candidates: Run, queries: Queries, corpus: Corpus, qids: list[str], depths: list[int],
                 use_title: bool) -> dict[int, float]:
    """depth -> p95 ms of scoring one query's top-`depth` of `candidates` (a cross-encoder, or a bi-encoder)."""
    stage = Stage("timed", scorer, max(depths), None)
    if hasattr(scorer, "score_run"):  # the bi-encoder: its passages embedded before the clock starts
        stage_scores(stage, {q: candidates[q] for q in qids}, queries, corpus, use_title)
    stage_scores(stage, {qids[0]: candidates[qids[0]]}, queries, corpus, use_title, min(depths))
    return {d: p95([milliseconds(lambda q=q: stage_scores(stage, {q: candidates[q]}, queries, corpus, use_title, d))
                    for q in qids]) for d in depths}


def search_cost(pipe, queries: Queries, qids: list[str]) -> float:
    """p95 ms of a whole search, one query at a time: BM25, every stage, the fusion (what a /search answers in)."""
    pipe.search(queries[qids[0]])
    return p95([milliseconds(lambda q=q: pipe.search(queries[q])) for q in qids])
