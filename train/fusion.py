"""Score fusion: keep the first stage's evidence by interpolating it with the cross-encoder's.

Scores on different scales are min-max normalised per query before mixing; the weight is tuned on dev.
"""
from __future__ import annotations

from data.types import Qrels, Run

from .metrics import aggregate, per_query

GRID = [round(0.05 * i, 2) for i in range(20)]  # 0.0 .. 0.95: 1.0 would be BM25 alone


def minmax(scores: dict[str, float]) -> dict[str, float]:
    lo, hi = min(scores.values()), max(scores.values())
    span = hi - lo
    return {d: (s - lo) / span if span > 0 else 0.0 for d, s in scores.items()}


def fuse(first_stage: Run, reranked: Run, weight: float) -> Run:
    """weight * first stage + (1 - weight) * cross-encoder, over the documents the cross-encoder scored."""
    if weight == 0:
        return reranked
    out: Run = {}
    for qid, docs in reranked.items():
        if not docs:
            out[qid] = {}
            continue
        ce, fs = minmax(docs), minmax({d: first_stage[qid].get(d, 0.0) for d in docs})
        out[qid] = {d: weight * fs[d] + (1 - weight) * ce[d] for d in docs}
    return out


def tune_weight(qrels: Qrels, first_stage: Run, reranked: Run, grid: list[float] = GRID) -> tuple[float, float]:
    """The grid weight with the best nDCG@10 (the smaller weight on ties); returns (weight, nDCG@10)."""
    best = (0.0, -1.0)
    for w in grid:
        ndcg = aggregate(per_query(qrels, fuse(first_stage, reranked, w), ["nDCG@10"]))["nDCG@10"]
        if ndcg > best[1] + 1e-9:
            best = (w, ndcg)
    return best
