"""Export: a plain Hugging Face folder that transformers and sentence-transformers load, or an ONNX graph of the same
model (optimised, or int8-quantised for CPUs) that sentence-transformers' ONNX backend and onnxruntime load; each
with a model card and a manifest (crosstune.json) that lists every file's sha256."""
from __future__ import annotations

import tempfile
from pathlib import Path

from crosstune.data.types import DataError
from crosstune.train.artifact.card import model_card
from crosstune.train.artifact.manifest import serving_config, write_manifest
from crosstune.train.artifact.onnx import check_format, write_onnx
from crosstune.train.config import Config

# sentence-transformers applies a sigmoid to 1-logit models unless config.json names another function;
# Identity keeps CrossEncoder.predict equal to the logits our own scorer returns
IDENTITY = "torch.nn.modules.linear.Identity"


def export_model(src: Path, out: Path, cfg: Config, dev_metrics: dict | None, fmt: str = "hf",
                 dev_table: str = "", plan: dict | None = None) -> dict:
    """Write the model in `fmt`, its tokenizer (tokenizer.json), README.md and crosstune.json into `out`; returns
    the manifest. An ONNX export is made from the hf export of the same model, written to a scratch folder first."""
    check_format(fmt)
    extra = {}
    if fmt == "hf":
        write_hf(src, out, cfg)
    else:
        with tempfile.TemporaryDirectory(prefix="crosstune-hf-") as scratch:
            write_hf(src, Path(scratch), cfg)
            extra = write_onnx(Path(scratch), out, fmt)
    (out / "README.md").write_text(model_card(cfg, dev_metrics, fmt, extra, dev_table, plan))
    # written last: it hashes every other file
    return write_manifest(out, {**serving_config(cfg, dev_metrics), "format": fmt, "activation": "identity", **extra})


def write_hf(src: Path, out: Path, cfg: Config) -> None:
    """The model (safetensors, one label, Identity activation for sentence-transformers) and its fast tokenizer."""
    import sentence_transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(src)
    if model.config.num_labels != 1:
        raise DataError(f"{src} has num_labels={model.config.num_labels}; a reranker needs num_labels=1")
    tokenizer = AutoTokenizer.from_pretrained(src)
    if not getattr(tokenizer, "is_fast", False):
        raise DataError(f"{src}: only a fast tokenizer writes tokenizer.json; retrain from a model with one")
    tokenizer.model_max_length = cfg.model.max_length
    model.config.sentence_transformers = {"activation_fn": IDENTITY, "version": sentence_transformers.__version__}
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
