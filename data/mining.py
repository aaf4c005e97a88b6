"""Hard-negative mining: (query, positive, negatives) rows from a BM25 run and qrels."""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from .types import Corpus, DataError, Qrels, Queries, Run, doc_text, ranked


@dataclass
class MiningConfig:
    depth: int = 100  # BM25 candidates retrieved per query
    # negatives are drawn from ranks [start, end) (0-based) of the BM25 list: the very top is skipped
    # because unjudged relevant passages cluster there and would teach the model to push them down
    negative_range: list[int] = field(default_factory=lambda: [3, 100])
    num_negatives: int = 15  # hard negatives per positive (a training group uses up to this many)
    random_negatives: int = 0  # extra negatives drawn uniformly from the corpus: easy ones keep scores calibrated
    seed: int = 42
    # document judgments (data/judgments.py): a relevant document's positive is its best passage by BM25 (best),
    # or every passage of it (each: for short documents whose every passage answers)
    document_positives: str = "best"


def validate(cfg: MiningConfig) -> None:
    start, end = (list(cfg.negative_range) + [None, None])[:2]
    if len(cfg.negative_range) != 2 or not 0 <= start < end:
        raise DataError(f"mining.negative_range={list(cfg.negative_range)}; give [start, end) with 0 <= start < end")
    if end > cfg.depth:
        raise DataError(f"mining.negative_range ends at {end}, past mining.depth={cfg.depth}; raise depth or lower the end")
    if cfg.num_negatives < 1 or cfg.random_negatives < 0:
        raise DataError("mining.num_negatives must be >= 1 and mining.random_negatives >= 0")
    if cfg.document_positives not in ("best", "each"):
        raise DataError(f"mining.document_positives={cfg.document_positives!r}; choose best or each")


def mine(corpus: Corpus, queries: Queries, qrels: Qrels, run: Run, cfg: MiningConfig,
         use_title: bool = True, exclude: set[str] = frozenset(),
         unsure: dict[str, set[str]] | None = None) -> tuple[list[dict], dict]:
    """One row per (query, judged positive); returns rows and stats (queries used, dropped and why).
    `exclude`: passages no row may contain (a held-out split's documents). Passages judged non-relevant (grade <= 0)
    are negatives before BM25's unjudged ones, from any rank: the judgment, not the rank, vouches for them.
    `unsure`: per query, passages that are neither (they partly hold a relevant span, or share its document)."""
    validate(cfg)
    start, end = cfg.negative_range
    all_ids = [d for d in corpus if d not in exclude]
    rows, dropped = [], Counter()
    found = total = known_used = 0
    for qid in sorted(qrels):
        judged_pos = {d for d, r in qrels[qid].items() if r > 0}
        positives = sorted(d for d in judged_pos if d in corpus)
        known = sorted(d for d, r in qrels[qid].items() if r <= 0 and d in corpus and d not in exclude)
        retrieved = ranked(run.get(qid, {}))
        in_run = set(retrieved)
        total += len(positives)
        found += sum(d in in_run for d in positives)
        if not positives:
            dropped["no_positive_in_corpus"] += 1
            continue
        neither = (unsure or {}).get(qid, set())
        avoid = judged_pos | set(known) | neither | exclude
        pool = [d for d in retrieved[start:end] if d not in avoid]
        if len(known) + len(pool) < cfg.num_negatives:
            dropped["fewer_candidates_than_negatives"] += 1
            continue
        # seeded per query, so a query's negatives do not depend on which other queries are mined
        rng = random.Random(f"{cfg.seed}:{qid}")
        rank_of = {d: i for i, d in enumerate(retrieved)}
        in_order = lambda d: (rank_of.get(d, len(rank_of)), d)  # noqa: E731  BM25 order; unretrieved last
        for pos in positives:
            first = rng.sample(known, min(len(known), cfg.num_negatives))
            hard = sorted(first + rng.sample(pool, cfg.num_negatives - len(first)), key=in_order)
            known_used += len(first)
            easy = sample_random(all_ids, cfg.random_negatives, set(hard) | judged_pos | neither, rng)
            negs = hard + easy
            rows.append({
                "query_id": qid, "query": queries[qid],
                "positive_id": pos, "positive": doc_text(corpus[pos], use_title),
                "positive_grade": qrels[qid][pos],  # graded judgments: for a loss that weighs positives by grade
                "negative_ids": negs, "negatives": [doc_text(corpus[d], use_title) for d in negs],
                # None marks a negative that BM25 did not retrieve (a random one, or a judged one it missed)
                "negative_scores": [run.get(qid, {}).get(d) for d in negs],
            })
    used = len({r["query_id"] for r in rows})
    stats = {
        "queries": len(qrels), "queries_used": used, "rows": len(rows), "passages_excluded": len(exclude),
        "queries_dropped": dict(dropped), "depth": cfg.depth,
        "positive_recall_at_depth": round(found / total, 4) if total else 0.0,
    }
    if known_used:
        stats["judged_negatives_used"] = known_used
    return rows, stats


def sample_random(all_ids: list[str], n: int, exclude: set[str], rng: random.Random) -> list[str]:
    if n == 0:
        return []
    if len(all_ids) - len(exclude) < n:
        raise DataError(f"mining.random_negatives={n} but the corpus has too few other passages; lower it")
    out: list[str] = []
    while len(out) < n:
        d = all_ids[rng.randrange(len(all_ids))]
        if d not in exclude and d not in out:
            out.append(d)
    return out
