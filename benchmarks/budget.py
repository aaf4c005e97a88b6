"""The seed's exercise: legal search over 500,000 passages, the most accurate ranking that fits a latency budget.

    python benchmarks/budget.py --teacher checkpoints/legal/export \\
        --stage checkpoints/legal-student3/export-onnx-int8     # ~45 min on 2 AVX2 cores; writes BENCHMARKS.md

Corpus: speed.py row 4's (the 65,342 legalbench-rag passages plus recombined ones up to --size). The holdout split
(configs/legal.yaml's 60 held-out training documents) chooses: every scorer scores its BM25 top-100 once, each is
timed here one query at a time at each depth, and evaluation/budget.py picks, for each budget, the most accurate
configuration (depth, cascade of --stage models and the bi-encoder, fusion weights) whose estimated p95 fits. Dev
reports, out-of-sample, with the holdout's weights: a sample of --report-queries dev queries (all 293 cost ~36 min
of teacher scoring a pass on this class of machine). Side by side, in the same run: today's fixed depth 100 (the
teacher fused with BM25 and the bi-encoder, weights tuned on the holdout at depth 100) and sentence-transformers'
CrossEncoder.predict at depth 100 (the teacher alone). Latency: end to end (BM25 over the whole corpus, every
stage, the fusion), --latency-queries dev queries one at a time; the bi-encoder's passage embeddings computed
beforehand (as an index-time pass would).
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import LEGAL, ROOT, auto_precision_name, machine, pct, write_section  # noqa: E402
from benchmarks.speed import grow_corpus  # noqa: E402
from crosstune.data.types import DataError, doc_text, ranked  # noqa: E402

BUDGETS = (2000, 1000, 500)
DEPTHS = [10, 20, 30, 50, 100]


def load(size: int):
    from crosstune.data.bm25 import BM25Index
    from crosstune.data.judgments import load_judgments
    from crosstune.train.config import load_config
    from crosstune.train.ranking.passages import load_passages

    cfg = load_config(ROOT / "configs" / "legal.yaml", [f"data.path={LEGAL}"])
    corpus = load_passages(cfg)
    splits = {s: load_judgments(cfg.data, s, corpus) for s in ("holdout", "dev")}
    big = grow_corpus(corpus, size)
    t0 = time.perf_counter()
    index = BM25Index.build(big, cfg.bm25, cfg.data.use_title, progress=False)
    return cfg, big, splits, index, time.perf_counter() - t0


def split_inputs(name, queries, qrels, index, corpus, scorers, log):
    """Inputs of evaluation/budget.py for one split: each scorer's scores of BM25's top-100, costs filled later."""
    from crosstune.train.evaluation.budget import Inputs
    from crosstune.train.ranking.cascade import Stage, stage_scores

    bm25 = index.search(queries, max(DEPTHS))
    scores = {}
    for s, scorer in scorers.items():
        t0 = time.perf_counter()
        scores[s] = stage_scores(Stage(s, scorer, max(DEPTHS), None), bm25, queries, corpus, True)
        log(f"budget | {name}: {s} scored {len(bm25)} queries x {max(DEPTHS)} in {time.perf_counter() - t0:.0f} s")
    from crosstune.train.artifact.model import DEFAULT_BASE

    return Inputs(qrels, bm25, scores, {}, 0.0, DEFAULT_BASE)


def per_query_ndcg(qrels, run) -> dict[str, float]:
    from crosstune.train.evaluation.metrics import per_query

    return per_query(qrels, run, ["nDCG@10"])["nDCG@10"]


def end_to_end(pipe, queries, qids) -> tuple[float, float]:
    from crosstune.train.ranking.costs import milliseconds

    pipe.search(queries[qids[0]])
    times = [milliseconds(lambda q=q: pipe.search(queries[q])) for q in qids]
    return pct(times, 50), pct(times, 95)


def peer_predict(teacher: str, index, corpus, queries, qids, ours) -> tuple[float, float, float]:
    """sentence-transformers' CrossEncoder.predict on BM25's top-100 (defaults: batches of 32, input order), end to
    end; and the largest |predict - our logit| over those pairs (the export's Identity activation: the same logits)."""
    from sentence_transformers import CrossEncoder

    from crosstune.train.ranking.costs import milliseconds

    st = CrossEncoder(teacher, device="cpu", max_length=256)
    times, diff = [], 0.0
    for q in [qids[0], *qids]:
        out = {}

        def one(q=q):
            run = index.search({q: queries[q]}, 100)
            docs = ranked(run[q])
            out["scores"] = dict(zip(docs, st.predict([(queries[q], doc_text(corpus[d], True)) for d in docs],
                                                      show_progress_bar=False)))
        times.append(milliseconds(one))
        diff = max(diff, max(abs(float(v) - ours[q][d]) for d, v in out["scores"].items() if d in ours[q]))
    return pct(times[1:], 50), pct(times[1:], 95), diff


def kept(teacher: dict, stage: dict, depth: int, k: int = 10) -> float:
    """Of the teacher's top-k (over BM25's top-100), the share inside a stage's own top-`depth`: what a cascade's
    earlier stage must keep for the teacher to find it."""
    shares = [len(set(ranked(teacher[q])[:k]) & set(ranked(stage[q])[:depth])) / min(k, len(teacher[q]))
              for q in teacher if teacher[q]]
    return sum(shares) / len(shares)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default=str(ROOT / "checkpoints" / "legal" / "export"))
    ap.add_argument("--stage", action="append", default=[], help="an earlier-stage export (repeat for more)")
    ap.add_argument("--size", type=int, default=500_000)
    ap.add_argument("--report-queries", type=int, default=60)
    ap.add_argument("--latency-queries", type=int, default=20)
    args = ap.parse_args()
    log = lambda m: print(m, flush=True)  # noqa: E731

    from scipy import stats

    from crosstune.train.artifact.machine import describe_machine
    from crosstune.train.artifact.model import DEFAULT_BASE
    from crosstune.train.evaluation.budget import (
        GRID,
        MODEL,
        Chain,
        Point,
        choose,
        configurations,
        frontier,
        ranked_with,
        replay,
    )
    from crosstune.train.evaluation.metrics import aggregate
    from crosstune.train.ranking.biencoder import BiEncoderScorer
    from crosstune.train.ranking.cascade import BIENCODER
    from crosstune.train.ranking.costs import bm25_cost, scorer_costs
    from crosstune.train.ranking.fusion import Fusion
    from crosstune.train.ranking.scorers import load_scorer
    from crosstune.train.training.cascade_choice import pipeline_of

    cfg, corpus, splits, index, build_s = load(args.size)
    log(f"budget | {len(corpus):,} passages indexed in {build_s:.0f} s on {describe_machine()}")
    scorers = {MODEL: load_scorer(args.teacher, 256, 32, "auto")}
    for s in args.stage:
        scorers[s] = load_scorer(s, 256, 32, "auto")
    scorers[BIENCODER] = bi = BiEncoderScorer(DEFAULT_BASE)
    hq, hj = splits["holdout"]
    dq_all, dj_all = splits["dev"]
    dev_ids = random.Random(0).sample(sorted(dj_all.passages), min(args.report_queries, len(dj_all.passages)))
    dq, dqrels = {q: dq_all[q] for q in dev_ids}, {q: dj_all.passages[q] for q in dev_ids}
    hold = split_inputs("holdout", hq, hj.passages, index, corpus, scorers, log)
    dev = split_inputs("dev", dq, dqrels, index, corpus, scorers, log)
    # costs: measured on the choosing split's queries, one at a time
    timed = random.Random(1).sample(sorted(hold.bm25), min(args.latency_queries, len(hold.bm25)))
    for s, scorer in scorers.items():
        hold.costs[s] = scorer_costs(scorer, hold.bm25, hq, corpus, timed, DEPTHS, True)
        log(f"budget | {s} p95 ms by depth: {hold.costs[s]}")
    hold.bm25_ms = bm25_cost(index, hq, timed, max(DEPTHS))
    chains = configurations([*args.stage, BIENCODER], DEPTHS, hold.costs)
    today = replay(hold, Chain(((MODEL, 100),)), GRID)
    rows = [("today: the teacher at fixed depth 100, fused", None, today)]
    for budget in BUDGETS:
        try:
            rows.append((f"chosen for {budget} ms", budget, choose(hold, chains, budget)[0]))
        except DataError as e:
            rows.append((f"chosen for {budget} ms", budget, str(e)))
    points = choose(hold, chains, None)[1]
    lat_ids = dev_ids[:args.latency_queries]
    base = per_query_ndcg(dqrels, ranked_with(dev, today))
    table = []
    for name, budget, point in rows:
        if isinstance(point, str):
            table.append(f"| {name} | impossible: {point} | | | | | |")
            continue
        pq = per_query_ndcg(dqrels, ranked_with(dev, point))
        p50, p95 = end_to_end(pipeline_of(point, scorers, cfg, corpus, bi, index), dq, lat_ids)
        mean, ref = aggregate({"n": pq})["n"], aggregate({"n": base})["n"]
        p = stats.ttest_rel([pq[q] for q in base], [base[q] for q in base]).pvalue if point is not today else None
        table.append(f"| {name} | `{point.config.label}` | {point.ndcg:.3f} | **{mean:.3f}** | {mean / ref:.1%}"
                     f"{f' (p={p:.2g})' if p is not None and p == p else ''} | {point.p95_ms:.0f} | {p50:.0f} / {p95:.0f} |")
    alone = per_query_ndcg(dqrels, ranked_with(dev, Point(Chain(((MODEL, 100),)), (Fusion(depth=100),), 0.0, 0.0)))
    s50, s95, diff = peer_predict(args.teacher, index, corpus, dq, lat_ids, dev.scores[MODEL])
    table.append(f"| sentence-transformers `CrossEncoder.predict`, the teacher alone at depth 100 | `model@100`, no "
                 f"fusion | | {aggregate({'n': alone})['n']:.3f} | {aggregate({'n': alone})['n'] / aggregate({'n': base})['n']:.1%} "
                 f"| | {s50:.0f} / {s95:.0f} |")
    frontier_rows = [f"| `{p.config.label}` | {p.ndcg:.3f} | {p.p95_ms:.0f} |" for p in frontier(points)]
    recall_rows = "\n".join(f"| {s} | " + " | ".join(f"{kept(dev.scores[MODEL], dev.scores[s], d):.2f}" for d in DEPTHS)
                            + " |" for s in [*args.stage, BIENCODER])
    recall_rows += "\n| BM25 | " + " | ".join(f"{kept(dev.scores[MODEL], dev.bm25, d):.2f}" for d in DEPTHS) + " |"
    cost_rows = "\n".join(f"| {s} | " + " | ".join(f"{hold.costs[s][d]:.0f}" for d in DEPTHS) + " |" for s in scorers)
    text = f"""## The seed's exercise: {len(corpus):,} legal passages under a latency budget (`python benchmarks/budget.py`)

Ran on: {machine()}; {describe_machine()}; scorer precision auto ({auto_precision_name()} here). Corpus: speed.py row 4's
(the shared legalbench-rag passages plus recombined ones; the recombined passages copy gold sentences without being
judged, so nDCG@10 here ranks configurations and is not comparable to the 65K corpus). BM25 index built in
{build_s:.0f} s. Teacher `{Path(args.teacher).relative_to(ROOT) if Path(args.teacher).is_relative_to(ROOT) else args.teacher}`;
earlier stages: {', '.join(f'`{Path(s).name if not Path(s).is_relative_to(ROOT) else Path(s).relative_to(ROOT)}`' for s in args.stage) or 'none'}
and the zero-shot bi-encoder ({DEFAULT_BASE}).

Chosen on split `holdout` ({len(hold.bm25)} queries; its figures are in-sample), reported on {len(dev_ids)} dev
queries drawn at random (seed 0) with the holdout's weights (out-of-sample). p: paired t-test against today's fixed
depth 100 over the dev queries. Estimated p95: the sum of each part's p95, timed on {len(timed)} holdout queries one
at a time; measured: end to end over the {len(corpus):,} passages (BM25, every stage, fusion) on {len(lat_ids)} dev
queries one at a time.

| ranking | configuration (scorer@depth, cheapest first) | holdout nDCG@10 (chose) | dev nDCG@10 | of today's | est. p95 ms | measured p50 / p95 ms |
|---|---|---|---|---|---|---|
{chr(10).join(table)}

`CrossEncoder.predict` returns the teacher's logits (largest difference to crosstune's {diff:.2g}), so its dev
figure is the teacher alone at depth 100.

p95 ms a query by depth (holdout, one query at a time):

| scorer | {' | '.join(str(d) for d in DEPTHS)} |
|---|{'---|' * len(DEPTHS)}
{cost_rows}

What an earlier stage keeps: of the teacher's top-10 over BM25's top-100, the share inside each scorer's own top-d
(dev, unfused scores):

| scorer | {' | '.join(f'top-{d}' for d in DEPTHS)} |
|---|{'---|' * len(DEPTHS)}
{recall_rows}

BM25 top-100 alone: p95 {hold.bm25_ms:.0f} ms. The frontier on the holdout ({len(points)} configurations):

| configuration | holdout nDCG@10 | est. p95 ms |
|---|---|---|
{chr(10).join(frontier_rows)}
"""
    write_section("budget", text)
    print(text)


if __name__ == "__main__":
    main()
