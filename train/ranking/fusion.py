"""Score fusion: keep the first stage's evidence (and a bi-encoder's) by interpolating it with the cross-encoder's.

Scores on different scales are min-max normalised per query before mixing; the weights are tuned on dev.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from crosstune.data.types import Run


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


@dataclass(frozen=True)
class Fusion:
    """weight * bm25 + biencoder_weight * bi-encoder cosine + the rest * cross-encoder, min-max normalised per query."""

    weight: float = 0.0
    biencoder: Optional[str] = None
    biencoder_weight: float = 0.0
    depth: Optional[int] = None  # the rerank depth the weights were tuned at; they fit that depth only
    source: str = "none: the cross-encoder alone"

    @property
    def fused(self) -> bool:
        return bool(self.weight or self.biencoder_weight)
