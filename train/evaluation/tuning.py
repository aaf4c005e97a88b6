"""Fusion weights chosen on a split: the grid search over BM25's and the bi-encoder's weights by nDCG@10."""
from __future__ import annotations

from typing import Callable, Optional

from crosstune.data.types import Qrels, Run
from crosstune.train.evaluation.metrics import aggregate, per_query
from crosstune.train.ranking.fusion import fuse

GRID = [round(0.05 * i, 2) for i in range(20)]  # 0.0 .. 0.95: 1.0 would leave the cross-encoder out


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
