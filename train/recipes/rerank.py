"""`crosstune rerank`: BM25 top-k of the configured corpus for a query (or a file of them), reranked and printed."""
from __future__ import annotations

from pathlib import Path

from crosstune.data.readers import pair_lines
from crosstune.data.types import DataError, Queries, doc_text, ranked
from crosstune.train.config import Config
from crosstune.train.ranking.candidates import candidate_pairs
from crosstune.train.ranking.pipeline import RankingPipeline
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
    # 2. BM25 top-k, then rerank and print
    bm25 = pipe.index.search(queries, cfg.eval.depth)
    reranked = pipe.rank(bm25, queries, pipe.corpus).final
    pairs = candidate_pairs(bm25, queries, pipe.corpus, cfg.eval.depth, pipe.use_title)
    truncation_report(pipe.scorer.tokenizer, pairs, pipe.max_length, getattr(pipe.scorer, "max_query_tokens", 0), "rerank")
    for qid, text in queries.items():
        bm25_rank = {d: i + 1 for i, d in enumerate(ranked(bm25[qid]))}
        print(f"\nquery {qid}: {text}")
        if not reranked[qid]:
            print("  (no passage shares a word with this query)")
        for i, did in enumerate(ranked(reranked[qid])[:top_n], 1):
            doc = pipe.corpus[did]
            snippet = doc_text(doc, False)[:110].replace("\n", " ")
            print(f"{i:>3}. {reranked[qid][did]:8.3f}  (BM25 #{bm25_rank[did]:<3}) {did}  [{doc.title or '-'}]\n"
                  f"       {snippet}...")
    return reranked
