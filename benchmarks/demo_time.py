"""`crosstune demo` end to end, timed: on this CPU as it is, and with torch's and oneDNN's kernels capped at AVX2
(ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2: what an AVX2-only CPU runs; the clock and caches stay this
machine's, so a real AVX2-only CPU may be slower still, which the demo's time budget absorbs).

    python benchmarks/demo_time.py            # both, one after the other (~10 min)
    python benchmarks/demo_time.py --modes native

Each run is `crosstune demo` in a fresh folder; its wall time is measured around the command.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine, write_section  # noqa: E402

MODES = {"native": {}, "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}
PLAN = re.compile(r"~(\d+) steps.*?(\d+) dev check.*?measured here: ([\d.]+) s a step, ([\d.]+) ms a scored pair")


def run(mode: str) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"crosstune-demo-{mode}-"))
    t0 = time.time()
    out = subprocess.run([sys.executable, "-m", "crosstune.train", "demo"], cwd=folder, env={**os.environ,
                         **MODES[mode]}, check=True, capture_output=True, text=True).stdout
    wall = time.time() - t0
    report = json.loads((folder / "checkpoints" / "demo" / "eval_test" / "report.json").read_text())
    plan = json.loads((folder / "checkpoints" / "demo" / "plan.json").read_text())
    m = report["metrics"]["nDCG@10"]
    return {"mode": mode, "wall_s": round(wall, 1), "steps": plan["ran_steps"], "step_s": plan["step_s"],
            "pair_ms": round(plan["pair_s"] * 1000, 1), "checks": plan["checks"], "precision": report["precision"],
            "bm25": m["BM25"], "fused": m["reranked"], "alone": m["cross-encoder"],
            "p": report["p_values"]["reranked"]["nDCG@10"], "machine": plan["machine"], "stdout": out[-2000:]}


def table(rows: list[dict]) -> str:
    lines = [f"Ran on: {machine()}, {time.strftime('%Y-%m-%d')}. `crosstune demo` from an empty folder (train.time_budget "
             "4m30s for training, its dev checks, the export and the evaluation; at most 165 steps), 30 held-out test "
             "queries that chose nothing; the 15 dev queries chose the checkpoint and the fusion weights.", "",
             "| kernels | wall, whole demo | steps run | s a step | ms a scored pair | dev checks | precision (auto) | "
             "nDCG@10 BM25 -> fused (p) | cross-encoder alone |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['mode']} ({r['machine']}) | {r['wall_s'] / 60:.1f} min | {r['steps']} | {r['step_s']:.2f} | "
                     f"{r['pair_ms']} | {r['checks']} | {r['precision']} | {r['bm25']:.3f} -> {r['fused']:.3f} "
                     f"(p={r['p']:.2g}) | {r['alone']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", default="native,avx2")
    args = ap.parse_args()
    rows = []
    for mode in args.modes.split(","):
        print(f"demo_time | {mode}: crosstune demo", flush=True)
        rows.append(run(mode))
        print(rows[-1]["stdout"][-400:], flush=True)
    text = table(rows)
    print(text)
    write_section("The first five minutes: `crosstune demo` (`python benchmarks/demo_time.py`)", text)


if __name__ == "__main__":
    main()
