"""Command recipes: each reads a config, does its numbered steps and writes into checkpoints/<run>/."""
from __future__ import annotations

import json
import time
from pathlib import Path

from crosstune.data.bm25 import BM25Index, load_or_build
from crosstune.data.loading import holdout_passages, load_corpus, load_split
from crosstune.data.readers import iter_lines
from crosstune.data.mining import mine
from crosstune.data.types import DataError, Queries, doc_text, ranked

from .biencoder import BiEncoderScorer
from .checkpoint import list_checkpoints, model_folder
from .config import Config, run_dir, to_yaml
from .export import check_format, export_model
from .model import check_model_source
from .loop import mined_dir
from .metrics import compare, format_table, write_trec
from .outputs import atomic_dir, refuse_existing
from .rerank import rerank, with_tail
from .scoring import load_scorer, read_serving_config


def mine_command(cfg: Config, overwrite: bool = False) -> dict:
    # 1. refuse to clobber, then load the corpus and the train split
    out = mined_dir(cfg)
    refuse_existing(out, overwrite, "a mined dataset")
    corpus = load_corpus(cfg.data)
    queries, qrels = load_split(cfg.data, cfg.data.train_split, corpus)
    print(f"mine | {len(corpus)} passages, {len(queries)} {cfg.data.train_split} queries with judgments")
    # 2. build the BM25 index
    t0 = time.time()
    index = BM25Index.build(corpus, cfg.bm25, cfg.data.use_title)
    t_index = time.time() - t0
    # 3. retrieve top-depth and mine negatives from the rank range
    t0 = time.time()
    run = index.search(queries, cfg.mining.depth, progress=True)
    held = holdout_passages(cfg.data, corpus)
    if held:
        print(f"mine | data.dev_split=holdout: the held-out queries' {len(held)} passages (whole documents) are kept "
              "out of every training row")
    rows, stats = mine(corpus, queries, qrels, run, cfg.mining, cfg.data.use_title, exclude=held)
    stats.update(index_seconds=round(t_index, 2), retrieve_and_mine_seconds=round(time.time() - t0, 2))
    if not rows:
        raise DataError(f"no training rows: {stats['queries_dropped']}; lower mining.num_negatives or "
                        "mining.negative_range[0], or raise mining.depth")
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
    # 2. write the folder atomically
    with atomic_dir(out) as tmp:
        export_model(src, tmp, cfg, dev, fmt)
    loads = ("transformers and sentence_transformers.CrossEncoder" if fmt == "hf" else
             'onnxruntime and sentence_transformers.CrossEncoder(path, backend="onnx")')
    print(f"export | {src} -> {out} ({fmt}; logits; loads in {loads})")
    return out


def evaluate_command(cfg: Config, model: str | None = None, split: str | None = None,
                     output: str | None = None, overwrite: bool = False) -> dict:
    # 1. the split, its BM25 candidates and the model
    split = split or cfg.data.test_split
    model_path = str(model or newest_model(cfg))
    check_model_source(model_path, "--model" if model else "model", cfg.model.max_length)  # before the slow steps
    out = Path(output) if output else run_dir(cfg) / f"eval_{split}"
    refuse_existing(out, overwrite, "an evaluation")
    # how the model ranks (crosstune.json), settled before the slow steps: a depth mismatch stops here
    serving = read_serving_config(model_path)
    use_title = serving.get("use_title", cfg.data.use_title)
    weight, biencoder, bi_weight, fusion_source = fusion_settings(cfg, serving, model_path)
    bi_name = biencoder.name if biencoder else None
    selection = selection_note(serving, split, cfg)
    corpus = load_corpus(cfg.data)
    queries, qrels = load_split(cfg.data, split, corpus)
    index = load_or_build(corpus, cfg.bm25, mined_dir(cfg) / "index", cfg.data.use_title)
    t0 = time.time()
    # retrieve deep enough for Recall@100 even when fewer candidates are reranked; the rest keep BM25 order
    bm25 = index.search(queries, max(cfg.eval.depth, *cfg.eval.recall_at))
    t_bm25 = time.time() - t0
    # 2. rerank, formatting passages and fusing scores as the model was trained (crosstune.json)
    scorer = load_scorer(model_path, max_length=cfg.model.max_length, progress=True,
                         key="--model" if model else "model",
                         batch_size=cfg.eval.batch_size, precision=cfg.eval.precision)
    t0 = time.time()
    final, ce = rerank(bm25, queries, corpus, scorer, cfg.eval.depth, use_title, weight, biencoder, bi_weight)
    t_rerank = time.time() - t0
    # 3. metrics side by side, with a paired test, and the run files
    runs = {"BM25": bm25, "reranked": final}
    if weight or bi_weight:
        runs["cross-encoder"] = with_tail(ce, bm25)
    report = compare(qrels, runs, list(cfg.eval.recall_at))
    report.update(model=model_path, split=split, depth=cfg.eval.depth, fusion_weight=weight,
                  biencoder=bi_name, biencoder_weight=bi_weight, fusion_source=fusion_source, selection=selection,
                  precision=scorer.precision,
                  seconds={"bm25": round(t_bm25, 2), "rerank": round(t_rerank, 2)})
    table = format_table(report)
    with atomic_dir(out) as tmp:
        (tmp / "config.yaml").write_text(to_yaml(cfg))
        (tmp / "report.json").write_text(json.dumps(report, indent=1))
        (tmp / "report.md").write_text(
            f"# {cfg.run.name}: split `{split}`, BM25 top-{cfg.eval.depth} reranked\n\n"
            + (f"> **{selection['note']}**\n\n" if selection["in_sample"] else f"Selection: {selection['note']}.\n\n")
            + f"Model: `{model_path}`; {report['queries']} queries; BM25 fusion weight {weight}"
            + (f", bi-encoder `{bi_name}` weight {bi_weight}" if bi_weight else "") + f" (from {fusion_source}); "
            f"p from a paired t-test over queries against BM25.\n\n{table}\n")
        write_trec(bm25, tmp / "bm25.trec", "bm25")
        write_trec(final, tmp / "reranked.trec", "crosstune")
    print(f"evaluate | {report['queries']} {split} queries, BM25 top-{cfg.eval.depth} reranked by {model_path}; "
          f"fusion from {fusion_source}\n{table}\n-> {out}")
    if selection["in_sample"]:
        print(f"warning: {selection['note']}")
    return report


def fusion_settings(cfg: Config, serving: dict, model_path: str) -> tuple[float, BiEncoderScorer | None, float, str]:
    """(BM25 weight, bi-encoder scorer or None, its weight, where they came from): a weight set in eval.* wins;
    else the model's manifest (crosstune.json of an export or best/); else 0. Tuned weights fit one rerank depth
    only: applying them at another is refused. The bi-encoder is loaded only when its weight is not 0."""
    tuned = serving.get("fusion") or {}
    explicit = cfg.eval.fusion_weight is not None, cfg.eval.biencoder_weight is not None
    weight = cfg.eval.fusion_weight if explicit[0] else float(tuned.get("weight") or 0.0)
    bi_weight = cfg.eval.biencoder_weight if explicit[1] else float(tuned.get("biencoder_weight") or 0.0)
    from_manifest = [k for k, e, w in (("weight", explicit[0], weight), ("biencoder_weight", explicit[1], bi_weight))
                     if not e and w]
    tuned_depth = tuned.get("depth")
    if from_manifest and tuned_depth and tuned_depth != cfg.eval.depth:
        raise DataError(f"{model_path}/crosstune.json: fusion weights were tuned on BM25 top-{tuned_depth} but "
                        f"eval.depth={cfg.eval.depth}; set eval.depth={tuned_depth}, or fix the weights yourself "
                        "(eval.fusion_weight, eval.biencoder_weight; 0 ranks by the cross-encoder alone)")
    if all(explicit):
        source = "eval.fusion_weight / eval.biencoder_weight in the config"
    elif from_manifest:
        source = f"{model_path}/crosstune.json ({tuned.get('source', 'tuned in training')})"
        if any(explicit):
            source += ", with the config's eval.* weight"
    else:
        source = "none: the cross-encoder alone" if not (weight or bi_weight) else "eval.* in the config"
    name = cfg.eval.biencoder or tuned.get("biencoder") or ""
    if bi_weight and not name:
        raise DataError(f"bi-encoder weight {bi_weight} but no bi-encoder is named; set eval.biencoder")
    biencoder = BiEncoderScorer(name, mined_dir(cfg) / "biencoder") if bi_weight else None
    return weight, biencoder, (bi_weight if biencoder else 0.0), source


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
    for n, line in iter_lines(Path(path), "queries file", "check --queries"):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                obj = json.loads(line)
                qid, text = str(obj["_id"]), str(obj["text"])
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise DataError(f"{path}:{n}: expected a JSON object with _id and text ({e})") from None
        elif "\t" in line:
            qid, text = line.split("\t", 1)
        else:
            qid, text = f"q{n}", line
        if qid in queries:
            raise DataError(f"{path}:{n}: query id {qid!r} appears a second time; ids must be unique")
        queries[qid] = text
    if not queries:
        raise DataError(f"{path}: no queries (the file is empty or blank); write one query a line, "
                        "id<TAB>text lines, or JSON lines with _id and text")
    return queries


def rerank_command(cfg: Config, queries: Queries, model: str | None = None, top_n: int = 10) -> dict:
    # 1. model (checked before the slow steps), corpus and index
    model_path = str(model or newest_model(cfg))
    check_model_source(model_path, "--model" if model else "model", cfg.model.max_length)
    corpus = load_corpus(cfg.data)
    index = load_or_build(corpus, cfg.bm25, mined_dir(cfg) / "index", cfg.data.use_title)
    serving = read_serving_config(model_path)
    scorer = load_scorer(model_path, max_length=cfg.model.max_length,
                         key="--model" if model else "model",
                         batch_size=cfg.eval.batch_size, precision=cfg.eval.precision)
    weight, biencoder, bi_weight, fusion_source = fusion_settings(cfg, serving, model_path)
    print(f"rerank | BM25 top-{cfg.eval.depth} reranked by {model_path}; fusion from {fusion_source}")
    # 2. BM25 top-k, then rerank and print
    bm25 = index.search(queries, cfg.eval.depth)
    reranked, _ = rerank(bm25, queries, corpus, scorer, cfg.eval.depth, serving.get("use_title", cfg.data.use_title),
                         weight, biencoder, bi_weight)
    for qid, text in queries.items():
        bm25_rank = {d: i + 1 for i, d in enumerate(ranked(bm25[qid]))}
        print(f"\nquery {qid}: {text}")
        if not reranked[qid]:
            print("  (no passage shares a word with this query)")
        for i, did in enumerate(ranked(reranked[qid])[:top_n], 1):
            snippet = doc_text(corpus[did], False)[:110].replace("\n", " ")
            title = corpus[did].title or "-"
            print(f"{i:>3}. {reranked[qid][did]:8.3f}  (BM25 #{bm25_rank[did]:<3}) {did}  [{title}]\n       {snippet}...")
    return reranked
