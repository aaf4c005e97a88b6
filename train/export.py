"""Export: a plain Hugging Face folder that transformers and sentence-transformers load, or an ONNX graph of the same
model (optimised, or int8-quantised for CPUs) that sentence-transformers' ONNX backend and onnxruntime load; each
with a model card and a manifest (crosstune.json) that lists every file's sha256."""
from __future__ import annotations

import contextlib
import logging
import platform
import shutil
import tempfile
import warnings
from pathlib import Path

from crosstune.data.types import DataError

from .config import Config, to_yaml
from .manifest import FORMATS, MANIFEST, write_manifest
from .model import DEFAULT_BASE, ONNX_GRAPH, WEIGHTS

# sentence-transformers applies a sigmoid to 1-logit models unless config.json names another function;
# Identity keeps CrossEncoder.predict equal to the logits our own scorer returns
IDENTITY = "torch.nn.modules.linear.Identity"
INSTALL_ONNX = 'pip install "crosstune[onnx]"'
OPSET = 17
# the inputs a cross-encoder's graph may take, named as sentence-transformers' ONNX backend (optimum's
# ORTModelForSequenceClassification) and text-embeddings-inference feed them; the output is "logits"
GRAPH_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# optimum's dynamic-quantisation presets (AutoQuantizationConfig.<name>(is_static=False), what sentence-transformers'
# export_dynamic_quantized_onnx_model applies): u8 activations, per-channel symmetric weights of this type, full
# 8-bit range. Only the AVX2 preset differs: u8 weights, as u8 x u8 is what AVX2's integer kernels do best.
QUANT_WEIGHTS = {"avx512_vnni": "QInt8", "avx512": "QInt8", "avx2": "QUInt8", "arm64": "QInt8"}


def check_format(fmt: str) -> None:
    """An unknown format, or an ONNX one without the libraries that write it, stops before any work."""
    if fmt not in FORMATS:
        raise DataError(f"--format {fmt}: unknown; choose one of {', '.join(FORMATS)}")
    if fmt != "hf":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
            from onnxruntime.quantization import quantize_dynamic  # noqa: F401
            from onnxruntime.transformers.optimizer import optimize_model  # noqa: F401
        except ImportError as e:
            raise DataError(f"--format {fmt} needs the ONNX extra ({e.name or e} is missing): {INSTALL_ONNX}") from None


def quantization_target(cpu_flags: str | None = None, machine: str | None = None) -> str:
    """The int8 preset for this CPU (a key of QUANT_WEIGHTS): ARM, else the widest x86 integer instructions listed."""
    machine = (machine or platform.machine()).lower()
    if machine in ("arm64", "aarch64"):
        return "arm64"
    if cpu_flags is None:
        try:
            cpu_flags = open("/proc/cpuinfo").read()
        except OSError:
            cpu_flags = ""
    flags = set(cpu_flags.split())
    for flag, preset in (("avx512_vnni", "avx512_vnni"), ("avx512f", "avx512")):
        if flag in flags:
            return preset
    return "avx2"


def serving_config(cfg: Config, dev: dict | None) -> dict:
    """The manifest of how this model ranks, read back by `evaluate`, `rerank` and serving: passage format, length,
    the fusion (weights, the depth they were tuned at) and the split that chose the checkpoint and the weights."""
    weight = dev["fusion_weight"] if dev else (cfg.eval.fusion_weight or 0.0)
    bi_weight = dev.get("biencoder_weight", 0.0) if dev else (cfg.eval.biencoder_weight or 0.0)
    selection = ({"split": dev.get("split", cfg.data.dev_split), "queries": dev.get("queries"), "step": dev["step"],
                  "data": cfg.data.path} if dev else None)
    return {"use_title": cfg.data.use_title, "max_length": cfg.model.max_length, "scores": "logits",
            "max_query_tokens": cfg.model.max_query_tokens,  # serving cuts long queries as training did
            "chunking": {"method": cfg.data.chunking, "size": cfg.data.chunk_size, "stride": cfg.data.chunk_stride,
                         "tokenizer": cfg.data.chunk_tokenizer},  # how the passages it was trained on were cut
            "first_stage": {"name": "bm25", **{k: getattr(cfg.bm25, k) for k in ("method", "k1", "b")}},
            "fusion": {"weight": weight, "biencoder": (cfg.eval.biencoder or None) if bi_weight else None,
                       "biencoder_weight": bi_weight, "depth": dev.get("depth", cfg.eval.depth) if dev else None,
                       "source": f"tuned on split {selection['split']!r}" if dev else "the training config's eval.*",
                       "normalisation": "per-query min-max over the reranked candidates",
                       "formula": "weight * bm25 + biencoder_weight * biencoder_cosine + "
                                  "(1 - weight - biencoder_weight) * cross_encoder"},
            "selection": selection}


def export_model(src: Path, out: Path, cfg: Config, dev_metrics: dict | None, fmt: str = "hf") -> dict:
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
    (out / "README.md").write_text(model_card(cfg, dev_metrics, fmt, extra))
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


@contextlib.contextmanager
def quiet():
    """Silence advice meant for interactive use while a graph is made: the exporter's tracer warnings (the traced
    branches are the same for every batch shape; the tests compare scores across shapes) and the quantiser's
    "consider pre-processing" (the fused graph is what it is given on purpose)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def trace_to_onnx(hf: Path, path: Path):
    """torch.onnx.export of the hf folder's model, batch and length dynamic; returns the model's config."""
    import inspect

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    # eager attention traces to the MatMul-Softmax-MatMul pattern onnxruntime's fusion recognises
    model = AutoModelForSequenceClassification.from_pretrained(hf, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(hf)
    sample = tokenizer(["a query", "another query"], ["a passage", "a longer second passage"], padding=True,
                       return_tensors="pt")
    params = list(inspect.signature(model.forward).parameters)
    # the graph's inputs are traced from positional arguments, so they follow forward()'s order
    names = sorted((n for n in GRAPH_INPUTS if n in sample and n in params), key=params.index)
    axes = {n: {0: "batch_size", 1: "sequence_length"} for n in names} | {"logits": {0: "batch_size"}}
    with torch.no_grad():
        torch.onnx.export(model, tuple(sample[n] for n in names), str(path), input_names=names,
                          output_names=["logits"], dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    return model.config


def fuse_graph(src: Path, dst: Path, config, **options) -> None:
    """onnxruntime's bert fusions (attention, layer norm, GELU) of a traced graph, as `--format onnx` makes it;
    `options` change FusionOptions fields (benchmarks/int8_recipes.py times the alternatives)."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    fusion = FusionOptions("bert")
    for key, value in options.items():
        setattr(fusion, key, value)
    # opt_level 1 keeps the saved graph portable across execution providers; a session adds the rest at load
    optimize_model(str(src), model_type="bert", num_heads=getattr(config, "num_attention_heads", 0),
                   hidden_size=getattr(config, "hidden_size", 0), opt_level=1,
                   optimization_options=fusion).save_model_to_file(str(dst))


def quantize_graph(src: Path, dst: Path, preset: str, **overrides) -> None:
    """Dynamic int8 of an ONNX graph with a QUANT_WEIGHTS preset, as `--format onnx-int8` makes it; `overrides`
    change quantize_dynamic's arguments (benchmarks/int8_recipes.py times the alternatives)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    args = {"per_channel": True, "reduce_range": False, "weight_type": getattr(QuantType, QUANT_WEIGHTS[preset]),
            **overrides}
    # the fused ops live in onnxruntime's own domain, where ONNX shape inference finds no output type:
    # they output float, which DefaultTensorType tells the quantiser
    quantize_dynamic(str(src), str(dst), **args, extra_options={
        "WeightSymmetric": True, "ActivationSymmetric": False, "DefaultTensorType": onnx.TensorProto.FLOAT})


def write_onnx(hf: Path, out: Path, fmt: str) -> dict:
    """From an hf export folder, an ONNX folder in `out`: its config and tokenizer files plus the graph at
    onnx/model.onnx (where sentence-transformers' backend="onnx" looks). Made with the tools built for it, in the
    order onnxruntime documents: torch.onnx traces the model; onnxruntime's transformer optimizer fuses attention,
    layer norms and GELU (exact maths, as optimum's O2); for onnx-int8, onnxruntime's dynamic quantiser then stores
    the weights as int8 with the preset for this CPU. (sentence-transformers' export helpers run these same tools
    through optimum-onnx, whose releases require transformers < 4.58, so they cannot run beside transformers 5.)
    Torch weights, card and manifest stay behind: they describe the hf folder. Returns the manifest fields that
    say how the graph was made."""
    check_format(fmt)
    out.mkdir(parents=True, exist_ok=True)
    for f in hf.iterdir():
        if f.is_file() and f.name not in {*WEIGHTS, "README.md", MANIFEST}:
            shutil.copy2(f, out / f.name)
    graph = out / ONNX_GRAPH
    graph.parent.mkdir(exist_ok=True)
    how = {"exporter": f"torch.onnx (TorchScript), opset {OPSET}",
           "optimizer": "onnxruntime.transformers bert fusions (attention, layer norm, GELU), opt_level 1"}
    with tempfile.TemporaryDirectory(prefix="crosstune-onnx-") as scratch, quiet():
        traced, fused = Path(scratch) / "traced.onnx", Path(scratch) / "fused.onnx"
        config = trace_to_onnx(hf, traced)
        fuse_graph(traced, fused, config)
        if fmt == "onnx":
            shutil.move(fused, graph)
        else:
            preset = quantization_target()
            quantize_graph(fused, graph, preset)
            how["quantization"] = (f"dynamic int8 (u8 activations, per-channel {QUANT_WEIGHTS[preset]} weights), "
                                   f"the {preset} preset, chosen from this CPU")
    return {"onnx": how}


def format_note(fmt: str, fields: dict) -> tuple[str, str]:
    """(a paragraph on what this folder holds, the Python lines that load it) for the card."""
    if fmt == "hf":
        return ("A Hugging Face folder: `model.safetensors`, `config.json` (one label), `tokenizer.json`.",
                'from sentence_transformers import CrossEncoder\nmodel = CrossEncoder("path/to/this/folder")')
    how = fields.get("onnx", {})
    made = how.get("optimizer", "") if fmt == "onnx" else f"{how.get('quantization')}; made for this CPU's kind"
    note = (f"An ONNX export ({made}) at `{ONNX_GRAPH}`, with `config.json` and `tokenizer.json`; no torch weights "
            "(fine-tune or run in torch from the hf export). It loads in sentence-transformers' ONNX backend, plain "
            "onnxruntime (inputs `input_ids`, `attention_mask`, `token_type_ids`; output `logits`), and crosstune.")
    if fmt == "onnx-int8":
        note += (" int8 scores are close to, not equal to, the fp32 model's; the fusion weights were tuned with the "
                 "fp32 scores.")
    return note, 'from sentence_transformers import CrossEncoder\nmodel = CrossEncoder("path/to/this/folder", backend="onnx")'


def training_note(cfg: Config, base: str) -> str:
    """What the model learned from and how: queries, negatives, loss, teacher, and what of the base it keeps."""
    from .losses import DISTILL

    kinds = cfg.mining.pseudo_queries
    queries = (f"pseudo-queries made from the corpus itself ({kinds}"
               + (f"; pairs from `{cfg.mining.pseudo_file}`" if cfg.mining.pseudo_file else "") + "), no judged query"
               if kinds and kinds != "none" else f"the judged queries of split `{cfg.data.train_split}`")
    lines = [f"- Queries: {queries}, over `{cfg.data.path}`.",
             f"- Hard negatives: BM25 ({cfg.bm25.method}, k1={cfg.bm25.k1}, b={cfg.bm25.b}) ranks "
             f"{list(cfg.mining.negative_range)} of the top {cfg.mining.depth}, {cfg.mining.num_negatives} per positive."]
    loss = f"- Loss: `{cfg.train.loss}`, groups of 1 positive + {cfg.train.group_size - 1} negatives"
    if cfg.train.loss in DISTILL:
        loss += (f", distilled from the teacher `{cfg.mining.teacher or '?'}` (its scores added at mining)"
                 + (f", mixed {cfg.train.distill_weight} : {1 - cfg.train.distill_weight:.2f} with the listwise loss on the labels"
                    if cfg.train.distill_weight < 1 else ""))
    lines.append(loss + ".")
    if cfg.model.layers:
        lines.append(f"- A student: the first {cfg.model.layers} transformer layers of `{base}`, the rest dropped "
                     "(config.json's num_hidden_layers says so; it loads as any model of its architecture).")
    frozen = (["embeddings"] if cfg.model.freeze_embeddings else []) + (
        [f"layers 0-{cfg.model.freeze_layers - 1}"] if cfg.model.freeze_layers else [])
    if frozen:
        lines.append(f"- Kept as `{base}` had them: {', '.join(frozen)}.")
    return "\n".join(lines)


def model_card(cfg: Config, dev_metrics: dict | None, fmt: str = "hf", fields: dict | None = None) -> str:
    base = "sentence-transformers/all-MiniLM-L6-v2" if cfg.model.name == DEFAULT_BASE else cfg.model.name
    if dev_metrics:
        from .metrics import format_table

        metrics = (f"Split `{dev_metrics.get('split', cfg.data.dev_split)}` (the one that chose this checkpoint and "
                   f"the fusion weights, so these figures are in-sample), BM25 top-{dev_metrics.get('depth')} reranked, step "
                   f"{dev_metrics['step']}; `reranked` fuses BM25 with weight {dev_metrics['fusion_weight']}"
                   + (f" and the bi-encoder with weight {dev_metrics['biencoder_weight']}"
                      if dev_metrics.get("biencoder_weight") else "") + ", "
                   f"`cross-encoder` is this model alone:\n\n{format_table(dev_metrics)}")
    else:
        metrics = "No dev evaluation was run for this model."
    fusion = serving_config(cfg, dev_metrics)["fusion"]
    weight, bi_weight = fusion["weight"], fusion["biencoder_weight"]
    # the bundled base is all-MiniLM-L6-v2: name it as the Hub does, so a server can fetch the same bi-encoder
    bi_name = "sentence-transformers/all-MiniLM-L6-v2" if fusion["biencoder"] == DEFAULT_BASE else fusion["biencoder"]
    bi_term = f" + {bi_weight} * cosine(bi-encoder `{bi_name}`)" if bi_weight else ""
    title_note = "`<title>: <text>`" if cfg.data.use_title else "the passage text alone"
    folder_note, load = format_note(fmt, fields or {})
    tags = "cross-encoder, reranker, crosstune" + (", onnx" if fmt != "hf" else "")
    return f"""---
base_model: {base}
library_name: sentence-transformers
pipeline_tag: text-ranking
tags: [{tags}]
---
# Cross-encoder reranker: {cfg.run.name}

Fine-tuned with crosstune from `{base}` as a cross-encoder (one relevance logit per query-passage pair).

## Format: {fmt}
{folder_note} `crosstune.json` lists every file's sha256; crosstune checks them when it loads the folder.

## Scores
Scores are **raw logits**, not probabilities: higher means more relevant, and only their order within a
query matters. `config.json` sets sentence-transformers' `activation_fn` to Identity, so
`CrossEncoder.predict` returns the same logits; apply a sigmoid yourself if you want values in (0, 1).

crosstune ranks by `{weight} * bm25{bi_term} + {1 - weight - bi_weight:.2f} * logit`, each min-max normalised over
a query's candidates (weights tuned on dev; `crosstune.json` carries them). With weights 0 the logits alone rank.

## Inputs
Pairs of (query, passage) where the passage is {title_note}, truncated to {cfg.model.max_length} tokens in
total. `crosstune.json` records this for serving code.

```python
{load}
scores = model.predict([("query", "passage"), ...])
```

## Training
{training_note(cfg, base)}

## Dev metrics
{metrics}

## Training config
```yaml
{to_yaml(cfg).rstrip()}
```
"""
