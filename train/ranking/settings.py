"""How a loaded model ranks, settled in one place from its manifest, a config and the command line's overrides.

The precedence rule, for every setting below (highest first):

1. **an override**: a dotted key given on the command line (`crosstune evaluate ... eval.depth=50`), i.e. one of
   load_config's `overrides`: what the user typed for this run wins;
2. **the manifest** (crosstune.json beside the model): how the model was trained and tuned, so it is ranked as it
   was chosen: passage format (`data.use_title`), `model.max_length`, `model.max_query_tokens`, the first stage's
   `bm25.method/k1/b`, the fusion weights, their bi-encoder and the depth they were tuned at (`eval.depth`);
3. **the config file** (`--config`), for what the model does not record, or a model without a manifest (a
   checkpoint, another project's cross-encoder);
4. the defaults of train/config/.

Fusion weights fit the depth they were tuned at only: weights taken from the manifest with an overridden
`eval.depth` that differs are refused, not applied (override both weights to rank at any depth). BM25 and the
reranker read the one resolved passage format, so the index and the model never see passages differently.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from crosstune.data.bm25 import BM25Config
from crosstune.data.loading import looks_like_hub_id
from crosstune.data.types import DataError
from crosstune.train.artifact.model import DEFAULT_BASE, hub_offline, hub_reachable, resolve_model
from crosstune.train.config import Config, dotted, overridden
from crosstune.train.ranking.fusion import Fusion

# setting -> where the manifest keeps it
FROM_MANIFEST = {
    "data.use_title": ("use_title",),
    "model.max_length": ("max_length",),
    "model.max_query_tokens": ("max_query_tokens",),
    "bm25.method": ("first_stage", "method"),
    "bm25.k1": ("first_stage", "k1"),
    "bm25.b": ("first_stage", "b"),
    "eval.depth": ("fusion", "depth"),
    "eval.fusion_weight": ("fusion", "weight"),
    "eval.biencoder_weight": ("fusion", "biencoder_weight"),
    "eval.biencoder": ("fusion", "biencoder"),
}


@dataclass(frozen=True)
class Settings:
    """What a RankingPipeline needs to rank as its model was chosen, and where each value came from."""

    use_title: bool
    max_length: int
    max_query_tokens: int
    depth: int
    bm25: BM25Config
    fusion: Fusion
    origin: dict[str, str] = field(default_factory=dict)  # dotted key -> override | manifest | config | default
    stages: tuple[dict, ...] = ()  # a cascade's earlier stages, as the manifest records them (ranking/cascade.py)


def manifest_value(manifest: dict, key: str) -> Any:
    value: Any = manifest
    for part in FROM_MANIFEST[key]:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def pick(key: str, manifest: dict, cfg: Config, has_config: bool) -> tuple[Any, str]:
    """(value, origin) of one setting under the precedence rule above."""
    if key in overridden(cfg):
        return dotted(cfg, key), "override"
    value = manifest_value(manifest, key)
    if value is not None:
        return value, "manifest"
    return dotted(cfg, key), "config" if has_config else "default"


def resolve(manifest: dict, cfg: Optional[Config], model_path: str) -> Settings:
    """The settings a model ranks with: `manifest` is its crosstune.json ({} for none), `cfg` the command's config
    (None: the defaults)."""
    has_config, cfg = cfg is not None, cfg or Config()
    got = {key: pick(key, manifest, cfg, has_config) for key in FROM_MANIFEST}
    value = {key: v for key, (v, _) in got.items()}
    bm25 = replace(cfg.bm25, method=value["bm25.method"], k1=value["bm25.k1"], b=value["bm25.b"])
    fusion = resolve_fusion(got, manifest, model_path)
    return Settings(value["data.use_title"], value["model.max_length"], value["model.max_query_tokens"],
                    value["eval.depth"], bm25, fusion, {key: o for key, (_, o) in got.items()},
                    tuple(manifest.get("stages") or ()))


def resolve_fusion(got: dict[str, tuple[Any, str]], manifest: dict, model_path: str) -> Fusion:
    """The fusion from resolved (value, origin) pairs: unset weights are 0; weights from the manifest keep their
    depth, and an overridden depth that differs is refused."""
    (w, w_from), (bw, bw_from) = got["eval.fusion_weight"], got["eval.biencoder_weight"]
    w, bw = float(w or 0.0), float(bw or 0.0)
    depth, depth_from = got["eval.depth"]
    tuned = [k for k, v, o in (("weight", w, w_from), ("biencoder_weight", bw, bw_from)) if o == "manifest" and v]
    if tuned and depth_from == "override" and depth != manifest_value(manifest, "eval.depth"):
        raise DataError(f"{model_path}/crosstune.json: fusion weights were tuned on BM25 top-"
                        f"{manifest_value(manifest, 'eval.depth')} but eval.depth={depth}; drop the eval.depth override, "
                        "or fix the weights yourself (eval.fusion_weight, eval.biencoder_weight; 0 ranks by the "
                        "cross-encoder alone)")
    if tuned:
        source = f"{model_path}/crosstune.json ({(manifest.get('fusion') or {}).get('source', 'tuned in training')})"
        if w_from != "manifest" or bw_from != "manifest":
            source += ", with the command line's eval.* weight"
    elif w or bw:
        source = "eval.fusion_weight / eval.biencoder_weight in the config"
    else:
        source = "none: the cross-encoder alone"
    name = got["eval.biencoder"][0] or ""
    if bw and not name:
        raise DataError(f"bi-encoder weight {bw} but no bi-encoder is named; set eval.biencoder")
    return Fusion(w, name if bw else None, bw if name else 0.0, depth, source)


def check_biencoder(name: str, model_path: str) -> str:
    """A fused export needs its bi-encoder: refuse to load without it rather than rank some other way. Returns what
    to load it from (the bundled base's verified folder, or the name)."""
    fix = "copy it here and set eval.biencoder=<folder>, or rank without it: eval.biencoder_weight=0"
    if name == DEFAULT_BASE:
        return resolve_model(name)  # verifies the bundled weights
    folder = Path(name).expanduser()
    if folder.exists():
        if not (folder / "config.json").exists():
            raise DataError(f"{model_path} fuses with the bi-encoder {name}, which has no config.json; {fix}")
        return name
    if not looks_like_hub_id(name):
        raise DataError(f"{model_path} fuses with the bi-encoder {name}: no such folder; {fix}")
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return name
    if hub_offline() or not hub_reachable():
        raise DataError(f"{model_path} fuses with the bi-encoder {name}, which is neither a local folder nor in the "
                        f"Hugging Face cache, and there is no network; {fix}")
    return name
