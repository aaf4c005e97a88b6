"""`crosstune mine`: BM25 candidates -> the hard-negative dataset, index and stats in checkpoints/<run>/mined/."""
from __future__ import annotations

import json
import time
from pathlib import Path

from crosstune.data.bm25 import BM25Index
from crosstune.data.chunking import chunking_stats
from crosstune.data.judgments import Judgments, holdout_exclusions, load_judgments, mining_qrels
from crosstune.data.loading import chunking_of
from crosstune.data.mining import mine
from crosstune.data.pseudo import parse_kinds
from crosstune.data.types import DataError
from crosstune.train.artifact.outputs import atomic_dir, refuse_existing
from crosstune.train.config import Config, mined_dir, to_yaml
from crosstune.train.ranking.passages import load_passages, model_tokenizer
from crosstune.train.recipes.common import row_pairs, truncation_report
from crosstune.train.training.sources import check_pseudo_file, describe, pseudo_queries, tag_rows
from crosstune.train.training.teacher import teach, teacher_kind, teacher_line


def mine_command(cfg: Config, overwrite: bool = False) -> dict:
    # 1. refuse to clobber (a named teacher is checked now, not after the index), then load the corpus (cut into
    #    passages with data.chunking) and the train split's judgments, or build pseudo-queries from the corpus
    out = mined_dir(cfg)
    refuse_existing(out, overwrite, "a mined dataset")
    teacher = teacher_kind(cfg.mining.teacher, cfg.mining.teacher_kind, cfg.model.max_length) if cfg.mining.teacher else None
    check_pseudo_file(cfg)
    tokenizer = model_tokenizer(cfg)  # counts what the model will not read; chunking counts in its tokens
    corpus = load_passages(cfg, tokenizer)
    chunks = chunking_stats(corpus, chunking_of(cfg.data)) if cfg.data.chunking != "none" else None
    held = holdout_exclusions(cfg.data, corpus)
    queries, judged, pseudo, exclude = query_source(cfg, corpus, held, chunks)
    # 2. build the BM25 index
    t0 = time.time()
    index = BM25Index.build(corpus, cfg.bm25, cfg.data.use_title)
    t_index = time.time() - t0
    # 3. retrieve top-depth and mine negatives from the rank range
    t0 = time.time()
    run = index.search(queries, cfg.mining.depth, progress=True)
    if held:
        print(f"mine | data.dev_split=holdout: the held-out queries' {len(held)} passages (whole documents) are kept "
              "out of every training row")
    qrels, unsure = mining_qrels(judged, corpus, index.scores_of, queries, cfg.mining.document_positives)
    rows, stats = mine(corpus, queries, qrels, run, cfg.mining, cfg.data.use_title, exclude=exclude, unsure=unsure,
                       avoid=pseudo.avoid if pseudo else None, positive_docs=pseudo.positives if pseudo else None)
    stats.update(index_seconds=round(t_index, 2), retrieve_and_mine_seconds=round(time.time() - t0, 2),
                 judgments="pseudo-queries" if pseudo else judged.level)
    if pseudo:
        stats["pseudo_queries"] = tag_rows(pseudo, rows)
    if chunks:
        stats["chunking"] = chunks
    if getattr(corpus, "reading", None):
        stats["reading"] = corpus.reading  # a folder of document files: files read per type, skipped per reason
    stats["truncation"] = truncation_report(tokenizer, row_pairs(rows), cfg.model.max_length,
                                            cfg.model.max_query_tokens, "mine")
    if not rows:
        # the fix depends on why queries dropped: too few negatives, or no relevant passage at all
        few = stats["queries_dropped"].get("fewer_candidates_than_negatives")
        raise DataError(f"no training rows: {stats['queries_dropped']}; " + (
            "lower mining.num_negatives or mining.negative_range[0], or raise mining.depth" if few else
            "no query has a relevant passage in the corpus; check data.relevance_threshold and the qrels' ids"))
    if teacher:  # 3b. the teacher scores every pair; negatives it ranks near the positive may go
        rows, stats["teacher"] = teach(rows, cfg, teacher)
        stats.update(rows=len(rows), queries_used=len({r["query_id"] for r in rows}))
        print(teacher_line(stats["teacher"]))
        if not rows:
            raise DataError(f"mining.teacher_margin={cfg.mining.teacher_margin} left no row with the "
                            f"{cfg.train.group_size - 1} negatives a group needs; lower the margin or mine more negatives")
    # 4. write dataset, index, stats and config; the folder appears only when complete
    write_mined(out, cfg, rows, index, stats)
    print(f"mine | {stats['rows']} rows from {stats['queries_used']}/{stats['queries']} queries; dropped "
          f"{stats['queries_dropped'] or 'none'}; positive recall@{cfg.mining.depth} "
          f"{stats['positive_recall_at_depth']:.3f} | index {t_index:.1f}s, mining {stats['retrieve_and_mine_seconds']:.1f}s"
          f" -> {out}")
    return stats


def query_source(cfg: Config, corpus, held: set[str], chunks: dict | None):
    """(queries, judgments, pseudo set or None, passages never mined): the train split's judged queries, or
    pseudo-queries made from the corpus when mining.pseudo_queries / pseudo_file name kinds."""
    if not parse_kinds(cfg.mining.pseudo_queries, cfg.mining.pseudo_file):
        queries, judged = load_judgments(cfg.data, cfg.data.train_split, corpus)
        print(f"mine | {len(corpus)} passages" + (f" cut from {chunks['documents']} documents" if chunks else "")
              + f", {len(queries)} {cfg.data.train_split} queries with {judged.level} judgments")
        return queries, judged, None, held
    pseudo, exclude = pseudo_queries(cfg, corpus, held)
    print(describe(pseudo.stats))
    # the pseudo set judges its own passages: one positive per query, its avoided passages never negatives
    return pseudo.queries, Judgments("passage", pseudo.qrels, {}), pseudo, exclude


def write_mined(out: Path, cfg: Config, rows: list[dict], index: BM25Index, stats: dict) -> None:
    """mined/: config.yaml, the dataset, the BM25 index (bm25s saves it) and stats.json, written atomically."""
    from datasets import Dataset

    with atomic_dir(out) as tmp:
        (tmp / "config.yaml").write_text(to_yaml(cfg))
        Dataset.from_list(rows).save_to_disk(str(tmp / "dataset"))
        if cfg.bm25.backend == "bm25s":
            index.save(tmp / "index")
        (tmp / "stats.json").write_text(json.dumps(stats, indent=1))
