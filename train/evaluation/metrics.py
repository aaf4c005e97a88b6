"""IR metrics with trec_eval semantics (ir-measures) and a paired significance test over queries.

Tie rule: every metric and every TREC run file sees one strict order per query, `data.types.ranked`'s (score
descending, ties broken by doc id ascending). Backends break ties their own way (pytrec_eval by doc id
descending), so they are only ever handed tie-free scores that encode that order (`strict_run`).
"""
from __future__ import annotations

import math

import ir_measures
import numpy as np
from scipy import stats

from crosstune.data.types import Qrels, Run, ranked

# our names -> ir-measures' (RR@10 is MRR@10, AP is MAP once averaged)
NAMES = {"nDCG@10": "nDCG@10", "MRR@10": "RR@10", "MAP": "AP"}


def measure_names(recall_at: list[int]) -> list[str]:
    return ["nDCG@10", "MRR@10", *[f"Recall@{k}" for k in recall_at], "MAP"]


def strict_run(run: Run) -> Run:
    """The same ranking with no ties: each query's docs scored n, n-1, .. 1 in `ranked` order (exact as floats)."""
    return {q: {d: float(len(docs) - i) for i, d in enumerate(ranked(docs))} for q, docs in run.items()}


def per_query(qrels: Qrels, run: Run, names: list[str]) -> dict[str, dict[str, float]]:
    """name -> query id -> value, for every judged query; a query the run misses scores 0."""
    parsed = {n: ir_measures.parse_measure(NAMES.get(n, n.replace("Recall@", "R@"))) for n in names}
    back = {str(m): n for n, m in parsed.items()}
    out = {n: {q: 0.0 for q in qrels} for n in names}
    # trec_eval only sees queries with a relevant document; keep those and the run's matching rows
    judged = {q: d for q, d in qrels.items() if any(r > 0 for r in d.values())}
    strict = strict_run({q: d for q, d in run.items() if q in judged and d})
    for m in ir_measures.iter_calc(list(parsed.values()), judged, strict):
        out[back[str(m.measure)]][m.query_id] = float(m.value)
    return {n: {q: v for q, v in vals.items() if q in judged} for n, vals in out.items()}


def aggregate(values: dict[str, dict[str, float]]) -> dict[str, float]:
    return {n: float(np.mean(list(v.values()))) if v else 0.0 for n, v in values.items()}


def paired_p(a: dict[str, float], b: dict[str, float]) -> float:
    """Two-sided paired t-test over the queries both systems answered (1.0 when they never differ)."""
    qs = sorted(set(a) & set(b))
    x, y = np.array([a[q] for q in qs]), np.array([b[q] for q in qs])
    if len(qs) < 2 or np.allclose(x, y):
        return 1.0
    p = stats.ttest_rel(x, y).pvalue
    return 1.0 if math.isnan(p) else float(p)


def compare(qrels: Qrels, runs: dict[str, Run], recall_at: list[int], baseline: str = "BM25") -> dict:
    """Every system's metrics side by side, with a paired test of each against the baseline, and the per-query
    values behind them (rounded to 6 decimals: report.json grows with queries x systems x metrics)."""
    names = measure_names(recall_at)
    pq = {system: per_query(qrels, run, names) for system, run in runs.items()}
    agg = {system: aggregate(values) for system, values in pq.items()}
    return {
        "queries": len(pq[baseline][names[0]]),
        "baseline": baseline,
        "metrics": {m: {system: agg[system][m] for system in runs} for m in names},
        "p_values": {system: {m: paired_p(pq[baseline][m], pq[system][m]) for m in names}
                     for system in runs if system != baseline},
        "per_query": {system: {m: {q: round(v, 6) for q, v in values[m].items()} for m in names}
                      for system, values in pq.items()},
    }


def headline(report: dict, system: str, metric: str = "nDCG@10") -> str:
    """Baseline first: 'nDCG@10  BM25 0.168 -> reranked 0.351 (+0.183)'."""
    base, value = report["metrics"][metric][report["baseline"]], report["metrics"][metric][system]
    return f"{metric}  {report['baseline']} {base:.3f} -> {system} {value:.3f} ({value - base:+.3f})"


def format_table(report: dict) -> str:
    """Markdown, baseline first; each other column gives its delta and paired t-test p against it."""
    base = report["baseline"]
    systems = [s for s in next(iter(report["metrics"].values())) if s != base]
    lines = [f"| metric | {base} | " + " | ".join(f"{s} (delta, p)" for s in systems) + " |",
             "|---|---|" + "---|" * len(systems)]
    for m, values in report["metrics"].items():
        cells = [f"{values[s]:.3f} ({values[s] - values[base]:+.3f}, p={report['p_values'][s][m]:.2g})" for s in systems]
        lines.append(f"| {m} | {values[base]:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_trec(run: Run, path, tag: str) -> None:
    """`ranked` order; the score column is `strict_run`'s, not the model's: trec_eval orders by score, not by the rank
    column, so tied (or equal once printed) scores would let it reorder the file and disagree with our metrics."""
    strict = strict_run(run)
    with open(path, "w") as f:
        for qid in sorted(strict):
            for rank, did in enumerate(ranked(strict[qid]), 1):
                f.write(f"{qid} Q0 {did} {rank} {strict[qid][did]:.6f} {tag}\n")
