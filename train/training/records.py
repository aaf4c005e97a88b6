"""metrics.jsonl: one JSON object a line per log step and per dev check, beside the trackers' own files."""
from __future__ import annotations

import json
from pathlib import Path


def log_metrics(accelerator, out: Path, record: dict) -> None:
    if accelerator.is_main_process:
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
    accelerator.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])
