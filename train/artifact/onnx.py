"""ONNX exports: torch.onnx traces, onnxruntime fuses (attention, layer norm, GELU) and quantises to int8."""
from __future__ import annotations

import contextlib
import logging
import platform
import shutil
import tempfile
import warnings
from pathlib import Path

from crosstune.data.types import DataError
from crosstune.train.artifact.manifest import FORMATS, MANIFEST
from crosstune.train.artifact.model import ONNX_GRAPH, WEIGHTS

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
