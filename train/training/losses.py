"""Ranking losses over groups: logits [batch, group] and labels [batch, group] (1 = relevant), and for distillation
the teacher's scores [batch, group] in the same order (positive first). Never texts."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from crosstune.data.types import DataError
from crosstune.train.config.checks import DISTILL


def listwise_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy of the positives against their group (the "LCE" recipe)."""
    log_probs = F.log_softmax(logits.float(), dim=-1)
    return -((log_probs * labels).sum(-1) / labels.sum(-1)).mean()


def pointwise_bce(logits: torch.Tensor, labels: torch.Tensor, pos_weight: float) -> torch.Tensor:
    weight = torch.tensor(pos_weight, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits.float(), labels, pos_weight=weight)


def margin_mse(logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Hofstätter et al. 2020: the student's margins (positive minus each negative) regress onto the teacher's. Only
    differences are learnt, so the student keeps its own score offset and scale is the teacher's."""
    s, t = logits.float(), teacher.float()
    return F.mse_loss(s[:, :1] - s[:, 1:], t[:, :1] - t[:, 1:])


def listwise_kl(logits: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) of the two softmax distributions over each group at temperature T, times T^2 (Hinton
    et al. 2015: keeps the gradient's size the same whatever T), averaged over groups."""
    log_s = F.log_softmax(logits.float() / temperature, dim=-1)
    log_t = F.log_softmax(teacher.float() / temperature, dim=-1)
    return temperature ** 2 * (log_t.exp() * (log_t - log_s)).sum(-1).mean()


def make_loss(name: str, group_size: int, pos_weight: float | None = None, distill_weight: float = 1.0,
              temperature: float = 1.0, teacher_scale: float = 1.0):
    """loss(logits, labels, teacher=None). A distillation loss is mixed with the listwise hard-label loss as
    distill_weight * distill + (1 - distill_weight) * listwise (1: the teacher alone)."""
    if name == "listwise":
        return lambda logits, labels, teacher=None: listwise_ce(logits, labels)
    if name == "bce":
        # k negatives per positive: weighting the positive by k balances the two classes
        weight = float(pos_weight) if pos_weight is not None else float(group_size - 1)
        return lambda logits, labels, teacher=None: pointwise_bce(logits, labels, weight)
    if name not in DISTILL:
        raise DataError(f"train.loss={name!r}; choose one of listwise, bce, {', '.join(DISTILL)}")

    def distill(logits, labels, teacher=None):
        if teacher is None:
            raise DataError(f"train.loss={name} needs teacher scores in the batch; mine with --teacher MODEL")
        # a cosine teacher's margins are ~0.1: teacher_scale (e.g. 20) puts them on a logit's scale
        t = teacher * teacher_scale
        soft = margin_mse(logits, t) if name == "margin-mse" else listwise_kl(logits, t, temperature)
        if distill_weight >= 1.0:
            return soft
        return distill_weight * soft + (1.0 - distill_weight) * listwise_ce(logits, labels)

    return distill


def chance_loss(name: str, group_size: int, pos_weight: float | None = None) -> float:
    """The loss of a model that scores every passage the same: where a collapsed run sits."""
    if name in DISTILL:
        # depends on the teacher's margins, not on the group alone: NaN never compares close, so no collapse
        # warning is raised from the loss (a flat score spread is still reported by the dev check)
        return math.nan
    if name == "listwise":
        return math.log(group_size)
    weight = float(pos_weight) if pos_weight is not None else float(group_size - 1)
    # best constant logit c has sigmoid(c) = w / (w + k); the loss there, averaged over the group
    k = group_size - 1
    p = weight / (weight + k)
    return -(weight * math.log(p) + k * math.log(1 - p)) / group_size
