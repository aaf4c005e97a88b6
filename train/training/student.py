"""What of the starting model trains: a student keeps the first `model.layers` transformer layers (a pruned copy that
saves as a normal Hugging Face folder with num_hidden_layers=N); `model.freeze_embeddings` / `model.freeze_layers`
keep the embeddings and the lower layers as they are (a small labelled set then adapts the top without
overwriting what the starting reranker knows)."""
from __future__ import annotations

from crosstune.data.types import DataError
from crosstune.train.artifact.model import check_model_source


def model_config(name: str, key: str = "model.name"):
    """The starting model's config, read without its weights."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(check_model_source(name, key))


def layer_count(config) -> int | None:
    for attr in ("num_hidden_layers", "n_layers", "num_layers"):
        if isinstance(getattr(config, attr, None), int):
            return getattr(config, attr)
    return None


def has_trained_head(name: str) -> bool:
    """A sequence-classification checkpoint (a reranker to continue from), not a bare encoder whose head starts random."""
    archs = getattr(model_config(name), "architectures", None) or []
    return any(a.endswith("ForSequenceClassification") for a in archs)


def dev_at_start(setting: bool | None, name: str) -> bool:
    """train.dev_at_start, with None settled by the starting model: only a trained head has scores worth a check."""
    return has_trained_head(name) if setting is None else setting


def check_student(model_cfg) -> None:
    """model.layers and model.freeze_layers against the starting model's depth, before anything is loaded."""
    if not (model_cfg.layers or model_cfg.freeze_layers):
        return
    have = layer_count(model_config(model_cfg.name))
    if have is None:
        raise DataError(f"model.name={model_cfg.name}: its config names no layer count; model.layers and "
                        "model.freeze_layers need a transformer encoder (BERT, MiniLM, RoBERTa, ELECTRA...)")
    if model_cfg.layers > have:
        raise DataError(f"model.layers={model_cfg.layers} but {model_cfg.name} has {have} layers; set model.layers "
                        f"to 1..{have} (0 keeps them all)")
    depth = model_cfg.layers or have
    if model_cfg.freeze_layers > depth:
        raise DataError(f"model.freeze_layers={model_cfg.freeze_layers} but the model trains with {depth} layers; "
                        f"freeze at most {depth} (0 freezes none)")


def encoder_layers(model):
    """The ModuleList of transformer layers (BERT-likes: encoder.layer; DistilBERT: transformer.layer)."""
    base = model.base_model
    for path in (("encoder", "layer"), ("transformer", "layer"), ("encoder", "layers"), ("layers",)):
        obj = base
        for part in path:
            obj = getattr(obj, part, None)
        if obj is not None:
            return obj
    raise DataError(f"model.freeze_layers: cannot find the layers of a {type(model).__name__}; freeze none")


def freeze(model, model_cfg) -> tuple[int, int]:
    """requires_grad=False on the embeddings and the lowest `freeze_layers` layers; returns (trainable, total)
    parameter counts. The optimizer is then built from the trainable ones only."""
    frozen = []
    if model_cfg.freeze_embeddings:
        embeddings = getattr(model.base_model, "embeddings", None)
        frozen.append(embeddings if embeddings is not None else model.get_input_embeddings())
    if model_cfg.freeze_layers:
        frozen.extend(encoder_layers(model)[:model_cfg.freeze_layers])
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


def describe(trainable: int, total: int, model_cfg) -> str:
    parts = [f"{trainable / 1e6:.2f}M of {total / 1e6:.2f}M params train"]
    if model_cfg.layers:
        parts.append(f"first {model_cfg.layers} layers")
    if model_cfg.freeze_embeddings or model_cfg.freeze_layers:
        parts.append("frozen: " + ", ".join(["embeddings"] * model_cfg.freeze_embeddings
                                            + [f"layers 0-{model_cfg.freeze_layers - 1}"] * bool(model_cfg.freeze_layers)))
    return ", ".join(parts)
