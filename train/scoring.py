"""Scorers: anything that maps (query, passage) pairs to relevance scores.

The rerank pipeline only needs `score(pairs)`, so another backend (ONNX, an HTTP service, a teacher)
can implement the same protocol. This module loads plain Hugging Face folders and never imports the trainer.
"""
from __future__ import annotations

import contextlib
import functools
import json
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch

from crosstune.data.batching import tokenize_pairs
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


class CrossEncoderScorer:
    """A sequence-classification model with one logit; scores are raw logits."""

    def __init__(self, model, tokenizer, max_length: int = 256, batch_size: int = 64,
                 precision: str = "no", progress: bool = False, prefetch: int | None = None,
                 max_query_tokens: int = 0):
        self.model, self.tokenizer = model, tokenizer
        self.max_query_tokens = max_query_tokens  # a long query is cut to this many tokens first (0: no budget)
        self.max_length, self.batch_size, self.precision, self.progress = max_length, batch_size, precision, progress
        self.prefetch = prefetch  # batches tokenized ahead by a worker thread; None: 2 on a GPU, 0 on a CPU

    @classmethod
    def from_pretrained(cls, path: str, max_length: int | None = None, device: str | None = None,
                        key: str = "--model", **kwargs):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from .model import check_model_source

        # a checkpoint resolves to its model/ folder; a bad path, config, weights or tokenizer stops here, unloaded
        path = check_model_source(path, key, max_length)
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
        return tokenize_pairs(self.tokenizer, [pairs[i][0] for i in idx], [pairs[i][1] for i in idx], self.max_length,
                              self.max_query_tokens)

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


def read_serving_config(path: str) -> dict:
    """crosstune.json in an export records how passages were formatted for training."""
    f = Path(path) / "crosstune.json"
    return json.loads(f.read_text()) if f.exists() else {}
