"""Hard-negative mining: (query, positive, negatives) rows from a BM25 run and qrels."""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

from .types import Corpus, DataError, Doc, Qrels, Queries, Run, doc_text, ranked


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
    # training queries from the corpus alone instead of the train split (data/pseudo.py): none, all, or a comma list
    # of headings, inverse-cloze, title-phrase, file (the (query, passage id) pairs in pseudo_file)
    pseudo_queries: str = "none"
    # JSON lines {"query", "passage_id"} or query<TAB>passage_id lines, e.g. from doc2query; named, it is always read
    pseudo_file: str = ""
    pseudo_max_per_kind: int = 5000  # a seeded sample of each kind when there are more (0: all)
    pseudo_title: bool = True  # "<title>: <heading or sentence>": a bare heading fits every document's section
    # a pseudo-query's negatives skip its source document's passages this close to the source (-1: the whole
    # document), and the document's passages that contain the phrase it was built from: they likely answer it
    pseudo_neighbours: int = 1
    # false: documents that data.dev_split / data.test_split judge make no pseudo-queries (and no negatives), so
    # the splits that choose and report stay unseen; true adapts to every document you will search
    pseudo_all_documents: bool = False
    # a teacher's score for every (query, passage) of a row, as `teacher_scores` [positive, *negatives]
    teacher: str = ""  # a cross-encoder (crosstune export, HF folder or id) or a sentence-transformers bi-encoder
    teacher_kind: str = "auto"  # auto (a classification head: cross-encoder; modules.json: bi-encoder) | cross-encoder | bi-encoder
    # drop negatives the teacher scores above (positive - margin): likely unjudged positives; None keeps them all
    teacher_margin: Optional[float] = None


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
    from .pseudo import parse_kinds

    if "file" in parse_kinds(cfg.pseudo_queries) and not cfg.pseudo_file:
        raise DataError(f"mining.pseudo_queries={cfg.pseudo_queries!r} names the file kind but mining.pseudo_file is "
                        "empty; name the file of (query, passage id) pairs (--pseudo-file PATH)")
    if cfg.pseudo_max_per_kind < 0 or cfg.pseudo_neighbours < -1:
        raise DataError("mining.pseudo_max_per_kind must be >= 0 (0: no limit) and mining.pseudo_neighbours >= -1 "
                        "(-1: the whole document)")
    if cfg.teacher_kind not in ("auto", "cross-encoder", "bi-encoder"):
        raise DataError(f"mining.teacher_kind={cfg.teacher_kind!r}; choose one of auto, cross-encoder, bi-encoder")
    if cfg.teacher_margin is not None and not cfg.teacher:
        raise DataError(f"mining.teacher_margin={cfg.teacher_margin} needs a teacher; set mining.teacher (--teacher)")


def make_row(qid: str, query: str, pos: str, positive: Doc, grade: int, negs: list[str], corpus: Corpus,
             bm25: dict[str, float], use_title: bool) -> dict:
    """One mined row of the data contract (DESIGN.md), texts as the model reads them."""
    return {
        "query_id": qid, "query": query,
        "positive_id": pos, "positive": doc_text(positive, use_title),
        "positive_grade": grade,  # graded judgments: for a loss that weighs positives by grade
        "negative_ids": negs, "negatives": [doc_text(corpus[d], use_title) for d in negs],
        # None marks a negative that BM25 did not retrieve (a random one, or a judged one it missed)
        "negative_scores": [bm25.get(d) for d in negs],
    }


def mine(corpus: Corpus, queries: Queries, qrels: Qrels, run: Run, cfg: MiningConfig,
         use_title: bool = True, exclude: set[str] = frozenset(),
         unsure: dict[str, set[str]] | None = None, avoid: dict[str, set[str]] | None = None,
         positive_docs: dict[str, Doc] | None = None) -> tuple[list[dict], dict]:
    """One row per (query, judged positive); returns rows and stats (queries used, dropped and why).
    `exclude`: passages no row may contain (a held-out split's documents). Passages judged non-relevant (grade <= 0)
    are negatives before BM25's unjudged ones, from any rank: the judgment, not the rank, vouches for them.
    `unsure`: per query, passages that are neither (they partly hold a relevant span, or share its document).
    `avoid`: per query, passages that must not be its negatives (likely relevant though unjudged); `positive_docs`:
    per query, the positive's text when it is not the passage as indexed (a pseudo-query's section without its
    heading)."""
    avoid, positive_docs = avoid or {}, positive_docs or {}
    validate(cfg)
    start, end = cfg.negative_range
    all_ids = [d for d in corpus if d not in exclude]
    rows, dropped = [], Counter()
    found = total = known_used = 0
    for qid in sorted(qrels):
        # an avoided passage is treated as a judged positive: never a negative, judged non-relevant or not
        judged_pos = {d for d, r in qrels[qid].items() if r > 0} | avoid.get(qid, set())
        positives = sorted(d for d, r in qrels[qid].items() if r > 0 and d in corpus)
        known = sorted(d for d, r in qrels[qid].items()
                       if r <= 0 and d in corpus and d not in exclude and d not in judged_pos)
        retrieved = ranked(run.get(qid, {}))
        in_run = set(retrieved)
        total += len(positives)
        found += sum(d in in_run for d in positives)
        if not positives:
            dropped["no_positive_in_corpus"] += 1
            continue
        neither = (unsure or {}).get(qid, set())
        skip = judged_pos | set(known) | neither | exclude
        pool = [d for d in retrieved[start:end] if d not in skip]
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
            rows.append(make_row(qid, queries[qid], pos, positive_docs.get(qid, corpus[pos]), qrels[qid][pos],
                                 hard + easy, corpus, run.get(qid, {}), use_title))
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
