"""The most accurate ranking that fits a latency budget: rerank depth, cascade and fusion weights chosen together.

Every configuration is replayed from scores computed once on the choosing split: each scorer's scores of BM25's
top max(depths), the bi-encoder's cosines of the same, and a cost table measured on this machine (ranking/costs.py:
p95 ms a query for each scorer at each depth, one query at a time, and BM25's). A configuration is a chain of
earlier stages, cheapest first, each reading fewer candidates than the one before, then the model itself:

    model@20                       BM25 top-20 -> the model, fused
    student@100 > model@20         the student reads BM25's top-100, the model the fused student order's top-20

Each stage's fusion weights are tuned on its own order's nDCG@10, stage by stage (the earlier stages' orders are
fixed when a later one is tuned; tuning every stage's weights against the final figure at once is a grid per stage
multiplied together). Its estimated p95 is BM25's plus each part's p95 (a sum of p95s: an upper estimate; the
chosen one is then timed end to end). The chosen configuration is the most accurate whose estimate fits the budget,
the cheaper one on a tie; without a budget, the most accurate.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Optional

from crosstune.data.types import DataError, Qrels, Run
from crosstune.train.evaluation.metrics import aggregate, per_query
from crosstune.train.evaluation.tuning import GRID, tune_weights
from crosstune.train.ranking.cascade import BIENCODER, stage_order, top_of
from crosstune.train.ranking.fusion import Fusion

MODEL = "model"  # the trained model: always the last stage
SEARCH_GRID = GRID[::2]  # 0.0, 0.1 .. 0.9 while searching; the chosen chain is tuned again on GRID (0.05 steps)


@dataclass(frozen=True)
class Chain:
    """((scorer, depth), ...) cheapest first, the model last."""

    chain: tuple[tuple[str, int], ...]

    @property
    def label(self) -> str:
        return " > ".join(f"{name}@{depth}" for name, depth in self.chain)


@dataclass
class Point:
    config: Chain
    fusions: tuple[Fusion, ...]  # one per stage, the model's last
    ndcg: float
    p95_ms: float
    fits: bool = True

    def as_dict(self) -> dict:
        return {"label": self.config.label, "nDCG@10": round(self.ndcg, 4), "p95_ms": round(self.p95_ms, 1),
                "fits": self.fits, "stages": [{"name": n, "depth": d, "weight": f.weight,
                                               "biencoder_weight": f.biencoder_weight}
                                              for (n, d), f in zip(self.config.chain, self.fusions)]}


@dataclass
class Inputs:
    """What the choice replays: the split's judgments, BM25's run, each scorer's scores of BM25's top max(depths)
    (MODEL's, every stage model's, BIENCODER's cosines when there is a bi-encoder) and the measured costs."""

    qrels: Qrels
    bm25: Run
    scores: dict[str, Run]
    costs: dict[str, dict[int, float]]  # scorer -> depth -> p95 ms a query
    bm25_ms: float
    biencoder: Optional[str] = None  # the bi-encoder's name when its cosines may join every stage's fusion
    view: object = None  # passages -> what the qrels judge (documents), as tune_weights takes it
    memo: dict = field(default_factory=dict)


def configurations(stage_models: list[str], depths: list[int], costs: dict[str, dict[int, float]],
                   longest: int = 2) -> list[Chain]:
    """Every chain of up to `longest` earlier stages (cheapest first by their cost at the deepest depth), depths
    strictly falling along the chain, the model last."""
    depths = sorted(set(depths))
    deepest = depths[-1]
    models = sorted(stage_models, key=lambda s: costs[s][deepest])
    out = [Chain(((MODEL, d),)) for d in depths]
    for n in range(1, longest + 1):
        for chain in combinations(models, n):
            for ds in combinations(sorted(depths, reverse=True), n + 1):
                out.append(Chain(tuple(zip((*chain, MODEL), ds))))
    return out


def ndcg(inputs: Inputs, run: Run) -> float:
    return aggregate(per_query(inputs.qrels, inputs.view(run) if inputs.view else run, ["nDCG@10"]))["nDCG@10"]


def tuned_stage(inputs: Inputs, before: Run, name: str, depth: int, grid: list[float]) -> tuple[Run, Fusion, float]:
    """A stage's order over `before`: its scores of the top `depth`, fused with weights tuned on this split."""
    scores = top_of(inputs.scores[name], before, depth)
    cosines = top_of(inputs.scores[BIENCODER], before, depth) if inputs.biencoder and name != BIENCODER else None
    w, bw, _ = tune_weights(inputs.qrels, inputs.bm25, scores, cosines, grid=grid, view=inputs.view)
    fusion = Fusion(w, inputs.biencoder if bw else None, bw, depth, "tuned with the cascade")
    order = stage_order(inputs.bm25, before, scores, fusion, cosines)
    return order, fusion, ndcg(inputs, order)


def replay(inputs: Inputs, config: Chain, grid: list[float] = SEARCH_GRID) -> Point:
    """A configuration's nDCG@10 on the split (each stage tuned in turn; prefixes memoised) and its estimated p95."""
    before, fusions, value = inputs.bm25, [], ndcg(inputs, inputs.bm25)
    for i, (name, depth) in enumerate(config.chain):
        key = (config.chain[:i + 1], tuple(grid))
        if key not in inputs.memo:
            inputs.memo[key] = tuned_stage(inputs, before, name, depth, grid)
        before, fusion, value = inputs.memo[key]
        fusions.append(fusion)
    return Point(config, tuple(fusions), value, cost(inputs, config, fusions))


def cost(inputs: Inputs, config: Chain, fusions) -> float:
    """Estimated p95 ms a query: BM25, each stage's scorer at its depth, and the bi-encoder wherever it is fused."""
    total = inputs.bm25_ms
    for (name, depth), fusion in zip(config.chain, fusions):
        total += inputs.costs[name][depth]
        if fusion.biencoder_weight and name != BIENCODER:
            total += inputs.costs[BIENCODER][depth]
    return total


def frontier(points: list[Point]) -> list[Point]:
    """The points no other point beats on both nDCG@10 and p95, cheapest first."""
    best, out = -1.0, []
    for p in sorted(points, key=lambda p: (p.p95_ms, -p.ndcg)):
        if p.ndcg > best + 1e-12:
            out.append(p)
            best = p.ndcg
    return out


def choose(inputs: Inputs, chains: list[Chain], budget_ms: Optional[float]) -> tuple[Point, list[Point]]:
    """(the chosen point, every point replayed). An impossible budget is one line naming the cheapest cost."""
    points = [replay(inputs, c) for c in chains]
    for p in points:
        p.fits = budget_ms is None or p.p95_ms <= budget_ms
    fitting = [p for p in points if p.fits]
    if not fitting:
        cheapest = min(points, key=lambda p: p.p95_ms)
        raise impossible(budget_ms, cheapest.config.label, cheapest.p95_ms)
    chosen = max(fitting, key=lambda p: (round(p.ndcg, 6), -p.p95_ms))
    # the chosen chain with every stage's weights on the full grid, kept when it is at least as good and still fits
    fine = replay(inputs, chosen.config, GRID)
    fine.fits = budget_ms is None or fine.p95_ms <= budget_ms
    if fine.fits and fine.ndcg >= chosen.ndcg:
        points = [fine if p is chosen else p for p in points]  # the frontier shows what ships
        chosen = fine
    return chosen, points


def impossible(budget_ms: float, label: str, cost_ms: float) -> DataError:
    return DataError(f"eval.latency_budget_ms={budget_ms:g}: the cheapest configuration ({label}) costs {cost_ms:.0f} ms "
                     f"p95 a query on this machine; raise the budget to at least {cost_ms:.0f}, or lower "
                     "eval.candidate_depths (every configuration ends with the model at one of them)")


def ranked_with(inputs: Inputs, point: Point) -> Run:
    """A configuration's final order on another split, with the weights it was chosen with (nothing tuned here)."""
    before = inputs.bm25
    for (name, depth), fusion in zip(point.config.chain, point.fusions):
        scores = top_of(inputs.scores[name], before, depth)
        cosines = top_of(inputs.scores[BIENCODER], before, depth) if fusion.biencoder_weight else None
        before = stage_order(inputs.bm25, before, scores, fusion, cosines)
    return before
