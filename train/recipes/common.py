"""Command recipes: each reads a config, does its numbered steps and writes into checkpoints/<run>/."""
from __future__ import annotations

from pathlib import Path

from crosstune.data import truncation
from crosstune.data.types import DataError
from crosstune.train.config import Config, run_dir
from crosstune.train.training.checkpoint import list_checkpoints


# -- truncation --------------------------------------------------------------------------------------------------
def row_pairs(rows: list[dict]) -> list[tuple[str, str]]:
    """The (query, passage) pairs training reads from mined rows."""
    return [(r["query"], p) for r in rows for p in (r["positive"], *r["negatives"])]


def truncation_report(tokenizer, pairs: list[tuple[str, str]], max_length: int, max_query_tokens: int,
                      where: str) -> dict:
    """Counts of what the model cannot read, printed (as a warning naming the fix when much is cut)."""
    stats = truncation.report(tokenizer, pairs, max_length, max_query_tokens)
    print(f"{where} | {truncation.warning(stats) or truncation.summary(stats)}")
    return stats


def newest_model(cfg: Config, include_export: bool = True) -> Path:
    """A run's newest product: its export, else best/ (best dev nDCG@10), else the latest checkpoint."""
    out = run_dir(cfg)
    for candidate in ([out / "export"] if include_export else []) + [out / "best"]:
        if (candidate / "config.json").exists():
            return candidate
    found = list_checkpoints(out)
    if found:
        return found[-1][1] / "model"
    raise DataError(f"{out} has no trained model; run `crosstune train` first or name a model/checkpoint")


def evaluation_pairs(cfg: Config, split: str) -> int:
    """What `crosstune evaluate` of `split` scores, in (query, passage) pairs: eval.depth for each judged query, and
    the bi-encoder's passages on top (~half a pair's cost each: one text, not two). A time budget reserves them."""
    from crosstune.data.loading import load_qrels

    return int(len(load_qrels(cfg.data, split)) * cfg.eval.depth * (1.5 if cfg.eval.biencoder else 1.0))


def export_dir(cfg: Config, fmt: str = "hf") -> Path:
    """export/ for the hf folder (what evaluate and rerank pick by default); export-onnx/, export-onnx-int8/ beside
    it, so exporting another format never replaces the hf one."""
    return run_dir(cfg) / ("export" if fmt == "hf" else f"export-{fmt}")
