"""Building blocks of the ranking pipeline (ranking/pipeline.py): score the top-k, keep the tail in first-stage order."""
from __future__ import annotations

from crosstune.data.types import Corpus, Queries, Run, doc_text, ranked
from crosstune.train.ranking.scorers import Scorer


def candidate_pairs(run: Run, queries: Queries, corpus: Corpus, depth: int, use_title: bool) -> list[tuple[str, str]]:
    """The (query, passage) pairs a rerank of each query's top-`depth` reads."""
    return [(queries[q], doc_text(corpus[d], use_title)) for q, docs in run.items() for d in ranked(docs)[:depth]]


def score_candidates(run: Run, queries: Queries, corpus: Corpus, scorer: Scorer, depth: int,
                     use_title: bool = True) -> Run:
    """Cross-encoder scores for each query's top-`depth`, in one call so the scorer batches across queries."""
    pairs, keys = [], []
    for qid, docs in run.items():
        for did in ranked(docs)[:depth]:
            pairs.append((queries[qid], doc_text(corpus[did], use_title)))
            keys.append((qid, did))
    scores = scorer.score(pairs) if pairs else []
    out: Run = {qid: {} for qid in run}
    for (qid, did), s in zip(keys, scores):
        out[qid][did] = float(s)
    return out


def with_tail(head: Run, first_stage: Run) -> Run:
    """Keep the candidates past the rerank depth, below every reranked one and in first-stage order."""
    out: Run = {}
    for qid, docs in first_stage.items():
        top = head.get(qid, {})
        floor = min(top.values(), default=0.0)
        tail = [d for d in ranked(docs) if d not in top]
        out[qid] = {**top, **{d: floor - 1.0 - i for i, d in enumerate(tail)}}
    return out


def score_spread(run: Run) -> float:
    """Largest per-query spread of scores; ~0 means the model scores every passage alike (collapsed)."""
    spreads = [max(d.values()) - min(d.values()) for d in run.values() if len(d) > 1]
    return max(spreads, default=0.0)
