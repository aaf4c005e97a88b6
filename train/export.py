"""Export: a plain Hugging Face folder that transformers and sentence-transformers load, plus a model card."""
from __future__ import annotations

import json
from pathlib import Path

from crosstune.data.types import DataError

from .config import Config, to_yaml
from .model import DEFAULT_BASE

# sentence-transformers applies a sigmoid to 1-logit models unless config.json names another function;
# Identity keeps CrossEncoder.predict equal to the logits our own scorer returns
IDENTITY = "torch.nn.modules.linear.Identity"


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


def export_model(src: Path, out: Path, cfg: Config, dev_metrics: dict | None) -> None:
    """Write the model, tokenizer (tokenizer.json), crosstune.json and README.md into `out`."""
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
    (out / "crosstune.json").write_text(json.dumps(serving_config(cfg, dev_metrics), indent=1))
    (out / "README.md").write_text(model_card(cfg, dev_metrics))


def model_card(cfg: Config, dev_metrics: dict | None) -> str:
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
    return f"""---
base_model: {base}
library_name: sentence-transformers
pipeline_tag: text-ranking
tags: [cross-encoder, reranker, crosstune]
---
# Cross-encoder reranker: {cfg.run.name}

Fine-tuned with crosstune from `{base}` as a cross-encoder (one relevance logit per query-passage pair).

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
from sentence_transformers import CrossEncoder
model = CrossEncoder("path/to/this/folder")
scores = model.predict([("query", "passage"), ...])
```

## Data
Corpus and judgments from `{cfg.data.path}` (split `{cfg.data.train_split}`); hard negatives mined with
BM25 ({cfg.bm25.method}, k1={cfg.bm25.k1}, b={cfg.bm25.b}) from ranks {list(cfg.mining.negative_range)} of the
top {cfg.mining.depth}, {cfg.mining.num_negatives} per positive.

## Dev metrics
{metrics}

## Training config
```yaml
{to_yaml(cfg).rstrip()}
```
"""
