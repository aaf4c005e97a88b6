"""Scorers: anything that maps (query, passage) pairs to relevance scores.

The rerank pipeline only needs `score(pairs)`, so another backend (ONNX, an HTTP service, a teacher)
can implement the same protocol. This module loads plain Hugging Face folders and ONNX exports (`load_scorer`
picks by the export's manifest) and never imports the trainer.
"""
from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from crosstune.data.batching import encode_pairs, tokenize_pairs
from crosstune.data.types import DataError


def cpu_has_bf16() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@functools.lru_cache(maxsize=None)
def bf16_faster_on_cpu() -> bool:
    """CPUs that list AVX512-BF16 differ: on this project's AMD EPYC a bf16 step is ~2x fp32, on its Xeon 0.6x.
    Time one GEMM of a MiniLM layer's shape each way (~0.1 s, once a process) instead of trusting the flag."""
    if not cpu_has_bf16():
        return False
    import time

    def seconds(dtype) -> float:
        a, w = torch.randn(1024, 384, dtype=dtype), torch.randn(384, 1536, dtype=dtype)
        for _ in range(2):
            a @ w
        t0 = time.perf_counter()
        for _ in range(8):
            a @ w
        return time.perf_counter() - t0

    return seconds(torch.bfloat16) < 0.8 * seconds(torch.float32)  # bf16 costs precision: only for a clear gain


def auto_precision(device: torch.device) -> str:
    """bf16 on GPUs that have it (else fp16); on a CPU, bf16 where it is measured faster than fp32, else fp32."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if device.type == "cpu" and bf16_faster_on_cpu() else "no"


class Scorer(Protocol):
    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray: ...


def pair_features(scorer, queries: list[str], passages: list[str]) -> dict:
    """A scorer's features for these pairs. While `scorer.pair_tokens` is a dict (a caller that reports usage sets
    one: RankingPipeline.rerank_counted), each pair's tokens before truncation go there from the same tokenizer
    call, so no pair is tokenized twice; else the plain tokenize_pairs, the same features as training's."""
    if scorer.pair_tokens is None:
        return tokenize_pairs(scorer.tokenizer, queries, passages, scorer.max_length, scorer.max_query_tokens)
    feats, lengths = encode_pairs(scorer.tokenizer, queries, passages, scorer.max_length, scorer.max_query_tokens)
    scorer.pair_tokens.update(zip(zip(queries, passages), lengths))
    return feats


def score_sorted(pairs: Sequence[tuple[str, str]], batch_size: int, progress: bool,
                 forward: Callable[[list[str], list[str]], np.ndarray]) -> np.ndarray:
    """Scores in the order of `pairs`, computed by `forward(queries, passages)` over length-sorted batches: sorting
    makes each batch pad to nearly its own length, far less wasted work. Every backend batches the same way."""
    order = np.argsort([-(len(q) + len(d)) for q, d in pairs], kind="stable")
    out = np.empty(len(pairs), dtype=np.float32)
    starts = range(0, len(pairs), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="scoring", unit="batch", leave=False)
    for start in starts:
        idx = order[start:start + batch_size]
        out[idx] = forward([pairs[i][0] for i in idx], [pairs[i][1] for i in idx])
    return out


class CrossEncoderScorer:
    """A sequence-classification model with one logit; scores are raw logits."""

    def __init__(self, model, tokenizer, max_length: int = 256, batch_size: int = 64,
                 precision: str = "no", progress: bool = False, prefetch: int | None = None,
                 max_query_tokens: int = 0):
        self.model, self.tokenizer = model, tokenizer
        self.max_query_tokens = max_query_tokens  # a long query is cut to this many tokens first (0: no budget)
        self.max_length, self.batch_size, self.precision, self.progress = max_length, batch_size, precision, progress
        self.prefetch = prefetch  # batches tokenized ahead by a worker thread; None: 2 on a GPU, 0 on a CPU
        self.pair_tokens: dict | None = None  # a dict: count each scored pair's tokens into it (pair_features)

    @classmethod
    def from_pretrained(cls, path: str, max_length: int | None = None, device: str | None = None,
                        key: str = "--model", verified: bool = False, **kwargs):
        """`verified`: the caller has checked the folder (load_scorer has), so its files are not hashed again."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from crosstune.train.artifact.model import check_model_source

        # a checkpoint resolves to its model/ folder; a bad path, config, weights or tokenizer stops here, unloaded
        if not verified:
            path = check_model_source(path, key, max_length, allow_onnx=False)
        model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32)
        if model.config.num_labels != 1:
            raise DataError(f"{key}={path} has num_labels={model.config.num_labels}; a reranker needs num_labels=1 "
                            "(a crosstune export, checkpoint or another cross-encoder)")
        tokenizer = AutoTokenizer.from_pretrained(path)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model.to(device).eval()
        max_length = max_length or min(int(tokenizer.model_max_length), 512)
        if kwargs.get("precision", "auto") == "auto":
            kwargs["precision"] = auto_precision(torch.device(device))
        if kwargs["precision"] in ("bf16", "fp16"):
            # an inference-only copy can hold half-precision weights: no per-op casts as under autocast
            model.to(torch.bfloat16 if kwargs["precision"] == "bf16" else torch.float16)
        return cls(model, tokenizer, max_length=max_length, **kwargs)

    def autocast(self):
        # a training model keeps fp32 weights and scores under autocast; an exported one is already cast
        if self.precision in ("bf16", "fp16") and next(self.model.parameters()).dtype == torch.float32:
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            return torch.autocast(self.device.type, dtype=dtype)
        return contextlib.nullcontext()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, pairs: Sequence[tuple[str, str]], idx) -> dict:
        return pair_features(self, [pairs[i][0] for i in idx], [pairs[i][1] for i in idx])

    @torch.inference_mode()
    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        # sorting by length makes each batch pad to nearly its own length: far less wasted work
        order = np.argsort([-(len(q) + len(d)) for q, d in pairs], kind="stable")
        batches = [order[s:s + self.batch_size] for s in range(0, len(pairs), self.batch_size)]
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(batches), desc="scoring", unit="batch", leave=False)
        logits = []
        for idx, feats in self.tokenized(pairs, batches):
            feats = {k: v.to(self.device, non_blocking=True) for k, v in feats.items()}
            with self.autocast():
                # kept on the device until the end: no sync per batch, so a GPU queues the next forward pass
                logits.append((idx, self.model(**feats).logits.view(-1)))
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
        out = np.empty(len(pairs), dtype=np.float32)
        for idx, batch_logits in logits:
            out[idx] = batch_logits.float().cpu().numpy()
        return out

    def tokenized(self, pairs, batches):
        """(indices, features) per batch. On a GPU tokenization, not the forward pass, bounds the speed: a worker
        thread tokenizes `prefetch` batches ahead (the Rust tokenizer releases the GIL) while the model runs. On a
        CPU both would share the same cores, so there it tokenizes in line."""
        ahead = self.prefetch if self.prefetch is not None else (2 if self.device.type == "cuda" else 0)
        if ahead <= 0:
            yield from ((idx, self.encode(pairs, idx)) for idx in batches)
            return
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1, thread_name_prefix="tokenize") as pool:
            todo, pending = iter(batches), deque()
            for idx in todo:
                pending.append((idx, pool.submit(self.encode, pairs, idx)))
                if len(pending) > ahead:
                    idx0, fut = pending.popleft()
                    yield idx0, fut.result()
            while pending:
                idx0, fut = pending.popleft()
                yield idx0, fut.result()


def available_cores() -> int:
    """The cores this process may run on: a container or taskset can allow fewer than the machine has."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def onnx_session(graph: Path, device: str):
    """An onnxruntime session on the graph, one intra-op thread per available core."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise DataError(f"{graph}: scoring an ONNX export needs onnxruntime: pip install \"crosstune[onnx]\"") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = available_cores()
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise DataError(f"device={device} but this onnxruntime has no CUDA provider; pip install onnxruntime-gpu "
                            "in its place, or score on the CPU")
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(str(graph), options, providers=providers)
    except Exception as e:  # ort raises its own pybind classes (InvalidProtobuf, Fail...), not one base
        raise DataError(f"{graph}: onnxruntime cannot load it ({str(e).splitlines()[0][:200]}); "
                        "re-export it (crosstune export --format onnx --overwrite)") from None


class OnnxScorer:
    """An ONNX export run by onnxruntime: tokenized and batched as CrossEncoderScorer is; scores are raw logits."""

    def __init__(self, session, tokenizer, max_length: int = 256, batch_size: int = 64,
                 precision: str = "onnx", progress: bool = False, max_query_tokens: int = 0):
        self.session, self.tokenizer, self.max_query_tokens = session, tokenizer, max_query_tokens
        self.pair_tokens: dict | None = None  # a dict: count each scored pair's tokens into it (pair_features)
        self.max_length, self.batch_size, self.precision, self.progress = max_length, batch_size, precision, progress
        # the graph declares what it takes (a model without token types has no token_type_ids input)
        self.inputs = [i.name for i in session.get_inputs()]
        missing = set(self.inputs) - set(tokenize_pairs(tokenizer, ["q"], ["p"], 8))
        if missing:
            raise DataError(f"the ONNX graph takes {sorted(missing)}, which the tokenizer beside it does not produce; "
                            "re-export the model so graph and tokenizer match")

    @classmethod
    def from_folder(cls, folder: str, max_length: int | None = None, batch_size: int = 64, precision: str = "onnx",
                    device: str | None = None, progress: bool = False, max_query_tokens: int = 0) -> "OnnxScorer":
        from transformers import AutoTokenizer

        from crosstune.train.artifact.model import ONNX_GRAPH

        session = onnx_session(Path(folder) / ONNX_GRAPH, device or "cpu")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        max_length = max_length or min(int(tokenizer.model_max_length), 512)
        return cls(session, tokenizer, max_length, batch_size, precision, progress, max_query_tokens)

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        return score_sorted(pairs, self.batch_size, self.progress, self.forward)

    def forward(self, queries: list[str], passages: list[str]) -> np.ndarray:
        feats = pair_features(self, queries, passages)
        logits = self.session.run(None, {name: feats[name].numpy() for name in self.inputs})[0]
        return logits.reshape(-1).astype(np.float32)


def export_format(folder: str) -> str:
    """hf | onnx | onnx-int8: what the manifest says; without one, an ONNX graph and no torch weights is onnx."""
    from crosstune.train.artifact.manifest import read_manifest
    from crosstune.train.artifact.model import ONNX_GRAPH, WEIGHTS

    fmt = read_manifest(folder).get("format")
    if fmt:
        return fmt
    path = Path(folder)
    only_onnx = (path / ONNX_GRAPH).is_file() and not any((path / w).is_file() for w in WEIGHTS)
    return "onnx" if only_onnx else "hf"


def load_scorer(path: str, max_length: int | None = None, batch_size: int = 64, precision: str = "auto",
                device: str | None = None, key: str = "--model", progress: bool = False,
                max_query_tokens: int = 0) -> Scorer:
    """The scorer a model folder asks for: torch for an hf export, a checkpoint or another cross-encoder;
    onnxruntime for an onnx / onnx-int8 export. The manifest's file hashes are verified before anything loads."""
    from crosstune.train.artifact.model import check_model_source

    folder = check_model_source(path, key, max_length)  # resolves a checkpoint to model/, verifies the manifest
    fmt = export_format(folder)
    if fmt == "hf":
        return CrossEncoderScorer.from_pretrained(folder, max_length=max_length, device=device, key=key, verified=True,
                                                  batch_size=batch_size, precision=precision, progress=progress,
                                                  max_query_tokens=max_query_tokens)
    # an ONNX graph's precision was fixed when it was exported; fp32 ("no") is what the onnx format holds
    if precision not in ("auto", fmt) and not (fmt == "onnx" and precision == "no"):
        raise DataError(f"{key}={path} is an {fmt} export, whose precision is fixed at export; precision={precision} "
                        "applies to torch models (set eval.precision: auto)")
    return OnnxScorer.from_folder(folder, max_length, batch_size, fmt, device, progress, max_query_tokens)
