"""Ranking losses over groups: logits [batch, group] and labels [batch, group] (1 = relevant)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def listwise_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy of the positives against their group (the "LCE" recipe)."""
    log_probs = F.log_softmax(logits.float(), dim=-1)
    return -((log_probs * labels).sum(-1) / labels.sum(-1)).mean()


def pointwise_bce(logits: torch.Tensor, labels: torch.Tensor, pos_weight: float) -> torch.Tensor:
    weight = torch.tensor(pos_weight, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits.float(), labels, pos_weight=weight)


def make_loss(name: str, group_size: int, pos_weight: float | None = None):
    if name == "listwise":
        return listwise_ce
    # k negatives per positive: weighting the positive by k balances the two classes
    weight = float(pos_weight) if pos_weight is not None else float(group_size - 1)
    return lambda logits, labels: pointwise_bce(logits, labels, weight)


def chance_loss(name: str, group_size: int, pos_weight: float | None = None) -> float:
    """The loss of a model that scores every passage the same: where a collapsed run sits."""
    if name == "listwise":
        return math.log(group_size)
    weight = float(pos_weight) if pos_weight is not None else float(group_size - 1)
    # best constant logit c has sigmoid(c) = w / (w + k); the loss there, averaged over the group
    k = group_size - 1
    p = weight / (weight + k)
    return -(weight * math.log(p) + k * math.log(1 - p)) / group_size
