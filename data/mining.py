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


def validate(cfg: MiningConfig) -> None:
    start, end = (list(cfg.negative_range) + [None, None])[:2]
    if len(cfg.negative_range) != 2 or not 0 <= start < end:
        raise DataError(f"mining.negative_range={list(cfg.negative_range)}; give [start, end) with 0 <= start < end")
    if end > cfg.depth:
        raise DataError(f"mining.negative_range ends at {end}, past mining.depth={cfg.depth}; raise depth or lower the end")
    if cfg.num_negatives < 1 or cfg.random_negatives < 0:
        raise DataError("mining.num_negatives must be >= 1 and mining.random_negatives >= 0")


def mine(corpus: Corpus, queries: Queries, qrels: Qrels, run: Run, cfg: MiningConfig,
         use_title: bool = True, exclude: set[str] = frozenset()) -> tuple[list[dict], dict]:
    """One row per (query, judged positive); returns rows and stats (queries used, dropped and why).
    `exclude`: passages no row may contain (a held-out split's documents)."""
    validate(cfg)
    start, end = cfg.negative_range
    all_ids = [d for d in corpus if d not in exclude]
    rows, dropped = [], Counter()
    found = total = 0
    for qid in sorted(qrels):
        judged_pos = {d for d, r in qrels[qid].items() if r > 0}
        positives = sorted(d for d in judged_pos if d in corpus)
        retrieved = ranked(run.get(qid, {}))
        in_run = set(retrieved)
        total += len(positives)
        found += sum(d in in_run for d in positives)
        if not positives:
            dropped["no_positive_in_corpus"] += 1
            continue
        pool = [d for d in retrieved[start:end] if d not in judged_pos and d not in exclude]
        if len(pool) < cfg.num_negatives:
            dropped["fewer_candidates_than_negatives"] += 1
            continue
        # seeded per query, so a query's negatives do not depend on which other queries are mined
        rng = random.Random(f"{cfg.seed}:{qid}")
        rank_of = {d: i for i, d in enumerate(retrieved)}
        for pos in positives:
            hard = sorted(rng.sample(pool, cfg.num_negatives), key=rank_of.__getitem__)
            easy = sample_random(all_ids, cfg.random_negatives, set(hard) | judged_pos, rng)
            negs = hard + easy
            rows.append({
                "query_id": qid, "query": queries[qid],
                "positive_id": pos, "positive": doc_text(corpus[pos], use_title),
                "negative_ids": negs, "negatives": [doc_text(corpus[d], use_title) for d in negs],
                # None marks a random negative that BM25 did not retrieve
                "negative_scores": [run[qid].get(d) for d in negs],
            })
    used = len({r["query_id"] for r in rows})
    stats = {
        "queries": len(qrels), "queries_used": used, "rows": len(rows), "passages_excluded": len(exclude),
        "queries_dropped": dict(dropped), "depth": cfg.depth,
        "positive_recall_at_depth": round(found / total, 4) if total else 0.0,
    }
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
