"""README.md of an export: base model, format, how scores are read and fused, training, dev metrics, config."""
from __future__ import annotations

from crosstune.train.artifact.manifest import serving_config
from crosstune.train.artifact.model import DEFAULT_BASE, ONNX_GRAPH
from crosstune.train.config import Config, to_yaml
from crosstune.train.config.checks import DISTILL


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


def budget_note(plan: dict | None) -> str:
    """train.time_budget's plan beside what ran: the card says how the step count was chosen."""
    if not plan:
        return ""
    from crosstune.train.config.checks import format_duration

    ran = (f"; ran {plan['ran_steps']} steps in {format_duration(plan['ran_s'])} (ended by {plan['ended_by']}, "
           "the export after it not counted)" if plan.get("ran_steps") is not None else "")
    return (f"\n- Time budget: {format_duration(plan['budget_s'])} (`train.time_budget`). Measured on the training "
            f"machine ({plan.get('machine') or 'not recorded'}): {plan['step_s']:.2f} s a step, {plan['pair_s'] * 1000:.1f} ms a scored pair; planned "
            f"{plan['steps']} steps and {plan['checks']} dev check(s), every {plan['eval_every']} steps{ran}.")


def dev_section(cfg: Config, dev_metrics: dict | None, dev_table: str) -> str:
    """The card's dev metrics: which split chose, at what depth and step, with which weights; in-sample, said so."""
    if not dev_metrics:
        return "No dev evaluation was run for this model."
    bi = (f" and the bi-encoder with weight {dev_metrics['biencoder_weight']}"
          if dev_metrics.get("biencoder_weight") else "")
    return (f"Split `{dev_metrics.get('split', cfg.data.dev_split)}` (the one that chose this checkpoint and the "
            f"fusion weights, so these figures are in-sample), BM25 top-{dev_metrics.get('depth')} reranked, step "
            f"{dev_metrics['step']}; `reranked` fuses BM25 with weight {dev_metrics['fusion_weight']}{bi}, "
            f"`cross-encoder` is this model alone:\n\n{dev_table}")


def cascade_note(fields: dict) -> str:
    """The card's account of a cascade chosen under a latency budget: what it chose from, on which split and CPU."""
    c = fields.get("cascade")
    if not c:
        return ""
    budget = f"the most accurate whose p95 fits {c['budget_ms']:g} ms" if c.get("budget_ms") else "the most accurate"
    rows = "\n".join(f"| {p['label']}{' (chosen)' if p['label'] == c['chosen']['label'] else ''} | {p['nDCG@10']:.4f} | "
                     f"{p['p95_ms']:.0f} |" for p in c["points"] if p.get("frontier") or p["label"] == c["chosen"]["label"])
    stages = " -> ".join([f"BM25 top-{c['chosen']['stages'][0]['depth']}"]
                         + [f"{s['name']} (top {s['depth']})" for s in c["chosen"]["stages"]])
    return f"""
## Cascade (chosen under a latency budget)
{stages}: {budget} of {len(c['points'])} configurations (rerank depths, earlier stages, fusion weights tuned at each),
chosen on split `{c['split']}` ({c['queries']} queries; its figures are in-sample). p95 a query measured on
{c['machine']}: {c['chosen']['p95_ms']:.0f} ms estimated, {c['measured_p95_ms']:.0f} ms end to end
({c['latency_queries']} queries one at a time). `model` is this folder's model; `stages/N` are copies of the
earlier stages' exports. Another CPU has other costs: choose again there (`crosstune serve` warns).
`frontier.png` plots every configuration.

| configuration (scorer@depth, cheapest first) | nDCG@10 | p95 ms |
|---|---|---|
{rows}
"""


def model_card(cfg: Config, dev_metrics: dict | None, fmt: str = "hf", fields: dict | None = None,
               dev_table: str = "", plan: dict | None = None) -> str:
    """README.md of an export; `dev_table` is the dev metrics as the reports lay them out (made by the caller: the
    tables belong to evaluation/, a floor above this one)."""
    base = "sentence-transformers/all-MiniLM-L6-v2" if cfg.model.name == DEFAULT_BASE else cfg.model.name
    metrics = dev_section(cfg, dev_metrics, dev_table)
    fields_served = serving_config(cfg, dev_metrics)
    fusion = fields_served["fusion"]
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
{training_note(cfg, base)}{budget_note(plan)}

## Dev metrics
{metrics}
{cascade_note(fields_served)}
## Training config
```yaml
{to_yaml(cfg).rstrip()}
```
"""
