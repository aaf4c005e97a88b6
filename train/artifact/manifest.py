"""crosstune.json, an export's manifest: how the model ranks, its format, and the sha256 of every file beside it.

Loading checks the hashes, so a file changed or cut short after export (a bad copy, a hand edit, a partial
download) stops with its name instead of scoring with something other than what was exported.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from crosstune.data.types import DataError
from crosstune.train.config import Config


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def serving_config(cfg: Config, dev: dict | None) -> dict:
    """The manifest of how this model ranks, read back by `evaluate`, `rerank` and serving: passage format, length,
    the fusion (weights, the depth they were tuned at) and the split that chose the checkpoint and the weights."""
    weight = dev["fusion_weight"] if dev else (cfg.eval.fusion_weight or 0.0)
    bi_weight = dev.get("biencoder_weight", 0.0) if dev else (cfg.eval.biencoder_weight or 0.0)
    depth = dev.get("depth", cfg.eval.depth) if dev else None
    cascade = (dev or {}).get("cascade")
    if cascade:  # a cascade chosen under a latency budget: the model is its last stage, at its own depth and weights
        weight, bi_weight, depth = cascade["model"]["weight"], cascade["model"]["biencoder_weight"], cascade["model"]["depth"]
    selection = ({"split": dev.get("split", cfg.data.dev_split), "queries": dev.get("queries"), "step": dev["step"],
                  "data": cfg.data.path} if dev else None)
    return {**({"stages": cascade["stages"], "cascade": {k: v for k, v in cascade.items() if k != "stages"}}
               if cascade else {}),
            "use_title": cfg.data.use_title, "max_length": cfg.model.max_length, "scores": "logits",
            "max_query_tokens": cfg.model.max_query_tokens,  # serving cuts long queries as training did
            "chunking": {"method": cfg.data.chunking, "size": cfg.data.chunk_size, "stride": cfg.data.chunk_stride,
                         "tokenizer": cfg.data.chunk_tokenizer},  # how the passages it was trained on were cut
            "first_stage": {"name": "bm25", **{k: getattr(cfg.bm25, k) for k in ("method", "k1", "b")}},
            "fusion": {"weight": weight, "biencoder": (cfg.eval.biencoder or None) if bi_weight else None,
                       "biencoder_weight": bi_weight, "depth": depth,
                       "source": f"tuned on split {selection['split']!r}" if dev else "the training config's eval.*",
                       "normalisation": "per-query min-max over the reranked candidates",
                       "formula": "weight * bm25 + biencoder_weight * biencoder_cosine + "
                                  "(1 - weight - biencoder_weight) * cross_encoder"},
            "selection": selection}


MANIFEST = "crosstune.json"


FORMATS = ("hf", "onnx", "onnx-int8")


def file_hashes(folder: Path) -> dict[str, str]:
    """{posix path relative to folder: sha256} for every file under it except the manifest itself."""

    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() != MANIFEST)
    return {p.relative_to(folder).as_posix(): sha256(p) for p in files}


def write_manifest(folder: Path | str, fields: dict) -> dict:
    """Write crosstune.json = fields + "files" (hashed last, so every other file must already be written)."""
    folder = Path(folder)
    manifest = {**fields, "files": file_hashes(folder)}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def read_manifest(folder: Path | str) -> dict:
    """crosstune.json parsed, unchecked; {} when the folder has none (a checkpoint or another project's model)."""
    f = Path(folder) / MANIFEST
    if not f.is_file():
        return {}
    try:
        manifest = json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{f}: not JSON ({e}); re-export the model (crosstune export --overwrite)") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{f}: expected a JSON object; re-export the model (crosstune export --overwrite)")
    return manifest


def verify_manifest(folder: Path | str) -> dict:
    """The manifest, after checking every file it lists exists with the recorded sha256 (one line names the first
    that does not). Files it does not list are not checked: a manifest without "files" predates the hashes."""

    folder = Path(folder)
    manifest = read_manifest(folder)
    fmt = manifest.get("format", "hf")
    if fmt not in FORMATS:
        raise DataError(f"{folder / MANIFEST}: unknown format {fmt!r} (crosstune reads {', '.join(FORMATS)}); "
                        "re-export it with this version of crosstune")
    fix = "re-export it (crosstune export --overwrite) or copy the whole export folder again"
    for rel, digest in (manifest.get("files") or {}).items():
        path = folder / rel
        if not path.is_file():
            raise DataError(f"{path}: listed in {MANIFEST} but missing; {fix}")
        if sha256(path) != digest:
            raise DataError(f"{path}: sha256 differs from {MANIFEST} (changed since export); {fix}")
    return manifest


def stage_folder(spec: dict, model: str, i: int) -> Path:
    """A cross-encoder stage's export, checked against what the model's manifest recorded of it."""
    where = f"{model}/{MANIFEST}: stage {i + 1} ({spec.get('name')!r})"
    folder = Path(spec["name"]).expanduser()
    folder = folder if folder.is_absolute() else Path(model) / folder if (Path(model) / folder).exists() else folder
    fix = "copy the whole export folder again, or choose the cascade again (crosstune choose, then export)"
    if not (folder / MANIFEST).is_file():
        raise DataError(f"{where}: {folder / MANIFEST} is missing; {fix}")
    if sha256(folder / MANIFEST) != spec.get("sha256"):
        raise DataError(f"{folder / MANIFEST}: sha256 differs from what {where} records (the stage's export changed "
                        f"since the cascade was chosen); {fix}")
    return folder
