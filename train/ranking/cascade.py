"""Cascades: cheaper scorers narrow BM25's candidates before the pipeline's own model reads the few that are left.

A ranking is a list of stages over the first stage's (BM25's) candidates. Each `Stage` scores the top `depth` of
the order before it and fuses its scores with BM25's (and the bi-encoder's) by its own weights; the order it leaves
is the next stage's input, its tail kept below in the order before. The pipeline's own model is the last stage (its
`depth` and `fusion`), so a pipeline with no earlier stage ranks exactly as a single rerank does, and a later stage
only ever reorders the top of the stage before it:

    BM25 top-100 -> student (onnx-int8) top-100, fused -> teacher top-20, fused -> the final order

The functions below are pure over Runs, so the choice of a cascade under a latency budget (evaluation/budget.py)
replays any configuration from scores computed once.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from crosstune.data.types import Corpus, DataError, Queries, Run, ranked
from crosstune.train.artifact.manifest import MANIFEST, read_manifest, sha256, stage_folder
from crosstune.train.ranking.candidates import score_candidates, with_tail
from crosstune.train.ranking.fusion import Fusion, fuse

BIENCODER = "bi-encoder"  # a stage's name when its scorer is the fusion's bi-encoder (cosines, cached passages)


@dataclass(frozen=True)
class Stage:
    """An earlier stage: `scorer` (a cross-encoder's score(pairs), or a bi-encoder's score_run) over the top `depth`
    of the order before, fused by `fusion`. `name` is what the manifest calls it (a folder, or "bi-encoder")."""

    name: str
    scorer: object
    depth: int
    fusion: Fusion


def stage_scores(stage: Stage, before: Run, queries: Queries, corpus: Corpus, use_title: bool,
                 depth: Optional[int] = None) -> Run:
    """The stage's raw scores of each query's top-`depth` (default: the stage's) of `before`."""
    depth = depth or stage.depth
    if hasattr(stage.scorer, "score_run"):  # a bi-encoder: cosines, passage embeddings cached
        return stage.scorer.score_run(before, queries, corpus, depth, use_title)
    return score_candidates(before, queries, corpus, stage.scorer, depth, use_title)


def top_of(scores: Run, before: Run, depth: int) -> Run:
    """Scores computed once over a deeper list (a choice replays configurations), cut to `before`'s top `depth`."""
    return {q: {d: scores[q][d] for d in ranked(docs)[:depth]} for q, docs in before.items()}


def stage_order(first_stage: Run, before: Run, scores: Run, fusion: Fusion, biencoder: Optional[Run] = None) -> Run:
    """The order a stage leaves: its candidates fused with BM25 (`first_stage`'s scores) and the bi-encoder by its
    weights, then the rest of `before` below them in `before`'s order."""
    return with_tail(fuse(first_stage, scores, fusion.weight, biencoder, fusion.biencoder_weight), before)


def check_depths(stages: tuple[Stage, ...] | list, final_depth: int, where: str) -> None:
    """Each stage reads at most what the one before it kept: depths never grow along a cascade."""
    depths = [s.depth for s in stages] + [final_depth]
    for i, stage in enumerate(stages):
        if depths[i + 1] > depths[i]:
            raise DataError(f"{where}: a stage reads the top {depths[i + 1]} of stage {stage.name!r}, which keeps "
                            f"{depths[i]}; a cascade's depths must not grow: lower eval.depth, or choose the cascade "
                            "again")


# -- a cascade as the manifest records it ----------------------------------------------------------------------------
def stage_spec(name: str, depth: int, fusion: Fusion, folder: Optional[Path] = None,
               biencoder: Optional[str] = None) -> dict:
    """A stage for crosstune.json: a cross-encoder stage names its export `folder` (relative to the model's folder
    once exported) and the sha256 of that export's own manifest, which lists the sha256 of each of its files."""
    spec = {"name": name, "depth": depth,
            "fusion": {"weight": fusion.weight, "biencoder": fusion.biencoder, "biencoder_weight": fusion.biencoder_weight}}
    if biencoder:  # a bi-encoder stage: which one
        spec["biencoder"] = biencoder
    if folder is not None:
        spec.update(format=read_manifest(folder).get("format", "hf"), sha256=sha256(folder / MANIFEST))
    return spec


def biencoder_name(fusion: Fusion, specs) -> Optional[str]:
    """The bi-encoder a ranking needs: the model's fusion's, else an earlier stage's (its fusion's, or its own
    scorer's when the stage is the bi-encoder)."""
    names = [fusion.biencoder] + [(s.get("fusion") or {}).get("biencoder") or s.get("biencoder") for s in specs]
    return next((n for n in names if n), None)


def spec_fusion(spec: dict, depth: int) -> Fusion:
    f = spec.get("fusion") or {}
    bw = float(f.get("biencoder_weight") or 0.0)
    return Fusion(float(f.get("weight") or 0.0), f.get("biencoder") if bw else None, bw, depth, "the cascade's choice")


def load_stages(specs: list[dict], model: str, load_scorer, biencoder) -> tuple[Stage, ...]:
    """The Stages of a manifest's "stages": `load_scorer(folder)` loads a cross-encoder stage (its own manifest's
    hashes verified as it loads), `biencoder` is the pipeline's bi-encoder (for a bi-encoder stage)."""
    out = []
    for i, spec in enumerate(specs):
        depth = int(spec["depth"])
        if spec["name"] == BIENCODER:
            if biencoder is None:
                raise DataError(f"{model}/{MANIFEST}: stage {i + 1} is the bi-encoder, but none is named; set "
                                "eval.biencoder")
            out.append(Stage(BIENCODER, biencoder, depth, spec_fusion(spec, depth)))
        else:
            out.append(Stage(spec["name"], load_scorer(str(stage_folder(spec, model, i))), depth, spec_fusion(spec, depth)))
    return tuple(out)
