"""TODO docstring."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from crosstune.data.types import DataError
from crosstune.train.ranking.fusion import Fusion


def resolve_fusion(manifest: dict, model_path: str, depth: int, weight: Optional[float] = None,
                   biencoder_weight: Optional[float] = None, biencoder: str = "") -> Fusion:
    """A weight given here (eval.* in a config) wins; else the model's manifest; else 0. Tuned weights fit one rerank
    depth only: applying them at another is refused rather than silently giving another ranking."""
    tuned = manifest.get("fusion") or {}
    explicit = weight is not None, biencoder_weight is not None
    w = weight if explicit[0] else float(tuned.get("weight") or 0.0)
    bw = biencoder_weight if explicit[1] else float(tuned.get("biencoder_weight") or 0.0)
    from_manifest = [k for k, e, v in (("weight", explicit[0], w), ("biencoder_weight", explicit[1], bw)) if not e and v]
    tuned_depth = tuned.get("depth")
    if from_manifest and tuned_depth and tuned_depth != depth:
        raise DataError(f"{model_path}/crosstune.json: fusion weights were tuned on BM25 top-{tuned_depth} but "
                        f"eval.depth={depth}; set eval.depth={tuned_depth}, or fix the weights yourself "
                        "(eval.fusion_weight, eval.biencoder_weight; 0 ranks by the cross-encoder alone)")
    if all(explicit):
        source = "eval.fusion_weight / eval.biencoder_weight in the config"
    elif from_manifest:
        source = f"{model_path}/crosstune.json ({tuned.get('source', 'tuned in training')})"
        if any(explicit):
            source += ", with the config's eval.* weight"
    else:
        source = "none: the cross-encoder alone" if not (w or bw) else "eval.* in the config"
    name = biencoder or tuned.get("biencoder") or ""
    if bw and not name:
        raise DataError(f"bi-encoder weight {bw} but no bi-encoder is named; set eval.biencoder")
    return Fusion(w, name if bw else None, bw if name else 0.0, tuned_depth if from_manifest else depth, source)


def check_biencoder(name: str, model_path: str) -> None:
    """A fused export needs its bi-encoder: refuse to load without it rather than rank some other way."""
    from crosstune.data.loading import looks_like_hub_id
    from crosstune.train.artifact.model import DEFAULT_BASE, hub_offline, hub_reachable, resolve_model

    fix = "copy it here and set eval.biencoder=<folder>, or rank without it: eval.biencoder_weight=0"
    if name == DEFAULT_BASE:
        resolve_model(name)  # verifies the bundled weights
        return
    folder = Path(name).expanduser()
    if folder.exists():
        if not (folder / "config.json").exists():
            raise DataError(f"{model_path} fuses with the bi-encoder {name}, which has no config.json; {fix}")
        return
    if not looks_like_hub_id(name):
        raise DataError(f"{model_path} fuses with the bi-encoder {name}: no such folder; {fix}")
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return
    if hub_offline() or not hub_reachable():
        raise DataError(f"{model_path} fuses with the bi-encoder {name}, which is neither a local folder nor in the "
                        f"Hugging Face cache, and there is no network; {fix}")


def config_from_manifest(manifest: dict):
    """The settings an export was trained and tuned with, for loading it without a config."""
    from crosstune.train.config import Config

    cfg = Config()
    cfg.model.max_length = manifest.get("max_length") or cfg.model.max_length
    cfg.eval.depth = (manifest.get("fusion") or {}).get("depth") or cfg.eval.depth
    cfg.data.use_title = manifest.get("use_title", cfg.data.use_title)
    for key in ("method", "k1", "b"):  # BM25 over the texts a caller brings, as the first stage was configured
        if key in (manifest.get("first_stage") or {}):
            setattr(cfg.bm25, key, manifest["first_stage"][key])
    return cfg
