"""Command recipes: each reads a config, does its numbered steps and writes into checkpoints/<run>/."""
from __future__ import annotations

import json
import time
from pathlib import Path

from crosstune.data.bm25 import BM25Index
from crosstune.data.chunking import chunking_stats
from crosstune.data.judgments import Judgments, holdout_exclusions, load_judgments, mining_qrels
from crosstune.data.loading import chunking_of
from crosstune.data.readers import pair_lines
from crosstune.data.mining import mine
from crosstune.data.pseudo import parse_kinds
from crosstune.data.types import DataError, Queries, doc_text, ranked

from .checkpoint import list_checkpoints, model_folder
from .config import Config, dotted, mined_dir, run_dir, to_yaml, trained_config
from .documents import (candidate_pairs, first_stage_depth, level_report, level_tables, load_passages,
                        model_tokenizer, rank_levels, row_pairs, truncation_report)
from .export import check_format, export_model
from .model import check_model_source
from .metrics import write_trec
from .outputs import atomic_dir, refuse_existing
from .pipeline import RankingPipeline, Ranking
from .analysis import depth_analysis
from .report import add_analysis, plain_report, render, write_plots
from .sources import check_pseudo_file, describe, pseudo_queries, tag_rows
from .teacher import teach, teacher_kind, teacher_line


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
    pseudo, exclude = pseudo_queries(cfg, corpus, held) if parse_kinds(cfg.mining.pseudo_queries, cfg.mining.pseudo_file) \
        else (None, held)
    if pseudo:  # the pseudo set judges its own passages: one positive per query, its avoided passages never negatives
        queries, judged = pseudo.queries, Judgments("passage", pseudo.qrels, {})
        print(describe(pseudo.stats))
    else:
        queries, judged = load_judgments(cfg.data, cfg.data.train_split, corpus)
        print(f"mine | {len(corpus)} passages" + (f" cut from {chunks['documents']} documents" if chunks else "")
              + f", {len(queries)} {cfg.data.train_split} queries with {judged.level} judgments")
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
    stats["truncation"] = truncation_report(tokenizer, row_pairs(rows), cfg.model.max_length,
                                            cfg.model.max_query_tokens, "mine")
    if not rows:
        raise DataError(f"no training rows: {stats['queries_dropped']}; lower mining.num_negatives or "
                        "mining.negative_range[0], or raise mining.depth")
    if teacher:  # 3b. the teacher scores every pair; negatives it ranks near the positive may go
        rows, stats["teacher"] = teach(rows, cfg, teacher)
        stats.update(rows=len(rows), queries_used=len({r["query_id"] for r in rows}))
        print(teacher_line(stats["teacher"]))
        if not rows:
            raise DataError(f"mining.teacher_margin={cfg.mining.teacher_margin} left no row with the "
                            f"{cfg.train.group_size - 1} negatives a group needs; lower the margin or mine more negatives")
    # 4. write dataset, index, stats and config; the folder appears only when complete
    from datasets import Dataset

    with atomic_dir(out) as tmp:
        (tmp / "config.yaml").write_text(to_yaml(cfg))
        Dataset.from_list(rows).save_to_disk(str(tmp / "dataset"))
        if cfg.bm25.backend == "bm25s":
            index.save(tmp / "index")
        (tmp / "stats.json").write_text(json.dumps(stats, indent=1))
    print(f"mine | {stats['rows']} rows from {stats['queries_used']}/{stats['queries']} queries; dropped "
          f"{stats['queries_dropped'] or 'none'}; positive recall@{cfg.mining.depth} "
          f"{stats['positive_recall_at_depth']:.3f} | index {t_index:.1f}s, mining {stats['retrieve_and_mine_seconds']:.1f}s"
          f" -> {out}")
    return stats


def newest_model(cfg: Config, include_export: bool = True) -> Path:
    """A run's newest product: its export, else best/ (best dev nDCG@10), else the latest checkpoint."""
    out = run_dir(cfg)
    for candidate in ([out / "export"] if include_export else []) + [out / "best"]:
        if (candidate / "config.json").exists():
            return candidate
    found = list_checkpoints(out)
    if found:
        return found[-1][1] / "model"
    raise DataError(f"{out} has no trained model; run `crosstune train` first or name a model/checkpoint")


def export_dir(cfg: Config, fmt: str = "hf") -> Path:
    """export/ for the hf folder (what evaluate and rerank pick by default); export-onnx/, export-onnx-int8/ beside
    it, so exporting another format never replaces the hf one."""
    return run_dir(cfg) / ("export" if fmt == "hf" else f"export-{fmt}")


def export_command(cfg: Config, source: str | None = None, overwrite: bool = False, fmt: str = "hf") -> Path:
    # 1. the format (and, for ONNX, its libraries), then the source: --checkpoint, else best/, else the latest
    check_format(fmt)
    out = export_dir(cfg, fmt)
    refuse_existing(out, overwrite, "an export")
    src = model_folder(Path(source)) if source else newest_model(cfg, include_export=False)
    src = Path(check_model_source(str(src), "--checkpoint" if source else "model", allow_onnx=False))
    dev = json.loads((src / "dev_metrics.json").read_text()) if (src / "dev_metrics.json").exists() else None
    # the manifest and the card describe the model as trained: the run's own config, not this command's
    if not source:
        cfg, differ = trained_config(cfg)
        if differ:
            shown = ", ".join(f"{k}={dotted(cfg, k)}" for k in differ[:6]) + (", ..." if len(differ) > 6 else "")
            print(f"export | as the run trained ({run_dir(cfg) / 'config.yaml'}; this command's config differs): {shown}")
    # 2. write the folder atomically
    with atomic_dir(out) as tmp:
        export_model(src, tmp, cfg, dev, fmt)
    loads = ("transformers and sentence_transformers.CrossEncoder" if fmt == "hf" else
             'onnxruntime and sentence_transformers.CrossEncoder(path, backend="onnx")')
    print(f"export | {src} -> {out} ({fmt}; logits; loads in {loads})")
    return out


def evaluate_command(cfg: Config, model: str | None = None, split: str | None = None,
                     output: str | None = None, overwrite: bool = False) -> dict:
    # 1. the model and how it ranks (crosstune.json), settled before the slow steps: a depth mismatch stops here
    split = split or cfg.data.test_split
    model_path = str(model or newest_model(cfg))
    out = Path(output) if output else run_dir(cfg) / f"eval_{split}"
    refuse_existing(out, overwrite, "an evaluation")
    pipe = RankingPipeline.load(model_path, cfg, search=True, key="--model" if model else "model", progress=True)
    fusion = pipe.fusion
    selection = selection_note(pipe.manifest, split, cfg)
    queries, judged = load_judgments(cfg.data, split, pipe.corpus)
    t0 = time.time()
    # retrieve deep enough for Recall@100 even when fewer candidates are reranked (the rest keep BM25 order), and
    # deeper when documents are ranked from their passages
    bm25 = pipe.index.search(queries, first_stage_depth(cfg, judged))
    t_bm25 = time.time() - t0
    # 2. rerank through the pipeline: passages formatted and scores fused as the model was trained; documents ranked
    # by their passages' scores when the judgments name documents
    t0 = time.time()
    levels, reranked = rank_levels(cfg, pipe, bm25, queries, judged)
    t_rerank = time.time() - t0
    # 3. metrics side by side, with a paired test, at each level the judgments allow; what the model did not read
    report = level_report(levels, list(cfg.eval.recall_at))
    report["truncation"] = truncation_report(pipe.scorer.tokenizer, candidate_pairs(
        reranked, queries, pipe.corpus, len(pipe.corpus), pipe.use_title), pipe.max_length,
        getattr(pipe.scorer, "max_query_tokens", 0), "evaluate")
    report.update(model=model_path, split=split, depth=cfg.eval.depth, fusion_weight=fusion.weight,
                  biencoder=fusion.biencoder, biencoder_weight=fusion.biencoder_weight, fusion_source=fusion.source,
                  selection=selection, precision=pipe.scorer.precision,
                  seconds={"bm25": round(t_bm25, 2), "rerank": round(t_rerank, 2)})
    table = level_tables(report, cfg)
    # 4. what a reader needs beside the table: intervals, wins and losses, quality over depth (eval.depth_curve)
    add_analysis(report, cfg.eval.examples)
    passages = levels.get("passage") if report["level"] == "passage" else None
    if cfg.eval.depth_curve and passages:
        report["depth_curve"] = depth_analysis(pipe, queries, passages.qrels, bm25,
                                               Ranking(passages.runs["reranked"], reranked), cfg.eval.depth_curve,
                                               report["seconds"])
    with atomic_dir(out) as tmp:
        (tmp / "config.yaml").write_text(to_yaml(cfg))
        files = write_plots(tmp, report)
        # the examples show passages; a document-level report keeps its tables and plots
        (tmp / "report.md").write_text(
            render(report, cfg.run.name, selection, fusion, files, queries, passages.qrels, pipe.corpus,
                   passages.runs["BM25"], passages.runs["reranked"], table) if passages
            else plain_report(report, cfg.run.name, selection, fusion, files, table))
        (tmp / "report.json").write_text(json.dumps(report, indent=1))
        for level, suffix in (("passage", ""), ("document", "_documents")):
            if level in levels:
                write_trec(levels[level].runs["BM25"], tmp / f"bm25{suffix}.trec", "bm25")
                write_trec(levels[level].runs["reranked"], tmp / f"reranked{suffix}.trec", "crosstune")
    print(f"evaluate | {report['queries']} {split} queries, BM25 top-{cfg.eval.depth} reranked by {model_path}; "
          f"fusion from {fusion.source}\n{table}\n-> {out}")
    if selection["in_sample"]:
        print(f"warning: {selection['note']}")
    return report


def selection_note(serving: dict, split: str, cfg: Config) -> dict:
    """Which split chose the model (checkpoint and fusion weights), and whether `split` is that one (in-sample)."""
    chosen = (serving.get("selection") or {}).get("split")
    if split == cfg.data.train_split:
        note = f"IN-SAMPLE: the model was trained on split {split!r}"
    elif chosen == split:
        note = (f"IN-SAMPLE: split {split!r} chose this checkpoint and its fusion weights, so this figure overstates "
                "what unseen queries get; report a split that chose nothing (data.test_split)")
    elif chosen:
        note = f"out-of-sample: split {chosen!r} chose the checkpoint and fusion weights, {split!r} reports"
    else:
        note = "no selection recorded with this model (not an export or best/): which split chose it is unknown"
    return {"chosen_on": chosen, "reported_on": split, "in_sample": note.startswith("IN-SAMPLE"), "note": note}


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
