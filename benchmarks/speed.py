"""Speed against the peers on legalbench-rag, both sides in the same run on the same machine.

    python benchmarks/speed.py            # every CPU row (~40 min on 2 cores); writes BENCHMARKS.md
    python benchmarks/speed.py --quick    # a smaller version (~5 min)

Rows: 1. BM25 mining, crosstune (bm25s) vs rank_bm25; 2. training pairs/s, `crosstune train` vs
sentence-transformers' CrossEncoderTrainer; 3. reranking latency, crosstune's scorer vs CrossEncoder.predict;
4. BM25 + rerank over a 500k-passage legal corpus; 5. export formats (torch fp32/bf16, onnx, onnx-int8, and
sentence-transformers' ONNX backend on the same exports; `--only formats`, needs pip install "crosstune[onnx]").
Ends with one JSON line of ratios and latencies.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    LEGAL,
    ROOT,
    auto_precision_name,
    machine,
    median,
    pct,
    read_section,
    subsections,
    timed,
    write_section,
)
from crosstune.data.bm25 import BM25Config, BM25Index  # noqa: E402
from crosstune.data.loading import DataConfig, load_corpus, load_split  # noqa: E402
from crosstune.data.types import Doc, doc_text, ranked  # noqa: E402

WARMUP, STEPS = 3, 20  # --quick: 2 and 8


def build_in_subprocess(backend: str, size: int) -> tuple[float, float]:
    """(seconds, peak RSS MiB above the loaded corpus) of one index build, in a fresh process."""
    import subprocess

    proc = subprocess.run([sys.executable, __file__, "--worker", "index", "--backend", backend, "--size", str(size)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"index build ({backend}, {size}) failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out["build_s"], out["peak_mib"]


def index_worker(backend: str, size: int) -> None:
    import resource

    corpus = load_corpus(DataConfig(path=str(LEGAL)))
    if size > len(corpus):
        corpus = grow_corpus(corpus, size)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _, seconds = timed(lambda: BM25Index.build(corpus, BM25Config(backend=backend), progress=False))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"build_s": seconds, "peak_mib": (peak - before) / 1024}))


def bench_mining(corpus, queries, quick: bool) -> tuple[str, dict]:
    # 1. crosstune's index and top-100 for every train query (median of 3 passes)
    build_s, build_mb = build_in_subprocess("bm25s", len(corpus))
    fast = BM25Index.build(corpus, BM25Config(), progress=False)
    passes = [timed(lambda: fast.search(queries, 100))[1] for _ in range(3)]
    fast_qps = len(queries) / median(passes)
    # 2. rank_bm25 with the same variant (Lucene idf), k1, b and tokens, on a sample of queries
    ref_build_s, ref_mb = build_in_subprocess("rank_bm25", len(corpus))
    ref = BM25Index.build(corpus, BM25Config(backend="rank_bm25"), progress=False)
    sample = random.Random(0).sample(sorted(queries), 20 if quick else 100)
    subset = {q: queries[q] for q in sample}
    ref_run, ref_s = timed(lambda: ref.search(subset, 100))
    ref_qps = len(sample) / ref_s
    fast_run = fast.search(subset, 100)
    same = sum(ranked(fast_run[q])[:10] == ranked(ref_run[q])[:10] for q in sample) / len(sample)
    x = fast_qps / ref_qps
    table = f"""### 1. BM25 mining: top-100 for the {len(queries):,} train queries over {len(corpus):,} passages

| | crosstune (bm25s) | rank_bm25 | ratio |
|---|---|---|---|
| queries / s | {fast_qps:,.0f} (median of 3 passes over all queries) | {ref_qps:,.1f} (a sample of {len(sample)} queries) | **{x:,.0f}x** |
| index build | {build_s:.1f} s | {ref_build_s:.1f} s | {ref_build_s / build_s:.1f}x |
| peak memory added by indexing (RSS, fresh process) | {build_mb:,.0f} MiB | {ref_mb:,.0f} MiB | |
| same top-10 as rank_bm25 | {same:.1%} of the sampled queries | | |

Same BM25 variant (Lucene idf, k1=1.5, b=0.75), same tokens (crosstune's analyzer feeds both).
"""
    return table, {"mining_x": round(x, 1), "mining_qps": round(fast_qps), "mining_top10_same": round(same, 4),
                   "index_build_s": round(build_s, 2)}


def in_subprocess(side: str, mined: Path, precision: str, tmp: Path) -> float:
    """Each training run gets its own process: Accelerate's state (precision) is fixed once per process."""
    import subprocess

    args = [sys.executable, __file__, "--worker", side, "--precision", precision, "--mined", str(mined),
            "--tmp", str(tmp / f"{side}_{precision}"), "--steps", f"{WARMUP},{STEPS}"]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} {precision} failed:\n{proc.stderr[-3000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def bench_training(mined: Path, tmp: Path) -> tuple[str, dict]:
    rows, out = [], {}
    for precision in ("no", "bf16"):
        ours = in_subprocess("crosstune", mined, precision, tmp)
        theirs = in_subprocess("st", mined, precision, tmp)
        name = "fp32" if precision == "no" else "bf16"
        rows.append(f"| {name} | {ours:.1f} | {theirs:.1f} | **{ours / theirs:.2f}x** |")
        out[f"train_x_{name}"] = round(ours / theirs, 2)
        out[f"train_pairs_per_s_{name}"] = round(ours, 1)
    table = f"""### 2. Training throughput: MiniLM-L6, 32 pairs a step (4 queries x 8 passages), max length 256

Pairs per second over {STEPS} optimizer steps after {WARMUP} warm-up steps, on the same mined legal groups.
crosstune: `crosstune train` with configs/legal.yaml (listwise loss, length-sorted forward chunks of 8).
Peer: sentence-transformers `CrossEncoderTrainer` + `BinaryCrossEntropyLoss(pos_weight=7)`, batch 32 pairs.

| precision | crosstune pairs/s | sentence-transformers pairs/s | ratio |
|---|---|---|---|
""" + "\n".join(rows) + "\n"
    return table, out


def rerank_candidates(corpus, queries, qrels, index, n: int):
    sample = random.Random(1).sample(sorted(qrels), min(n, len(qrels)))
    run = index.search({q: queries[q] for q in sample}, 100)
    return sample, run


def time_systems(systems: dict, pairs: dict, sample: list, run, qrels) -> dict:
    """Each scorer in turn, one query's candidates at a time: latency percentiles, docs/s, nDCG@10 on the sample."""
    import time

    from crosstune.train.evaluation.metrics import aggregate, per_query
    from crosstune.train.ranking.candidates import with_tail

    results = {}
    for name, score in systems.items():
        score(pairs[sample[0]][:8])  # warm-up
        lat, scored = [], {}
        for q in sample:
            t0 = time.perf_counter()
            s = score(pairs[q])
            lat.append(time.perf_counter() - t0)
            scored[q] = {d: float(v) for d, v in zip(ranked(run[q]), s)}
        ndcg = aggregate(per_query({q: qrels[q] for q in sample}, with_tail(scored, run), ["nDCG@10"]))["nDCG@10"]
        docs = sum(len(pairs[q]) for q in sample)
        results[name] = {"p50": pct(lat, 50), "p95": pct(lat, 95), "docs_s": docs / sum(lat), "ndcg": ndcg}
    return results


def bench_rerank(model_path: str, corpus, queries, qrels, index, quick: bool) -> tuple[str, dict]:
    from sentence_transformers import CrossEncoder

    from crosstune.train.ranking.scorers import CrossEncoderScorer

    sample, run = rerank_candidates(corpus, queries, qrels, index, 10 if quick else 50)
    pairs = {q: [(queries[q], doc_text(corpus[d])) for d in ranked(run[q])] for q in sample}
    st = CrossEncoder(model_path, device="cpu", max_length=256)
    systems = {
        "sentence-transformers predict (defaults: fp32, batch 32)": lambda ps: st.predict(ps, show_progress_bar=False),
        "crosstune fp32": CrossEncoderScorer.from_pretrained(model_path, 256, "cpu", precision="no").score,
        f"crosstune default (auto: {AUTO} here)": CrossEncoderScorer.from_pretrained(model_path, 256, "cpu").score,
    }
    results = time_systems(systems, pairs, sample, run, qrels)
    st_r, fp32_r, auto_r = results.values()
    rows = "\n".join(f"| {n} | {r['p50'] * 1000:.0f} | {r['p95'] * 1000:.0f} | {r['docs_s']:.0f} | {r['ndcg']:.4f} | "
                     f"{r['docs_s'] / st_r['docs_s']:.2f}x |" for n, r in results.items())
    table = f"""### 3. Reranking latency: 100 BM25 candidates per query, {len(sample)} dev queries, one query at a time

Model: `{model_path}` ({chosen_on(model_path)}). nDCG@10 over the same queries shows what precision costs.

| scorer | p50 ms/query | p95 ms/query | docs/s | nDCG@10 | speed vs predict |
|---|---|---|---|---|---|
{rows}

Default path keeps {f"{auto_r['ndcg'] / fp32_r['ndcg']:.2%}" if fp32_r['ndcg'] else "n/a (fp32 scored 0)"} of the fp32 nDCG@10.
"""
    return table, {"rerank_x": round(auto_r["docs_s"] / st_r["docs_s"], 2),
                   "rerank_x_fp32": round(fp32_r["docs_s"] / st_r["docs_s"], 2),
                   "rerank_p95_s": round(auto_r["p95"], 3),
                   "rerank_ndcg_kept": round(auto_r["ndcg"] / fp32_r["ndcg"], 4) if fp32_r["ndcg"] else None}


AUTO = auto_precision_name()


def onnx_exports(model_path: str, tmp: Path) -> dict[str, tuple[Path, float]]:
    """{format: (folder, export seconds)}: onnx and onnx-int8 made from the hf export as `crosstune export` makes
    them (the same write_onnx), with a manifest so crosstune loads them by format."""
    from crosstune.train.artifact.manifest import write_manifest
    from crosstune.train.artifact.onnx import write_onnx

    out = {}
    for fmt in ("onnx", "onnx-int8"):
        folder = tmp / f"export-{fmt}"
        fields, seconds = timed(lambda: write_onnx(Path(model_path), folder, fmt))
        write_manifest(folder, {"format": fmt, "activation": "identity", **fields})
        out[fmt] = (folder, seconds)
    return out


def st_onnx_backend() -> bool:
    """sentence-transformers' ONNX backend needs optimum-onnx, whose releases so far require transformers < 4.58."""
    try:
        import optimum.onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


PEER_NOTE = ("" if st_onnx_backend() else " (sentence-transformers' ONNX backend is what runs these: its "
             "dependency optimum-onnx requires transformers < 4.58 in every release so far, so it cannot be installed "
             "here)")
PEER_NAME = ('sentence-transformers CrossEncoder(backend="onnx")' if st_onnx_backend() else
             "plain onnxruntime (tokenizer + InferenceSession, batches of 32 in input order)")


def onnx_peer(folder: Path):
    """sentence-transformers' ONNX backend on the folder where it can be installed; else what that backend runs
    underneath (optimum's ORTModel: the HF tokenizer and an InferenceSession), with its predict() defaults."""
    if st_onnx_backend():
        from sentence_transformers import CrossEncoder

        st = CrossEncoder(str(folder), backend="onnx", device="cpu", max_length=256)
        return lambda ps: st.predict(ps, show_progress_bar=False)
    import numpy as np
    import onnxruntime as ort
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    session = ort.InferenceSession(str(folder / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def score(ps):
        out = []
        for start in range(0, len(ps), 32):
            batch = ps[start:start + 32]
            feats = tokenizer([q for q, _ in batch], [d for _, d in batch], truncation=True, max_length=256,
                              padding=True, return_tensors="np")
            out.append(session.run(None, {n: feats[n] for n in names})[0].reshape(-1))
        return np.concatenate(out)
    return score


def bench_formats(model_path: str, corpus, queries, qrels, index, quick: bool, tmp: Path) -> tuple[str, dict]:
    """Row 5: the export formats against torch, and sentence-transformers' own ONNX backend on the same graphs."""
    from crosstune.train.artifact.onnx import quantization_target
    from crosstune.train.evaluation.metrics import aggregate, per_query
    from crosstune.train.ranking.candidates import score_candidates, with_tail
    from crosstune.train.ranking.scorers import load_scorer

    exports = onnx_exports(model_path, tmp)
    sample, run = rerank_candidates(corpus, queries, qrels, index, 10 if quick else 50)
    pairs = {q: [(queries[q], doc_text(corpus[d])) for d in ranked(run[q])] for q in sample}
    scorers = {"crosstune torch fp32": load_scorer(model_path, 256, precision="no", device="cpu"),
               "crosstune torch bf16": load_scorer(model_path, 256, precision="bf16", device="cpu"),
               "crosstune onnx": load_scorer(str(exports["onnx"][0]), 256),
               "crosstune onnx-int8": load_scorer(str(exports["onnx-int8"][0]), 256)}
    systems = {name: scorer.score for name, scorer in scorers.items()}
    for fmt in ("onnx", "onnx-int8"):  # the peer: the same graph behind sentence-transformers' defaults (batch 32)
        systems[f"{PEER_NAME}, {fmt} export"] = onnx_peer(exports[fmt][0])
    results = time_systems(systems, pairs, sample, run, qrels)
    fp32 = results["crosstune torch fp32"]
    # quality on every dev query (a sample with --quick): fp32 against int8, the cross-encoder alone
    all_q = sorted(qrels) if not quick else random.Random(3).sample(sorted(qrels), 30)
    deep = index.search({q: queries[q] for q in all_q}, 100)
    ndcg = {}
    for name in ("crosstune torch fp32", "crosstune onnx-int8"):
        ce = score_candidates(deep, queries, corpus, scorers[name], 100)
        ndcg[name] = aggregate(per_query({q: qrels[q] for q in all_q}, with_tail(ce, deep), ["nDCG@10"]))["nDCG@10"]
    int8 = results["crosstune onnx-int8"]
    x, kept = int8["docs_s"] / fp32["docs_s"], ndcg["crosstune onnx-int8"] / ndcg["crosstune torch fp32"]
    rows = "\n".join(f"| {n} | {r['p50'] * 1000:.0f} | {r['p95'] * 1000:.0f} | {r['docs_s']:.0f} | {r['ndcg']:.4f} | "
                     f"{r['docs_s'] / fp32['docs_s']:.2f}x |" for n, r in results.items())
    verdict = lambda ok: "met" if ok else "**not met**"  # noqa: E731
    table = f"""### 5. Export formats: 100 BM25 candidates per query, {len(sample)} dev queries, one query at a time

Model: `{model_path}` ({chosen_on(model_path)}), exported with `write_onnx` as `crosstune export --format` does:
onnx = torch.onnx + onnxruntime's transformer fusions ({exports['onnx'][1]:.0f} s to export), onnx-int8 = that graph
in dynamic int8 with optimum's `{quantization_target()}` preset, picked from this CPU's flags ({exports['onnx-int8'][1]:.0f} s).
crosstune: length-sorted batches of 64, max length 256, onnxruntime with one intra-op thread per core.
Peer on the same two folders: {PEER_NAME}{PEER_NOTE}.

| scorer | p50 ms/query | p95 ms/query | docs/s | nDCG@10 (sample) | docs/s vs torch fp32 |
|---|---|---|---|---|---|
{rows}

nDCG@10 of the cross-encoder alone on {'all ' if not quick else ''}{len(all_q)} dev queries: torch fp32
{ndcg['crosstune torch fp32']:.4f}, onnx-int8 {ndcg['crosstune onnx-int8']:.4f} ({kept:.2%} kept).
Target (issue 9): onnx-int8 >= 2x torch fp32 docs/s ({x:.2f}x: {verdict(x >= 2)}), keeping >= 99% of the fp32
nDCG@10 on all 293 dev queries ({kept:.2%}: {"not judged on a --quick sample" if quick else verdict(kept >= 0.99)}).
"""
    return table, {"formats_int8_x_fp32": round(x, 2), "formats_int8_ndcg_kept": round(kept, 4),
                   "formats_onnx_x_fp32": round(results["crosstune onnx"]["docs_s"] / fp32["docs_s"], 2),
                   "formats_int8_docs_s": round(int8["docs_s"])}


def chosen_on(model_path: str) -> str:
    """Which split chose the model, from its manifest: the dev nDCG@10 columns are out-of-sample only if not dev."""
    from crosstune.train.artifact.manifest import read_manifest

    split = (read_manifest(model_path).get("selection") or {}).get("split")
    if split is None:
        return "no selection recorded"
    return f"checkpoint chosen on split `{split}`; the dev figures here are " + (
        "in-sample" if split == "dev" else "out-of-sample")


SENTENCE = re.compile(r"(?<=[.;:!?])\s+")


def grow_corpus(corpus: dict, size: int, seed: int = 0) -> dict:
    """The shared corpus plus passages made by recombining sentences of one document (said in the table)."""
    rng = random.Random(seed)
    by_title: dict[str, list[str]] = {}
    for doc in corpus.values():
        by_title.setdefault(doc.title, []).extend(s for s in SENTENCE.split(doc.text) if len(s) > 20)
    titles = [t for t, s in by_title.items() if len(s) >= 3]
    big = dict(corpus)
    for i in range(size - len(corpus)):
        title = rng.choice(titles)
        big[f"synthetic#{i}"] = Doc(title, " ".join(rng.sample(by_title[title], rng.randint(3, 6))))
    return big


def bench_search(model_path: str, corpus, queries, qrels, size: int, quick: bool) -> tuple[str, dict]:
    from crosstune.train.evaluation.metrics import aggregate, per_query
    from crosstune.train.ranking.candidates import score_candidates, with_tail
    from crosstune.train.ranking.scorers import CrossEncoderScorer

    big = grow_corpus(corpus, size)
    build_s, build_mb = build_in_subprocess("bm25s", size)
    index = BM25Index.build(big, BM25Config(), progress=False)
    scorer = CrossEncoderScorer.from_pretrained(model_path, 256, "cpu")
    # quality over depth: score the top-100 once, then rerank only the top-k of it
    curve_q = random.Random(2).sample(sorted(qrels), 30 if quick else len(qrels))
    run = index.search({q: queries[q] for q in curve_q}, 100)
    ce = score_candidates(run, queries, big, scorer, 100)
    depths, ndcg = [10, 20, 50, 100], {}
    for k in depths:
        head = {q: {d: ce[q][d] for d in ranked(run[q])[:k]} for q in curve_q}
        ndcg[k] = aggregate(per_query({q: qrels[q] for q in curve_q}, with_tail(head, run), ["nDCG@10"]))["nDCG@10"]
    bm25_ndcg = aggregate(per_query({q: qrels[q] for q in curve_q}, run, ["nDCG@10"]))["nDCG@10"]
    # latency one query at a time: BM25 alone, then BM25 + rerank at each depth
    lat_q = curve_q[:10 if quick else 50]
    bm25_lat = [timed(lambda: index.search({q: queries[q]}, 100))[1] for q in lat_q]
    e2e = {}
    for k in depths:
        times = []
        for q in lat_q:
            def one():
                r = index.search({q: queries[q]}, k)
                return score_candidates(r, queries, big, scorer, k)
            times.append(timed(one)[1])
        e2e[k] = (pct(times, 50), pct(times, 95))
    # the shallowest depth within 0.005 nDCG@10 of the best is what the curve says is needed
    best = max(ndcg.values())
    need = min(k for k in depths if ndcg[k] >= best - 0.005)
    rows = "\n".join(f"| {k} | {ndcg[k]:.3f} | {e2e[k][0]:.2f} | {e2e[k][1]:.2f} |" for k in depths)
    table = f"""### 4. Legal search over {len(big):,} passages: BM25 top-k + rerank on 2 CPU cores

Corpus: the {len(corpus):,} shared legalbench-rag passages plus {len(big) - len(corpus):,} made by recombining 3-6
sentences of one source document (same title), so the dev qrels still hold, but the recombined passages
copy the gold sentences without being judged: nDCG@10 here ranks depths, it is not comparable to the 65k corpus.
Model: `{model_path}` ({chosen_on(model_path)}), the cross-encoder alone. Index build {build_s:.0f} s,
{build_mb:,.0f} MiB of peak memory added by indexing (RSS); BM25 top-100 alone p50 {pct(bm25_lat, 50) * 1000:.0f} ms, p95
{pct(bm25_lat, 95) * 1000:.0f} ms. Quality on {len(curve_q)} dev queries (BM25 alone nDCG@10 {bm25_ndcg:.3f});
latency per query on {len(lat_q)} of them, BM25 + rerank end to end, scorer defaults ({AUTO} weights here,
length-sorted batches of 32, max length 256, torch threads = cores).

| rerank depth | nDCG@10 | p50 s | p95 s |
|---|---|---|---|
{rows}

The curve says depth {need} is needed (within 0.005 of the best nDCG@10): p95 **{e2e[need][1]:.2f} s** there.
Knobs: `eval.depth` (linear in time), `model.max_length` (passages here average ~180 tokens), `eval.batch_size`.
"""
    return table, {"search_docs": len(big), "search_depth": need, "search_p95_s": round(e2e[need][1], 3),
                   "search_p95_s_depth100": round(e2e[100][1], 3), "bm25_p95_s": round(pct(bm25_lat, 95), 4)}


def default_model(tmp: Path) -> str:
    """A trained legal export if there is one; else the base with a fresh head (speed is the same)."""
    for candidate in (ROOT / "checkpoints" / "legal" / "export", ROOT / "checkpoints" / "demo" / "export"):
        if (candidate / "config.json").exists():
            return str(candidate)
    from crosstune.train.artifact.model import DEFAULT_BASE, load_model, load_tokenizer

    out = tmp / "fresh-head"
    load_model(DEFAULT_BASE).save_pretrained(out)
    load_tokenizer(DEFAULT_BASE, 256).save_pretrained(out)
    return str(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a small version of every row (~5 min)")
    ap.add_argument("--model", default=None,
                    help="hf export for rows 3-5 (default: checkpoints/legal/export); row 5 makes its ONNX exports")
    ap.add_argument("--only", default="mining,train,rerank,search,formats", help="comma-separated rows to run")
    for hidden in ("--worker", "--precision", "--mined", "--tmp", "--steps", "--backend", "--size"):  # subprocess jobs
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    args = ap.parse_args()
    global WARMUP, STEPS
    if args.worker == "index":
        return index_worker(args.backend, int(args.size))
    if args.worker:
        from benchmarks.throughput import Run, crosstune_pairs_per_s, st_pairs_per_s

        warmup, steps = map(int, args.steps.split(","))
        fn = crosstune_pairs_per_s if args.worker == "crosstune" else st_pairs_per_s
        print(fn(Run(Path(args.mined), Path(args.tmp), precision=args.precision, warmup=warmup, steps=steps)))
        return
    if args.quick:
        WARMUP, STEPS = 2, 8
    import transformers

    transformers.logging.set_verbosity_error()
    only = set(args.only.split(","))
    cfg = DataConfig(path=str(LEGAL))
    corpus = load_corpus(cfg)
    train_q, _ = load_split(cfg, "train", corpus)
    dev_q, dev_qrels = load_split(cfg, "dev", corpus)
    sections, figures = [], {}
    head = (f"## Speed (`python benchmarks/speed.py{' --quick' if args.quick else ''}`)\n\n"
            "Each row names the machine it ran on; both sides of a row ran there in the same run, one after the "
            "other.\n\n")
    ran_on = f"Ran on: {machine()}, {time.strftime('%Y-%m-%d')}.\n"

    kept = subsections(read_section("speed"))  # rows not re-run this time stay as they were measured

    def done(section):  # write what is measured so far: a crash later loses nothing
        section = (section[0].rstrip("\n") + "\n\n" + ran_on, section[1])
        sections.append(section)
        figures.update(section[1])
        rows = {**kept, **subsections("\n".join(t for t, _ in sections))}
        write_section("speed", head + "\n".join(rows[k] for k in sorted(rows, key=int)))
        print(json.dumps(section[1]), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model or default_model(tmp)
        if "mining" in only:
            done(bench_mining(corpus, train_q, args.quick))
        if "train" in only:
            from crosstune.train.config import load_config
            from crosstune.train.recipes.mine import mine_command

            mine_command(load_config(ROOT / "configs" / "legal.yaml", [f"run.root={tmp}", f"data.path={LEGAL}"]))
            done(bench_training(tmp / "legal" / "mined" / "dataset", tmp))
        index = BM25Index.build(corpus, BM25Config(), progress=False)
        if "rerank" in only:
            done(bench_rerank(model, corpus, dev_q, dev_qrels, index, args.quick))
        if "search" in only:
            done(bench_search(model, corpus, dev_q, dev_qrels, 100_000 if args.quick else 500_000, args.quick))
        if "formats" in only:
            done(bench_formats(model, corpus, dev_q, dev_qrels, index, args.quick, tmp))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
