"""`crosstune rerank`: BM25 top-k of the configured corpus for a query (or a file of them), reranked and printed, each
passage with its place in its document (file, page, character offsets)."""
from __future__ import annotations

from pathlib import Path

from crosstune.data.readers import pair_lines
from crosstune.data.types import DataError, Queries, ranked
from crosstune.train.config import Config
from crosstune.train.ranking.candidates import candidate_pairs
from crosstune.train.ranking.locations import has_place, with_offsets
from crosstune.train.ranking.pipeline import Hit, RankingPipeline
from crosstune.train.recipes.common import newest_model, truncation_report


def read_query_file(path: str) -> Queries:
    """JSON lines with _id/text, `id<TAB>text` lines, or one query per line."""
    queries = {}
    for n, qid, text in pair_lines(Path(path), "queries file", "check --queries", ("_id", "text")):
        if text is None:  # a bare line is the query itself
            qid, text = f"q{n}", qid
        if qid in queries:
            raise DataError(f"{path}:{n}: query id {qid!r} appears a second time; ids must be unique")
        queries[qid] = text
    if not queries:
        raise DataError(f"{path}: no queries (the file is empty or blank); write one query a line, "
                        "id<TAB>text lines, or JSON lines with _id and text")
    return queries


def rerank_command(cfg: Config, queries: Queries, model: str | None = None, top_n: int = 10) -> dict:
    # 1. the pipeline: model (checked before the slow steps), fusion, corpus and index
    model_path = str(model or newest_model(cfg))
    pipe = RankingPipeline.load(model_path, cfg, search=True, key="--model" if model else "model",
                                progress=len(queries) > 1)  # a file of queries takes a while: show the scoring
    print(f"rerank | BM25 top-{cfg.eval.depth} reranked by {model_path}; fusion from {pipe.fusion.source}")
    # 2. BM25 top-k, then rerank
    bm25 = pipe.index.search(queries, cfg.eval.depth)
    ranking = pipe.rank(bm25, queries, pipe.corpus)
    pairs = candidate_pairs(bm25, queries, pipe.corpus, cfg.eval.depth, pipe.use_title)
    truncation_report(pipe.scorer.tokenizer, pairs, pipe.max_length, getattr(pipe.scorer, "max_query_tokens", 0), "rerank")
    # 3. print each query's top passages: where each lies (file, page, characters), and BM25's rank and score
    for qid, text in queries.items():
        print(f"\nquery {qid}: {text}")
        if not ranking.final[qid]:
            print("  (no passage shares a word with this query)")
        bm25_rank = {d: r for r, d in enumerate(ranked(bm25[qid]), 1)}
        for i, hit in enumerate(pipe.hits(ranking, qid, pipe.corpus, top_n), 1):
            print(hit_lines(i, hit, bm25_rank[hit.doc_id], bm25[qid][hit.doc_id]))
    return ranking.final


def hit_lines(i: int, hit: Hit, bm25_rank: int, bm25_score: float) -> str:
    """Two lines: score, BM25 rank and score, the passage's place (its id where the corpus has no documents) and
    title; then its first words."""
    where = with_offsets(hit.location) if has_place(hit.location, hit.doc_id) else hit.doc_id
    snippet = hit.text[:110].replace("\n", " ")
    return (f"{i:>3}. {hit.score:8.3f}  (BM25 #{bm25_rank:<3} {bm25_score:7.2f})  {where}  [{hit.title or '-'}]\n"
            f"       {snippet}...")
