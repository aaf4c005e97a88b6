"""Whole legal documents with the cross-encoder: `configs/legal-documents.yaml` as a user runs it, on dev.

    python benchmarks/documents.py         # first, once: builds checkpoints/legalbench-documents/ (BM25 figures)
    python benchmarks/documents_model.py   # mine / train / export / evaluate (~75 min on 2 cores); BENCHMARKS.md

Each step runs once: one whose output is already there is not run again, so the script resumes. With
`--passage-model` it also evaluates the labelled model trained on the shipped 1,000-character passages
(`benchmarks/quality.py`'s export) through the same whole-document pipeline (~30 min more).

Figures: the 293 dev queries, judged by span (a passage is relevant when it holds >= 30% of a judged span) and by
document (a document is relevant when it holds a judged span). The recipe chose its checkpoint and fusion weights on
60 held-out training queries, its chunking and aggregation on the train queries with BM25 (BENCHMARKS.md "Whole
documents"): dev chose nothing and reports out-of-sample. The shipped-passage row ranks the same documents by the
labelled model's dev run over the shipped passages (MaxP: a document's best passage; exact from the run's order).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, machine, train_minutes, write_section  # noqa: E402

CONFIG = ROOT / "configs" / "legal-documents.yaml"
RUN = ROOT / "checkpoints" / "legal-documents"
VIEW = ROOT / "checkpoints" / "legalbench-documents"
LABELLED = ROOT / "checkpoints" / "quality" / "legal"  # benchmarks/quality.py: trained on the shipped passages
PASSAGE_EVAL = RUN / "eval_dev_passage_model"


def make(passage_model: bool) -> None:
    base = ["--config", str(CONFIG)]
    todo = [(["mine", *base], RUN / "mined" / "dataset"), (["train", *base], RUN / "best"),
            (["export", *base], RUN / "export" / "crosstune.json"), (["evaluate", *base], RUN / "eval_dev" / "report.json")]
    if passage_model:
        todo.append((["evaluate", *base, "--model", str(LABELLED / "export"), "--output", str(PASSAGE_EVAL)],
                     PASSAGE_EVAL / "report.json"))
    for argv, done in todo:
        if not done.exists():
            print(f"documents_model | crosstune {' '.join(argv)}", flush=True)
            subprocess.run([sys.executable, "-m", "crosstune.train", *argv], check=True, cwd=ROOT)


def read_trec(path: Path) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        q, _, doc, _, score, _ = line.split()
        run.setdefault(q, {})[doc] = float(score)
    return run


def shipped_maxp() -> dict | None:
    """Document nDCG@10 of the labelled model's dev run over the shipped passages, MaxP (its order decides it)."""
    from crosstune.data.readers import read_qrels_tsv
    from crosstune.train.evaluation.metrics import aggregate, per_query
    from crosstune.train.ranking.aggregation import aggregate_run

    trec = {name: LABELLED / "eval_dev" / f"{name}.trec" for name in ("bm25", "reranked")}
    if not all(p.exists() for p in trec.values()):
        return None
    qrels = read_qrels_tsv(VIEW / "qrels" / "dev.tsv")
    out = {}
    for name, path in trec.items():
        values = per_query(qrels, aggregate_run(read_trec(path), "maxp"), ["nDCG@10", "MRR@10", "Recall@10"])
        out[name] = aggregate(values)
    return out


def row(label: str, metrics: dict, system: str, keys=("nDCG@10", "MRR@10", "Recall@10", "Recall@100")) -> str:
    return f"| {label} | " + " | ".join(f"{metrics[k][system]:.3f}" for k in keys if k in metrics) + " |"


def passage_table(recipe: dict, passage_model: dict | None) -> str:
    m = recipe["metrics"]
    lines = ["| system | nDCG@10 | MRR@10 | Recall@10 | Recall@100 |", "|---|---|---|---|---|",
             row("BM25 (legal analyzer + stemming)", m, "BM25"),
             row("recipe: cross-encoder alone", m, "cross-encoder"), row("recipe: fused", m, "reranked")]
    if passage_model:
        pm = passage_model["metrics"]
        lines += [row("shipped-passage model: cross-encoder alone", pm, "cross-encoder"),
                  row("shipped-passage model: fused (its own weights)", pm, "reranked")]
    return "\n".join(lines)


def document_table(recipe: dict, passage_model: dict | None, shipped: dict | None) -> str:
    d = recipe["documents"]["metrics"]
    keys = ("nDCG@10", "MRR@10", "Recall@10")
    how = recipe["documents"].get("aggregate", "?")
    how = f"mean-top-{recipe['documents'].get('aggregate_k')}" if how == "mean-top-k" else how
    lines = ["| system | nDCG@10 | MRR@10 | Recall@10 |", "|---|---|---|---|",
             row(f"BM25 passages, {how}", d, "BM25", keys), row(f"recipe: cross-encoder alone, {how}", d, "cross-encoder", keys),
             row(f"recipe: fused, {how}", d, "reranked", keys)]
    if passage_model:
        pd = passage_model["documents"]["metrics"]
        lines.append(row(f"shipped-passage model through this pipeline: fused, {how}", pd, "reranked", keys))
    if shipped:
        for name, label in (("bm25", "BM25"), ("reranked", "labelled model, fused")):
            lines.append(f"| shipped 1,000-character passages, {label}, maxp | "
                         + " | ".join(f"{shipped[name][k]:.3f}" for k in keys) + " |")
    return "\n".join(lines)


def findings(recipe: dict) -> str:
    """The headline ratios and tests, and the cross-encoder alone over depth (evaluate's depth curve)."""
    m, p = recipe["metrics"]["nDCG@10"], recipe["p_values"]
    d, dp = recipe["documents"]["metrics"]["nDCG@10"], recipe["documents"]["p_values"]
    lines = [f"- Passages: fused {m['reranked']:.3f} vs BM25 {m['BM25']:.3f} = **{m['reranked'] / m['BM25']:.2f}x** "
             f"(p={p['reranked']['nDCG@10']:.2g}); the cross-encoder alone {m['cross-encoder']:.3f} = "
             f"{m['cross-encoder'] / m['BM25']:.2f}x (p={p['cross-encoder']['nDCG@10']:.2g}).",
             f"- Documents: fused {d['reranked']:.3f} vs BM25 {d['BM25']:.3f} (p={dp['reranked']['nDCG@10']:.2g}); alone "
             f"{d['cross-encoder']:.3f} (p={dp['cross-encoder']['nDCG@10']:.2g})."]
    curve = (recipe.get("depth_curve") or {}).get("points")
    if curve:
        lines.append("- The cross-encoder alone over rerank depth (evaluate's depth curve, passage nDCG@10): "
                     + ", ".join(f"{pt['depth']}: {pt['nDCG@10']:.3f}" for pt in curve)
                     + ". It orders BM25's first candidates better than BM25 does and the deeper ones worse: it "
                     "needs the fusion, which the recipe serves.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--passage-model", action="store_true",
                    help="also evaluate the shipped-passage model through the whole-document pipeline (~30 min)")
    a = ap.parse_args()
    if not (VIEW / "corpus.jsonl").exists():
        sys.exit(f"{VIEW} is missing: run `python benchmarks/documents.py` first (it builds the whole-document view)")
    make(a.passage_model)
    from crosstune.train.evaluation.levels import aggregate_table

    recipe = json.loads((RUN / "eval_dev" / "report.json").read_text())
    passage_model = json.loads((PASSAGE_EVAL / "report.json").read_text()) if (PASSAGE_EVAL / "report.json").exists() else None
    stats = json.loads((RUN / "mined" / "stats.json").read_text())
    cut = recipe.get("truncation", {})
    wall = train_minutes(RUN)
    body = f"""## Whole documents with the cross-encoder (`python benchmarks/documents_model.py`)

Ran on: {machine()}, {time.strftime('%Y-%m-%d')}. `configs/legal-documents.yaml` as a user runs it (`crosstune mine /
train / export / evaluate`): the 252 whole documents cut into paragraph passages of up to 192 tokens
({stats.get('chunking', {}).get('passages', '?')} passages), span judgments, BM25 with the legal analyzer and
stemming, then the shipped CPU recipe (300 steps of 8 queries x 4 passages from all-MiniLM-L6-v2, lr 3e-5, fp32;
{f'{wall:.0f} min of training with its holdout checks' if wall else 'training time not recorded'}). Checkpoint and
fusion weights (BM25 {recipe['fusion_weight']}, bi-encoder {recipe['biencoder_weight']}) chosen on 60 held-out
training queries; the chunking, the analyzer and the aggregation on the train queries with BM25: **the 293 dev
queries chose nothing; every figure is out-of-sample.** BM25 top-{recipe['depth']} passages reranked a query.
What the model did not read: {cut.get('pairs_cut', '?')} of {cut.get('pairs', '?')} reranked pairs cut at max length
({cut.get('tokens_lost_share', 0):.2%} of their tokens).

{findings(recipe)}

### 1. Passages (span-judged)

{passage_table(recipe, passage_model)}

### 2. Documents (judged when they hold a judged span)

Documents ranked by their passages' scores (`eval.aggregate`); the last rows rank the same documents from the
labelled model's dev run over the shipped 1,000-character passages (`benchmarks/quality.py`), by their best passage.
BM25 over whole documents, for reference, is in "Whole documents with BM25", table 2.

{document_table(recipe, passage_model, shipped_maxp())}

Document nDCG@10 under each `eval.aggregate`, from the same passage scores (reported, not chosen, on dev):

{aggregate_table(recipe['documents']['by_aggregate'])}
"""
    write_section("documents-model", body)
    print(body)


if __name__ == "__main__":
    main()
