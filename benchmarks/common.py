"""Shared pieces of the benchmark scripts: paths, timing, machine description, BENCHMARKS.md sections."""
from __future__ import annotations

import os
import platform
import re
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LEGAL = ROOT.parent / "shared" / "datasets" / "legalbench-rag"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores{gpu}; Python {platform.python_version()}, torch {torch.__version__}"


def auto_precision_name() -> str:
    """What crosstune's precision "auto" picks on this machine's CPU (bf16 only where measured faster)."""
    import torch

    from crosstune.train.ranking.scorers import auto_precision

    return {"no": "fp32"}.get(p := auto_precision(torch.device("cpu")), p)


def timed(fn):
    """(result, seconds)."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def read_section(name: str) -> str:
    """The current text between a section's markers in BENCHMARKS.md ('' when absent)."""
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else ""
    found = re.search(re.escape(f"<!-- {name}:begin -->") + r"\n(.*?)\n" + re.escape(f"<!-- {name}:end -->"), text, re.S)
    return found.group(1) if found else ""


def subsections(body: str) -> dict[str, str]:
    """'### N. title' blocks of a section by N: a run of some rows keeps the rows it did not re-run."""
    parts = re.split(r"(?m)^(?=### \d+\. )", body)
    return {re.match(r"### (\d+)\.", p).group(1): p.rstrip() + "\n" for p in parts if re.match(r"### \d+\.", p)}


def write_section(name: str, body: str) -> None:
    """Replace (or append) the block between <!-- name:begin --> and <!-- name:end --> in BENCHMARKS.md."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n\nWritten by the scripts in benchmarks/; do not edit by hand between the markers.\n"
    if begin in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS_MD.write_text(text)


def train_minutes(run: Path) -> float | None:
    """Wall minutes of a run's training loop, its dev checks included (metrics.jsonl's last elapsed_s)."""
    import json

    path = run / "metrics.jsonl"
    if not path.exists():
        return None
    elapsed = [r["elapsed_s"] for r in map(json.loads, path.read_text().splitlines()) if "elapsed_s" in r]
    return elapsed[-1] / 60 if elapsed else None
