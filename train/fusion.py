"""Score fusion: keep the first stage's evidence (and a bi-encoder's) by interpolating it with the cross-encoder's.

Scores on different scales are min-max normalised per query before mixing; the weights are tuned on dev.
"""
from __future__ import annotations

from typing import Callable, Optional

from crosstune.data.types import Qrels, Run

from .metrics import aggregate, per_query

GRID = [round(0.05 * i, 2) for i in range(20)]  # 0.0 .. 0.95: 1.0 would leave the cross-encoder out


def minmax(scores: dict[str, float]) -> dict[str, float]:
    lo, hi = min(scores.values()), max(scores.values())
    span = hi - lo
    return {d: (s - lo) / span if span > 0 else 0.0 for d, s in scores.items()}


def fuse(first_stage: Run, reranked: Run, weight: float, biencoder: Optional[Run] = None,
         biencoder_weight: float = 0.0) -> Run:
    """weight * first stage + biencoder_weight * bi-encoder + the rest * cross-encoder, over the documents the
    cross-encoder scored."""
    if weight == 0 and biencoder_weight == 0:
        return reranked
    if biencoder_weight and biencoder is None:
        raise ValueError("biencoder_weight > 0 needs the bi-encoder's scores")
    out: Run = {}
    for qid, docs in reranked.items():
        if not docs:
            out[qid] = {}
            continue
        ce, fs = minmax(docs), minmax({d: first_stage[qid].get(d, 0.0) for d in docs})
        bi = minmax({d: biencoder[qid].get(d, 0.0) for d in docs}) if biencoder_weight else dict.fromkeys(docs, 0.0)
        rest = 1 - weight - biencoder_weight
        out[qid] = {d: weight * fs[d] + biencoder_weight * bi[d] + rest * ce[d] for d in docs}
    return out


def tune_weights(qrels: Qrels, first_stage: Run, reranked: Run, biencoder: Optional[Run] = None,
                 weight: Optional[float] = None, biencoder_weight: Optional[float] = None,
                 grid: list[float] = GRID, view: Optional[Callable[[Run], Run]] = None) -> tuple[float, float, float]:
    """The grid weights with the best nDCG@10 (smaller weights win ties); (weight, biencoder_weight, nDCG@10).
    A weight given (not None) stays fixed and only the others are searched; without a bi-encoder its weight is 0.
    `view` maps the fused passages to what the qrels judge (documents ranked by their passages)."""
    if biencoder is None:
        biencoder_weight = 0.0
    ws = grid if weight is None else [weight]
    bs = grid if biencoder_weight is None else [biencoder_weight]
    best = (ws[0], bs[0], -1.0)
    for w, b in ((w, b) for w in ws for b in bs if w + b < 1 - 1e-9):
        fused = fuse(first_stage, reranked, w, biencoder, b)
        ndcg = aggregate(per_query(qrels, view(fused) if view else fused, ["nDCG@10"]))["nDCG@10"]
        if ndcg > best[2] + 1e-9:
            best = (w, b, ndcg)
    return best
