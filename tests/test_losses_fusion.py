"""Losses and score fusion: pure functions checked against hand-worked values."""
from __future__ import annotations

import math
from collections import deque

import pytest
import torch

from crosstune.train.evaluation.tuning import tune_weights
from crosstune.train.ranking.candidates import with_tail
from crosstune.train.ranking.fusion import fuse, minmax
from crosstune.train.training.loop import collapse_reason
from crosstune.train.training.losses import chance_loss, listwise_ce, make_loss


def test_listwise_ce_is_cross_entropy_of_the_positive():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    labels = torch.tensor([[1.0, 0, 0], [1.0, 0, 0]])
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 0]))
    torch.testing.assert_close(listwise_ce(logits, labels), expected)


def test_bce_weights_the_positive_by_negatives_per_positive():
    loss = make_loss("bce", group_size=4)
    logits, labels = torch.zeros(1, 4), torch.tensor([[1.0, 0, 0, 0]])
    # all logits 0: each term is log 2; the positive counts 3 times -> (3 + 3) log 2 / 4
    assert loss(logits, labels).item() == pytest.approx(6 * math.log(2) / 4, rel=1e-6)


@pytest.mark.parametrize("name", ["listwise", "bce"])
def test_chance_loss_is_the_loss_of_the_best_constant_score(name):
    group = 8
    loss = make_loss(name, group)
    labels = torch.zeros(1, group)
    labels[0, 0] = 1
    best = min(loss(torch.full((1, group), c), labels).item() for c in torch.linspace(-5, 5, 2001).tolist())
    assert chance_loss(name, group) == pytest.approx(best, abs=1e-4)


def test_collapse_is_reported_only_when_loss_is_at_chance_and_scores_are_flat():
    chance = math.log(8)
    flat = deque([(chance, 0.0)] * 20, maxlen=20)
    assert "collapsed" in collapse_reason(flat, chance)
    learning = deque([(chance * 0.7, 0.5)] * 20, maxlen=20)
    assert collapse_reason(learning, chance) is None
    assert collapse_reason(deque([(chance, 0.0)] * 5, maxlen=20), chance) is None  # too early to tell


def test_fusion_mixes_normalised_scores_and_keeps_the_tail():
    bm25 = {"q": {"a": 10.0, "b": 5.0, "c": 0.0, "d": -1.0}}
    ce = {"q": {"a": -2.0, "b": 2.0, "c": 0.0}}  # only the top 3 were reranked
    assert minmax(ce["q"]) == {"a": 0.0, "b": 1.0, "c": 0.5}
    fused = fuse(bm25, ce, 0.5)["q"]
    assert fused == pytest.approx({"a": 0.5, "b": 0.75, "c": 0.25})
    assert fuse(bm25, ce, 0.0) is ce
    final = with_tail(fuse(bm25, ce, 0.5), bm25)["q"]
    assert sorted(final, key=final.get, reverse=True) == ["b", "a", "c", "d"]


def test_tune_weight_picks_the_grid_point_with_the_best_ndcg():
    qrels = {"q1": {"a": 1}, "q2": {"x": 1}}
    bm25 = {"q1": {"a": 2.0, "b": 1.5, "c": 1.0}, "q2": {"y": 3.0, "x": 2.95, "z": 2.0}}
    ce = {"q1": {"a": 0.9, "b": 1.0, "c": 0.0}, "q2": {"y": 0.0, "x": 1.0, "z": 0.5}}
    # the cross-encoder alone misses q1 (b > a), BM25 alone misses q2 (y > x); the weights that rank
    # both positives first are 1/6 < w < 0.95, so the grid's first such point is 0.2
    weight, bi_weight, ndcg = tune_weights(qrels, bm25, ce)
    assert ndcg == pytest.approx(1.0)
    assert weight == 0.2 and bi_weight == 0.0
    assert fuse(bm25, ce, weight)["q1"]["a"] > fuse(bm25, ce, weight)["q1"]["b"]


def test_a_bi_encoder_joins_the_fusion_with_its_own_weight():
    bm25 = {"q": {"a": 0.0, "b": 1.0, "c": 0.5}}
    ce = {"q": {"a": 0.5, "b": 1.0, "c": 0.0}}
    bi = {"q": {"a": 1.0, "b": 0.0, "c": 0.5}}
    # a = 0.5 * rest + v, b = w + rest, c = 0.5 * (w + v), with rest = 1 - w - v
    assert fuse(bm25, ce, 0.2, bi, 0.5)["q"] == pytest.approx({"a": 0.65, "b": 0.5, "c": 0.35})
    with pytest.raises(ValueError, match="bi-encoder"):
        fuse(bm25, ce, 0.2, None, 0.5)
    # only the bi-encoder puts the positive a first: BM25 + cross-encoder never can, and the first grid point
    # that does is v = 0.35 > 1/3 with w = 0
    qrels = {"q": {"a": 1}}
    assert tune_weights(qrels, bm25, ce)[2] < 1.0
    assert tune_weights(qrels, bm25, ce, bi) == (0.0, 0.35, pytest.approx(1.0))
