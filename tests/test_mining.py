"""data/mining.py (hard negatives) and data/batching.py (groups, epoch order)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from crosstune.data.batching import EpochSampler, GroupDataset
from crosstune.data.bm25 import BM25Config, BM25Index
from crosstune.data.loading import DataConfig, load_corpus, load_split
from crosstune.data.mining import MiningConfig, mine, validate
from crosstune.data.types import DataError, Doc, doc_text

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"

# 200 passages; the BM25 "run" of q1 holds d000..d039 with scores 40, 39, ..., 1 (rank i = d{i:03d})
CORPUS = {f"d{i:03d}": Doc(title=f"T{i}", text=f"passage number {i}") for i in range(200)}
QUERIES = {"q1": "first query", "q2": "positive missing", "q3": "short run", "q4": "only judged zero"}


def make_run() -> dict:
    return {
        "q1": {f"d{i:03d}": float(40 - i) for i in range(40)},
        "q2": {f"d{i:03d}": float(40 - i) for i in range(40)},
        "q3": {f"d{i:03d}": float(10 - i) for i in range(6)},  # ranks 0..5 only
        "q4": {f"d{i:03d}": float(40 - i) for i in range(40)},
    }


def make_qrels() -> dict:
    return {
        # d005 and d012 are positives inside the negative range, d007 is judged non-relevant,
        # "ghost" is a positive that is not in the corpus
        "q1": {"d005": 1, "d012": 2, "d007": 0, "ghost": 1},
        "q2": {"ghost": 1, "d003": 0},  # no positive in the corpus
        "q3": {"d001": 1},  # ranks [3, 30) hold only d003..d005: 3 candidates < 5
        "q4": {"d002": 0},  # judged, but nothing relevant
    }


CFG = MiningConfig(depth=40, negative_range=[3, 30], num_negatives=5, seed=7)


def test_rows_and_drop_reasons():
    rows, stats = mine(CORPUS, QUERIES, make_qrels(), make_run(), CFG)
    assert [(r["query_id"], r["positive_id"]) for r in rows] == [("q1", "d005"), ("q1", "d012")]
    assert stats == {
        "queries": 4, "queries_used": 1, "rows": 2, "passages_excluded": 0,
        "queries_dropped": {"no_positive_in_corpus": 2, "fewer_candidates_than_negatives": 1},
        "depth": 40,
        # positives in the corpus: d005, d012 (q1, both retrieved), d001 (q3, retrieved) -> 3 / 3
        "positive_recall_at_depth": 1.0,
        "judged_negatives_used": 2,  # d007 (judged 0) in both of q1's rows
    }
    row = rows[0]
    assert row["query"] == "first query"
    assert row["positive"] == doc_text(CORPUS["d005"]) == "T5: passage number 5"
    assert row["negatives"] == [doc_text(CORPUS[d]) for d in row["negative_ids"]]
    assert row["negative_scores"] == [make_run()["q1"][d] for d in row["negative_ids"]]
    rows_untitled, _ = mine(CORPUS, QUERIES, make_qrels(), make_run(), CFG, use_title=False)
    assert rows_untitled[0]["positive"] == "passage number 5"
    assert rows_untitled[0]["negatives"][0] == CORPUS[rows_untitled[0]["negative_ids"][0]].text


def test_negatives_never_judged_positive_and_come_from_range():
    run = make_run()
    rank = {d: i for i, d in enumerate(run["q1"])}
    judged_pos = {"d005", "d012", "ghost"}
    all_negs = set()
    for seed in range(30):
        rows, _ = mine(CORPUS, QUERIES, make_qrels(), run, dataclasses.replace(CFG, seed=seed))
        for row in rows:
            negs = row["negative_ids"]
            assert len(negs) == 5 and len(set(negs)) == 5
            assert not judged_pos & set(negs)
            assert row["positive_id"] not in negs
            assert all(3 <= rank[d] < 30 for d in negs)
            assert [rank[d] for d in negs] == sorted(rank[d] for d in negs)  # kept in BM25 order
            all_negs |= set(negs)
    # over many seeds every allowed candidate shows up (incl. the judged-0 d007), and nothing else
    assert all_negs == {f"d{i:03d}" for i in range(3, 30)} - {"d005", "d012"}


def test_negatives_exclude_positives_with_many_unjudged_and_zero_judgments():
    # every other retrieved doc judged 0, positives scattered through the range
    run = make_run()
    qrels = {"q1": {d: 0 for d in list(run["q1"])[::2]}}
    qrels["q1"].update({"d004": 1, "d009": 3, "d021": 1, "d029": 1})
    rows, stats = mine(CORPUS, QUERIES, qrels, run, MiningConfig(depth=40, negative_range=[0, 30], num_negatives=20))
    assert stats["rows"] == 4
    zeros = {d for d, r in qrels["q1"].items() if r == 0}  # 19 judged non-relevant, d030..d038 past the range
    for row in rows:
        assert not {"d004", "d009", "d021", "d029"} & set(row["negative_ids"])
        # the judged non-relevant come first, from any rank; the one left to draw comes from ranks 0..29
        assert zeros <= set(row["negative_ids"]) and len(row["negative_ids"]) == 20
        assert set(row["negative_ids"]) - zeros <= {f"d{i:03d}" for i in range(30)} - {"d004", "d009", "d021", "d029"}


def test_exactly_enough_candidates_uses_them_all():
    run = make_run()
    qrels = {"q1": {"d001": 1}}
    rows, stats = mine(CORPUS, QUERIES, qrels, run, MiningConfig(depth=40, negative_range=[2, 7], num_negatives=5))
    assert rows[0]["negative_ids"] == ["d002", "d003", "d004", "d005", "d006"]
    rows, stats = mine(CORPUS, QUERIES, qrels, run, MiningConfig(depth=40, negative_range=[2, 7], num_negatives=6))
    assert rows == [] and stats["queries_dropped"] == {"fewer_candidates_than_negatives": 1}


def test_seeded_mining_is_reproducible_and_seed_matters():
    a, _ = mine(CORPUS, QUERIES, make_qrels(), make_run(), CFG)
    b, _ = mine(CORPUS, QUERIES, make_qrels(), make_run(), CFG)
    assert a == b
    c, _ = mine(CORPUS, QUERIES, make_qrels(), make_run(), dataclasses.replace(CFG, seed=8))
    assert [r["negative_ids"] for r in a] != [r["negative_ids"] for r in c]
    # a query's negatives do not depend on which other queries are mined
    only_q1 = {"q1": make_qrels()["q1"]}
    d, _ = mine(CORPUS, QUERIES, only_q1, make_run(), CFG)
    assert d == a


def test_random_negatives_are_marked_none_when_not_retrieved():
    cfg = dataclasses.replace(CFG, random_negatives=6)
    rows, _ = mine(CORPUS, QUERIES, make_qrels(), make_run(), cfg)
    retrieved = make_run()["q1"]
    saw_none = False
    for row in rows:
        negs, scores = row["negative_ids"], row["negative_scores"]
        assert len(negs) == len(scores) == 11 and len(set(negs)) == 11
        hard, easy = negs[:5], negs[5:]
        assert all(scores[i] == retrieved[d] for i, d in enumerate(hard))
        for d, s in zip(easy, scores[5:]):
            assert d in CORPUS and d not in {"d005", "d012"} and d not in hard
            assert (s is None) == (d not in retrieved)
            if d in retrieved:
                assert s == retrieved[d]
        saw_none |= any(s is None for s in scores[5:])
    # 160 of 200 passages were never retrieved: at least one random negative is one of them
    assert saw_none
    again, _ = mine(CORPUS, QUERIES, make_qrels(), make_run(), cfg)
    assert again == rows


def test_too_many_random_negatives_is_a_data_error():
    small = {f"d{i:03d}": CORPUS[f"d{i:03d}"] for i in range(12)}
    run = {"q1": {f"d{i:03d}": float(12 - i) for i in range(12)}}
    cfg = MiningConfig(depth=12, negative_range=[0, 12], num_negatives=5, random_negatives=7)
    with pytest.raises(DataError, match="mining.random_negatives=7"):
        mine(small, QUERIES, {"q1": {"d000": 1}}, run, cfg)


@pytest.mark.parametrize("changes, message", [
    (dict(negative_range=[10, 5]), r"mining.negative_range=\[10, 5\]"),
    (dict(negative_range=[5, 5]), r"0 <= start < end"),
    (dict(negative_range=[-1, 5]), r"0 <= start < end"),
    (dict(negative_range=[3]), r"mining.negative_range=\[3\]"),
    (dict(negative_range=[1, 2, 3]), r"mining.negative_range=\[1, 2, 3\]"),
    (dict(negative_range=[3, 50], depth=40), r"ends at 50, past mining.depth=40"),
    (dict(num_negatives=0), r"num_negatives must be >= 1"),
    (dict(random_negatives=-1), r"random_negatives >= 0"),
])
def test_invalid_configs_raise(changes, message):
    cfg = dataclasses.replace(CFG, **changes)
    with pytest.raises(DataError, match=message):
        validate(cfg)
    with pytest.raises(DataError, match=message):
        mine(CORPUS, QUERIES, make_qrels(), make_run(), cfg)


def test_valid_edge_configs_pass():
    validate(MiningConfig(depth=30, negative_range=[0, 30], num_negatives=1))
    validate(MiningConfig())


def test_positive_recall_at_depth_hand_built():
    corpus = {d: Doc("", d) for d in ["a", "b", "c", "d", "e", "f", "g", "h"]}
    queries = {"q1": "x", "q2": "y", "q3": "z"}
    qrels = {
        "q1": {"a": 1, "b": 1, "c": 0},  # a retrieved, b not -> 1 of 2
        "q2": {"d": 2, "zz": 1},         # d retrieved; zz is not in the corpus, so not counted -> 1 of 1
        "q3": {"e": 1},                  # q3 has no run at all -> 0 of 1
    }
    run = {"q1": {"a": 3.0, "c": 2.0, "f": 1.0}, "q2": {"g": 2.0, "d": 1.0}}
    cfg = MiningConfig(depth=3, negative_range=[0, 3], num_negatives=1)
    rows, stats = mine(corpus, queries, qrels, run, cfg)
    # found = a + d = 2 of total = a, b, d, e = 4
    assert stats["positive_recall_at_depth"] == 0.5
    assert stats["queries_dropped"] == {"fewer_candidates_than_negatives": 1}  # q3: empty pool
    # q1 rows for a and b (both in corpus), each with one negative from {c, f}; q2 row for d with g
    assert sorted((r["query_id"], r["positive_id"]) for r in rows) == [("q1", "a"), ("q1", "b"), ("q2", "d")]
    assert [r["negative_ids"] for r in rows if r["query_id"] == "q2"] == [["g"]]
    assert all(set(r["negative_ids"]) <= {"c", "f"} for r in rows if r["query_id"] == "q1")
    _, none = mine(corpus, queries, {"q9": {"missing": 1}}, run, cfg)
    assert none["positive_recall_at_depth"] == 0.0 and none["rows"] == 0


def test_mining_demo_set_end_to_end():
    data = DataConfig(path=str(DEMO))
    corpus = load_corpus(data)
    queries, qrels = load_split(data, "train", corpus)
    run = BM25Index.build(corpus, BM25Config(), progress=False).search(queries, 50)
    cfg = MiningConfig(depth=50, negative_range=[0, 50], num_negatives=15, seed=42)
    rows, stats = mine(corpus, queries, qrels, run, cfg)
    assert stats["queries"] == 165 and stats["rows"] == len(rows) > 0
    for row in rows:
        positives = {d for d, r in qrels[row["query_id"]].items() if r > 0}
        assert not positives & set(row["negative_ids"])
        assert set(row["negative_ids"]) <= set(run[row["query_id"]])
    assert mine(corpus, queries, qrels, run, cfg)[0] == rows


# ---------------------------------------------------------------- batching


def group_rows(n_rows: int = 6, n_negs: int = 10) -> list[dict]:
    return [{"query": f"q{i}", "positive": f"pos{i}", "negatives": [f"neg{i}-{j}" for j in range(n_negs)]}
            for i in range(n_rows)]


def test_group_dataset_shapes_and_positive_first():
    ds = GroupDataset(group_rows(), group_size=4, seed=1)
    assert len(ds) == 6
    query, passages = ds[2]
    assert query == "q2" and passages[0] == "pos2" and len(passages) == 4
    assert len(set(passages[1:])) == 3 and set(passages[1:]) <= {f"neg2-{j}" for j in range(10)}


def test_group_dataset_same_seed_epoch_index_same_group():
    a = GroupDataset(group_rows(), group_size=4, seed=1)
    b = GroupDataset(group_rows(), group_size=4, seed=1)
    for epoch in range(3):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        assert [a[i] for i in range(6)] == [b[i] for i in range(6)]
        assert [a[i] for i in range(6)] == [a[i] for i in range(6)]  # repeatable within an epoch
    # the index type does not matter (a sampler may hand out numpy / tensor ints)
    import torch
    assert a[torch.tensor(3)] == a[3]


def test_group_dataset_draws_a_different_subset_per_epoch():
    ds = GroupDataset(group_rows(), group_size=4, seed=1)
    per_epoch = []
    for epoch in range(5):
        ds.set_epoch(epoch)
        per_epoch.append([tuple(ds[i][1]) for i in range(6)])
    assert per_epoch[0] != per_epoch[1]
    for i in range(6):
        assert len({groups[i] for groups in per_epoch}) > 1, f"row {i} got the same negatives every epoch"
    other_seed = GroupDataset(group_rows(), group_size=4, seed=2)
    assert [other_seed[i] for i in range(6)] != per_epoch[0]


def test_group_dataset_exact_negatives_and_errors():
    ds = GroupDataset(group_rows(n_negs=3), group_size=4, seed=1)
    ds.set_epoch(9)
    assert ds[0] == ("q0", ["pos0", "neg0-0", "neg0-1", "neg0-2"])  # no sampling when nothing to drop
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        GroupDataset(group_rows(), group_size=1)
    with pytest.raises(ValueError, match="train.group_size=5 needs 4 negatives per row but the mined rows have 3"):
        GroupDataset(group_rows(n_negs=3), group_size=5)


def test_epoch_sampler_depends_only_on_seed_and_epoch():
    a, b = EpochSampler(50, seed=3), EpochSampler(50, seed=3)
    order0 = list(a)
    assert sorted(order0) == list(range(50)) and len(a) == 50
    assert order0 != list(range(50))
    assert list(a) == order0 == list(b)  # iterating again does not advance anything
    a.set_epoch(1)
    order1 = list(a)
    assert order1 != order0 and sorted(order1) == list(range(50))
    b.set_epoch(5)
    list(b)
    b.set_epoch(1)  # a resumed run jumps straight to its epoch
    assert list(b) == order1
    assert list(EpochSampler(50, seed=4)) != order0
    assert list(EpochSampler(50, seed=3, shuffle=False)) == list(range(50))
