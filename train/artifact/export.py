"""Export: a plain Hugging Face folder that transformers and sentence-transformers load, or an ONNX graph of the same
model (optimised, or int8-quantised for CPUs) that sentence-transformers' ONNX backend and onnxruntime load; each
with a model card and a manifest (crosstune.json) that lists every file's sha256."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from crosstune.data.types import DataError
from crosstune.train.artifact.card import model_card
from crosstune.train.artifact.manifest import serving_config, stage_folder, write_manifest
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
    fields = serving_config(cfg, dev_metrics)
    if fields.get("stages"):
        fields["stages"] = copy_stages(fields["stages"], src, out)
    if (src / FRONTIER).is_file():
        shutil.copy2(src / FRONTIER, out / FRONTIER)
    (out / "README.md").write_text(model_card(cfg, dev_metrics, fmt, extra, dev_table, plan))
    # written last: it hashes every other file (the stages' too)
    return write_manifest(out, {**fields, "format": fmt, "activation": "identity", **extra})


FRONTIER = "frontier.png"  # the accuracy/latency plot of a cascade's choice (training/cascade_choice.py)


def copy_stages(specs: list[dict], src: Path, out: Path) -> list[dict]:
    """A cascade's earlier stages copied into the export (stages/1/, ...), so the folder serves on its own; each
    checked first against the sha256 its choice recorded. Returns the specs naming the copies."""
    copied = []
    for i, spec in enumerate(specs):
        if (spec.get("sha256")) is None:  # the bi-encoder: named, loaded as the fusion's bi-encoder is
            copied.append(spec)
            continue
        folder = stage_folder(spec, str(src), i)
        shutil.copytree(folder, out / "stages" / str(i + 1))
        copied.append({**spec, "name": f"stages/{i + 1}", "source": str(folder)})
    return copied


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
