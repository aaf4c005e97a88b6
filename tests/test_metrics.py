"""train/metrics.py against values worked out by hand (trec_eval semantics)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from crosstune.data.types import ranked
from crosstune.train.evaluation.metrics import (
    aggregate,
    compare,
    format_table,
    measure_names,
    paired_p,
    per_query,
    strict_run,
    write_trec,
)

L2 = math.log2

QRELS = {
    "q1": {"d1": 1, "d2": 0, "d3": 1},  # two relevant, one judged non-relevant
    "q2": {"d4": 2, "d5": 1},           # graded
    "q3": {"d6": 1},                    # judged, but missing from the run -> 0 everywhere
    "q4": {"d7": 0},                    # nothing relevant: trec_eval leaves it out
    "q5": {"r": 1},                     # the only relevant doc sits at rank 11
}
RUN = {
    # ranking d2 (0), d1 (1), dX (unjudged = 0), d3 (1)
    "q1": {"d2": 3.0, "d1": 2.0, "dX": 1.0, "d3": 0.5},
    # ranking d5 (1), d4 (2)
    "q2": {"d5": 2.0, "d4": 1.0},
    "q4": {"d7": 1.0},
    # ten unjudged docs, then r
    "q5": {**{f"n{i}": 20.0 - i for i in range(10)}, "r": 1.0},
    "q9": {"d1": 1.0},  # not judged at all: ignored
}

# q1: DCG@10 = 1/log2(3) + 1/log2(5); ideal = 1 + 1/log2(3)
Q1_NDCG = (1 / L2(3) + 1 / L2(5)) / (1 + 1 / L2(3))  # 0.650921
# q2 (trec_eval gain = the grade): DCG = 1/log2(2) + 2/log2(3); ideal = 2/log2(2) + 1/log2(3)
Q2_NDCG = (1 + 2 / L2(3)) / (2 + 1 / L2(3))  # 0.859719
EXPECTED = {
    "nDCG@10": {"q1": Q1_NDCG, "q2": Q2_NDCG, "q3": 0.0, "q5": 0.0},
    # first relevant at rank 2 / rank 1 / none / rank 11 (past the cut)
    "MRR@10": {"q1": 0.5, "q2": 1.0, "q3": 0.0, "q5": 0.0},
    # q1: nothing relevant at rank 1; q2: 1 of 2
    "Recall@1": {"q1": 0.0, "q2": 0.5, "q3": 0.0, "q5": 0.0},
    # q1: d1 at rank 2 -> 1 of 2
    "Recall@2": {"q1": 0.5, "q2": 1.0, "q3": 0.0, "q5": 0.0},
    "Recall@10": {"q1": 1.0, "q2": 1.0, "q3": 0.0, "q5": 0.0},
    # q1: precision at the relevant ranks 2 and 4 = 1/2, 2/4 -> AP 0.5; q2: 1, 1 -> 1; q5: 1/11
    "MAP": {"q1": 0.5, "q2": 1.0, "q3": 0.0, "q5": 1 / 11},
}


def test_measure_names():
    assert measure_names([10, 100]) == ["nDCG@10", "MRR@10", "Recall@10", "Recall@100", "MAP"]


def test_per_query_matches_hand_computed_values():
    got = per_query(QRELS, RUN, measure_names([1, 2, 10]))
    assert set(got) == set(EXPECTED)
    for name, expected in EXPECTED.items():
        assert set(got[name]) == {"q1", "q2", "q3", "q5"}, name  # q4 (no relevant doc) and q9 (unjudged) are out
        for q, v in expected.items():
            assert got[name][q] == pytest.approx(v, abs=1e-6), (name, q)
    assert got["nDCG@10"]["q1"] == pytest.approx(0.650921, abs=1e-6)
    assert got["nDCG@10"]["q2"] == pytest.approx(0.859719, abs=1e-6)


def test_aggregate_averages_over_judged_queries_including_missing_ones():
    agg = aggregate(per_query(QRELS, RUN, measure_names([10])))
    # four judged queries with something relevant; q3 (not in the run) counts as 0
    assert agg["nDCG@10"] == pytest.approx((Q1_NDCG + Q2_NDCG) / 4, abs=1e-6)
    assert agg["MRR@10"] == pytest.approx(1.5 / 4)
    assert agg["Recall@10"] == pytest.approx(2 / 4)
    assert agg["MAP"] == pytest.approx((0.5 + 1 + 1 / 11) / 4)
    assert aggregate({"nDCG@10": {}}) == {"nDCG@10": 0.0}


def test_empty_run_row_and_empty_run_score_zero():
    got = per_query({"q1": {"d1": 1}}, {"q1": {}}, ["nDCG@10", "MAP"])
    assert got == {"nDCG@10": {"q1": 0.0}, "MAP": {"q1": 0.0}}
    got = per_query({"q1": {"d1": 1}, "q2": {"d2": 1}}, {}, ["MRR@10"])
    assert got == {"MRR@10": {"q1": 0.0, "q2": 0.0}}


def test_perfect_ranking_scores_one():
    qrels = {"q": {"a": 3, "b": 2, "c": 1, "z": 0}}
    run = {"q": {"a": 4.0, "b": 3.0, "c": 2.0, "z": 1.0}}
    got = aggregate(per_query(qrels, run, measure_names([3])))
    assert got == pytest.approx({"nDCG@10": 1.0, "MRR@10": 1.0, "Recall@3": 1.0, "MAP": 1.0})
    # swapping the two best (grades 3 and 2) costs nDCG but not MRR, Recall or MAP (all binary)
    swapped = aggregate(per_query(qrels, {"q": {"a": 3.0, "b": 4.0, "c": 2.0, "z": 1.0}}, measure_names([3])))
    ideal = 3 + 2 / L2(3) + 1 / L2(4)
    assert swapped["nDCG@10"] == pytest.approx((2 + 3 / L2(3) + 1 / L2(4)) / ideal, abs=1e-6)
    assert swapped["MRR@10"] == swapped["Recall@3"] == swapped["MAP"] == pytest.approx(1.0)


def test_strict_run_scores_ranked_order_without_ties():
    assert strict_run({"q": {"b": 0.0, "a": 0.0, "c": 1.0}, "e": {}}) == {"q": {"c": 3.0, "a": 2.0, "b": 1.0}, "e": {}}


@pytest.mark.parametrize("relevant, ndcg, mrr", [("a", 1.0, 1.0), ("c", 1 / L2(4), 1 / 3)])
def test_all_tied_scores_rank_by_doc_id_for_every_metric(relevant, ndcg, mrr):
    # the example: a flat list (min-max of equal scores is all zeros) ranks a, b, c for every metric
    qrels = {"q": {d: int(d == relevant) for d in "abc"}}
    got = per_query(qrels, {"q": {"a": 0.0, "b": 0.0, "c": 0.0}}, measure_names([1]))
    assert got["nDCG@10"]["q"] == pytest.approx(ndcg)
    assert got["MRR@10"]["q"] == pytest.approx(mrr)
    assert got["MAP"]["q"] == pytest.approx(mrr)  # one relevant doc: AP is its reciprocal rank
    assert got["Recall@1"]["q"] == float(relevant == "a")


def tie_free(run):
    """The same run scored 0, -1, -2, .. in `ranked` order: what every metric should see."""
    return {q: {d: -float(i) for i, d in enumerate(ranked(docs))} for q, docs in run.items()}


def test_tied_run_scores_exactly_as_its_ranked_order():
    tied = {
        "q1": {"d2": 1.0, "d1": 1.0, "d3": 1.0, "dX": 0.5},    # a three-way tie on top (bf16 logits come in steps)
        "q2": {"d5": 0.0, "d4": 0.0},                          # graded, flat
        "q5": {**{f"n{i}": 2.0 for i in range(10)}, "r": 2.0},  # r is 11th by id
    }
    names = measure_names([1, 2, 10])
    assert per_query(QRELS, tied, names) == per_query(QRELS, tie_free(tied), names)


@pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")
def test_paired_p():
    a = {f"q{i}": 0.1 * (i % 5) for i in range(20)}
    assert paired_p(a, dict(a)) == 1.0
    rng = np.random.default_rng(0)
    worse = {q: float(v) for q, v in zip(a, rng.uniform(0.0, 0.4, 20))}
    better = {q: min(1.0, worse[q] + 0.3 + float(rng.uniform(0, 0.2))) for q in a}
    p = paired_p(worse, better)
    assert 0 <= p < 0.05
    assert paired_p(better, worse) == pytest.approx(p)  # two-sided
    # only shared queries count; fewer than two means no test
    assert paired_p({"q1": 0.0}, {"q1": 1.0}) == 1.0
    assert paired_p({"q1": 0.0, "q2": 0.5}, {"q3": 1.0, "q4": 1.0}) == 1.0
    # the same improvement on every query: zero variance of the differences, yet clearly significant
    assert paired_p({"q1": 0.25, "q2": 0.5, "q3": 0.0}, {"q1": 0.5, "q2": 0.75, "q3": 0.25}) < 0.05
    assert paired_p({"q1": 0.1, "q2": 0.2, "q3": 0.3}, {"q1": 0.2, "q2": 0.3, "q3": 0.4}) < 0.05


def test_compare_and_table():
    better_run = {"q1": {"d1": 2.0, "d3": 1.9, "d2": 1.0}, "q2": {"d4": 2.0, "d5": 1.0}, "q3": {"d6": 1.0},
                  "q5": {"r": 30.0}}
    report = compare(QRELS, {"BM25": RUN, "reranked": better_run}, [10])
    assert report["queries"] == 4 and report["baseline"] == "BM25"
    assert list(report["metrics"]) == ["nDCG@10", "MRR@10", "Recall@10", "MAP"]
    assert report["metrics"]["MRR@10"] == pytest.approx({"BM25": 1.5 / 4, "reranked": 1.0})
    assert report["metrics"]["MAP"] == pytest.approx({"BM25": (0.5 + 1 + 1 / 11) / 4, "reranked": 1.0})
    assert set(report["p_values"]) == {"reranked"}
    assert all(0.0 <= p <= 1.0 for p in report["p_values"]["reranked"].values())
    # MRR per query: 0.5, 1, 0, 0 -> 1, 1, 1, 1: differences 0.5, 0, 1, 1
    diffs = np.array([0.5, 0.0, 1.0, 1.0])
    t = diffs.mean() / (diffs.std(ddof=1) / 2)
    from scipy import stats
    assert report["p_values"]["reranked"]["MRR@10"] == pytest.approx(2 * stats.t.sf(t, df=3))
    table = format_table(report).splitlines()
    assert table[0] == "| metric | BM25 | reranked (delta, p) |"
    assert table[1] == "|---|---|---|"
    assert table[3].startswith("| MRR@10 | 0.375 | 1.000 (+0.625, p=")
    assert len(table) == 2 + 4


def test_compare_reports_per_query_values_that_average_to_the_metrics():
    tied = {"q1": {"d1": 0.0, "d2": 0.0, "d3": 0.0}, "q2": {"d4": 1.0, "d5": 1.0}}
    report = compare(QRELS, {"BM25": RUN, "tied": tied}, [10])
    pq = report["per_query"]
    assert set(pq) == {"BM25", "tied"}
    for system, metrics in pq.items():
        assert list(metrics) == list(report["metrics"])
        for m, values in metrics.items():
            assert set(values) == {"q1", "q2", "q3", "q5"}, (system, m)
            assert np.mean(list(values.values())) == pytest.approx(report["metrics"][m][system], abs=1e-6)
    assert pq["BM25"]["nDCG@10"]["q1"] == round(Q1_NDCG, 6)  # rounded: report.json grows with every query
    assert pq["BM25"]["MAP"] == pytest.approx(EXPECTED["MAP"], abs=1e-6)
    # ties ranked by id: q1 d1 (rel), d2, d3 (rel); q2 d4 (grade 2) before d5
    assert pq["tied"]["MRR@10"] == {"q1": 1.0, "q2": 1.0, "q3": 0.0, "q5": 0.0}
    assert pq["tied"]["nDCG@10"]["q2"] == 1.0


def test_write_trec_format(tmp_path):
    path = tmp_path / "run.trec"
    write_trec({"q2": {"a": 0.5, "b": 1.25}, "q1": {"z": 1.0, "y": 1.0, "x": -2.0}}, path, "bm25")
    # scores encode the rank: trec_eval sorts by score and would break the y/z tie its own way
    assert path.read_text() == (
        "q1 Q0 y 1 3.000000 bm25\n"   # tie broken by id
        "q1 Q0 z 2 2.000000 bm25\n"
        "q1 Q0 x 3 1.000000 bm25\n"
        "q2 Q0 b 1 2.000000 bm25\n"
        "q2 Q0 a 2 1.000000 bm25\n"
    )


def test_write_trec_reads_back_with_ir_measures(tmp_path):
    import ir_measures

    tied = {**RUN, "q1": {"d3": 1.0, "d2": 1.0, "d1": 1.0, "dX": 1.0}}
    for run in (RUN, tied):
        path = tmp_path / "run.trec"
        write_trec(run, path, "sys")
        back = {}
        for r in ir_measures.read_trec_run(str(path)):
            back.setdefault(r.query_id, {})[r.doc_id] = r.score
        assert {q: ranked(d) for q, d in back.items()} == {q: ranked(d) for q, d in run.items()}
        # a reviewer's trec_eval on the file, with its own tie-breaking, gives the report's numbers
        ours = per_query(QRELS, tie_free(run), ["nDCG@10", "MRR@10", "MAP"])
        theirs = ir_measures.iter_calc([ir_measures.nDCG @ 10, ir_measures.RR @ 10, ir_measures.AP], QRELS,
                                       ir_measures.read_trec_run(str(path)))
        values = {(str(m.measure), m.query_id): m.value for m in theirs if m.query_id in {"q1", "q2", "q5"}}
        assert len(values) == 3 * 3
        for (measure, q), v in values.items():
            assert v == pytest.approx(ours[{"RR@10": "MRR@10", "AP": "MAP"}.get(measure, measure)][q]), (measure, q)
