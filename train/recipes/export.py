"""`crosstune export`: the run's best model as an hf, onnx or onnx-int8 folder with its card and manifest."""
from __future__ import annotations

import json
from pathlib import Path

from crosstune.train.artifact.export import export_model
from crosstune.train.artifact.model import check_model_source
from crosstune.train.artifact.onnx import check_format
from crosstune.train.artifact.outputs import atomic_dir, refuse_existing
from crosstune.train.config import Config, dotted, run_dir, trained_config
from crosstune.train.evaluation.metrics import format_table
from crosstune.train.recipes.common import export_dir, newest_model
from crosstune.train.training.checkpoint import model_folder
from crosstune.train.training.plan import PLAN_FILE


def run_plan(cfg: Config) -> dict | None:
    """The run's train.time_budget plan and what ran (<run>/plan.json), for the card; None without one."""
    path = run_dir(cfg) / PLAN_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def export_command(cfg: Config, source: str | None = None, overwrite: bool = False, fmt: str = "hf") -> Path:
    # 1. the format (and, for ONNX, its libraries), then the source: --checkpoint, else best/, else the latest
    check_format(fmt)
    out = export_dir(cfg, fmt)
    refuse_existing(out, overwrite, "an export")
    src = model_folder(Path(source)) if source else newest_model(cfg, include_export=False)
    src = Path(check_model_source(str(src), "--checkpoint" if source else "model", allow_onnx=False))
    dev = json.loads((src / "dev_metrics.json").read_text()) if (src / "dev_metrics.json").exists() else None
    # the manifest and the card describe the model as trained: the run's own config, not this command's
    if not source:
        cfg, differ = trained_config(cfg)
        if differ:
            shown = ", ".join(f"{k}={dotted(cfg, k)}" for k in differ[:6]) + (", ..." if len(differ) > 6 else "")
            print(f"export | as the run trained ({run_dir(cfg) / 'config.yaml'}; this command's config differs): {shown}")
    # 2. write the folder atomically
    with atomic_dir(out) as tmp:
        export_model(src, tmp, cfg, dev, fmt, format_table(dev) if dev else "", run_plan(cfg) if not source else None)
    loads = ("transformers and sentence_transformers.CrossEncoder" if fmt == "hf" else
             'onnxruntime and sentence_transformers.CrossEncoder(path, backend="onnx")')
    print(f"export | {src} -> {out} ({fmt}; logits; loads in {loads})")
    return out
