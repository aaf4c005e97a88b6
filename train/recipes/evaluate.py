"""`crosstune evaluate`: BM25 top-k -> rerank -> metrics side by side, report.md/.json, TREC runs and plots."""
from __future__ import annotations

import json
import time
from pathlib import Path

from crosstune.data.judgments import load_judgments
from crosstune.train.artifact.outputs import atomic_dir, refuse_existing
from crosstune.train.config import Config, run_dir, to_yaml
from crosstune.train.evaluation.analysis import depth_analysis
from crosstune.train.evaluation.levels import first_stage_depth, level_report, level_tables, rank_levels
from crosstune.train.evaluation.metrics import write_trec
from crosstune.train.evaluation.report import add_analysis, cascade_line, plain_report, render, write_plots
from crosstune.train.ranking.candidates import candidate_pairs
from crosstune.train.ranking.pipeline import Ranking, RankingPipeline
from crosstune.train.recipes.common import newest_model, truncation_report


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
    # deep enough for Recall@100 when fewer are reranked (the rest keep BM25 order), for documents, for a cascade
    bm25 = pipe.index.search(queries, max(first_stage_depth(cfg, judged), pipe.deepest))
    t_bm25 = time.time() - t0
    # 2. rerank through the pipeline: passages formatted and scores fused as the model was trained; documents ranked
    # by their passages' scores when the judgments name documents
    t0 = time.time()
    levels, ranking = rank_levels(cfg, pipe, bm25, queries, judged)
    reranked = ranking.cross_encoder
    t_rerank = time.time() - t0
    # 3. metrics side by side, with a paired test, at each level the judgments allow; what the model did not read
    report = level_report(levels, list(cfg.eval.recall_at))
    report["truncation"] = truncation_report(pipe.scorer.tokenizer, candidate_pairs(
        reranked, queries, pipe.corpus, len(pipe.corpus), pipe.use_title), pipe.max_length,
        getattr(pipe.scorer, "max_query_tokens", 0), "evaluate")
    report.update(model=model_path, split=split, depth=pipe.depth, fusion_weight=fusion.weight,
                  biencoder=fusion.biencoder, biencoder_weight=fusion.biencoder_weight, fusion_source=fusion.source,
                  selection=selection, precision=pipe.scorer.precision,
                  **({"cascade": pipe.manifest["cascade"]} if pipe.manifest.get("cascade") else {}),  # frontier.png
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
    print(f"evaluate | {report['queries']} {split} queries, BM25 top-{pipe.depth} reranked by {model_path}; "
          f"fusion from {fusion.source}" + (f"; cascade {cascade_line(report['cascade'])} (chosen on split "
                                            f"{report['cascade']['split']!r})" if report.get("cascade") else "")
          + f"\n{table}\n-> {out}")
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
