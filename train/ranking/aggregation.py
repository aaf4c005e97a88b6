"""Documents ranked by their passages' scores (BM25's and the reranker's alike), and the passage budget.

A long document is read as passages (data.chunking); a judgment of the document ("this case is a relevant
precedent") is met by ranking documents on their passages' scores:
- maxp: the best passage (the document is as relevant as its most relevant part: the usual choice)
- firstp: the document's first passage among those scored (its opening; the whole document's first passage when
  the first stage retrieved it)
- sump: the sum (rewards documents relevant in many places, and long ones)
- mean-top-k: the mean of the k best (eval.aggregate_k): between maxp and sump
Pure functions over Runs; the ranking pipeline (ranking/pipeline.py) composes them.
"""
from __future__ import annotations

from crosstune.data.chunking import passage_origin
from crosstune.data.types import DataError, Run, ranked
from crosstune.train.ranking.candidates import with_tail

AGGREGATES = ("maxp", "firstp", "sump", "mean-top-k")


def validate(how: str, k: int = 3) -> None:
    if how not in AGGREGATES:
        raise DataError(f"eval.aggregate={how!r}; choose one of {', '.join(AGGREGATES)}")
    if k < 1:
        raise DataError(f"eval.aggregate_k={k}; give the number of best passages mean-top-k averages (>= 1)")


def by_document(scores: dict[str, float], separator: str = "#") -> dict[str, list[tuple[int, str, float]]]:
    """document -> [(position, passage, score)] of the passages scored."""
    out: dict[str, list[tuple[int, str, float]]] = {}
    for pid, score in scores.items():
        doc, position = passage_origin(pid, separator)
        out.setdefault(doc, []).append((position, pid, score))
    return out


def combine(passages: list[tuple[int, str, float]], how: str, k: int = 3) -> float:
    """One document's score from its passages' (position, id, score)."""
    if how == "maxp":
        return max(s for _, _, s in passages)
    if how == "firstp":
        return min(passages)[2]  # the earliest position (ties: the smaller id)
    if how == "sump":
        return sum(s for _, _, s in passages)
    top = sorted((s for _, _, s in passages), reverse=True)[:k]
    return sum(top) / len(top)


def aggregate_run(run: Run, how: str, k: int = 3, separator: str = "#") -> Run:
    """A passage run -> a document run."""
    validate(how, k)
    return {q: {doc: combine(ps, how, k) for doc, ps in by_document(scores, separator).items()}
            for q, scores in run.items()}


def budget_candidates(first_stage: Run, budget: int, how: str, k: int = 3, separator: str = "#") -> Run:
    """The passages to rerank: documents in first-stage document order (their passages' scores aggregated), each
    giving its passages in first-stage order, until `budget` passages; the last document may give only its best.
    The rerank budget counts passages, so a query costs the same whatever the documents' lengths."""
    out: Run = {}
    for qid, scores in first_stage.items():
        groups = by_document(scores, separator)
        doc_scores = {doc: combine(ps, how, k) for doc, ps in groups.items()}
        chosen: dict[str, float] = {}
        for doc in ranked(doc_scores):
            for pid in ranked({pid: s for _, pid, s in groups[doc]}):
                if len(chosen) == budget:
                    break
                chosen[pid] = scores[pid]
            if len(chosen) == budget:
                break
        out[qid] = chosen
    return out


def document_ranking(head: Run, first_stage: Run, how: str, k: int = 3, separator: str = "#") -> Run:
    """Documents ranked by their reranked passages (`head`), then the first stage's other documents below, in its
    document order: the same tail rule as passages past the rerank depth."""
    return with_tail(aggregate_run(head, how, k, separator), aggregate_run(first_stage, how, k, separator))
