"""`crosstune adapt PATH`: a folder of documents to a served reranker in one command, inside a time budget.

Every step is an existing command on a written config, <run>/adapt.yaml (commands.sh lists them, to rerun or edit):
  1. <run>/collection/: the documents (linked, not copied) with the queries and judgments given (copied);
  2. pseudo-queries from the documents: mine, train (its share of the budget), export. BENCHMARKS.md ("Few or no
     labels"): pseudo-queries first, then the judged queries, beat the judged queries alone (0.350 vs 0.303 nDCG@10
     alone on legalbench-rag dev), so with judged queries this is the warm-up;
  3. with judged queries: mine them, train from the warm-up's export for the rest of the budget, a holdout of them
     (whole documents at a time) choosing the checkpoint and the fusion weights;
  4. export hf and onnx-int8; evaluate the test split (--test-qrels, or a handful of judged queries too few to train
     on), which chose nothing.
<run>/adapt.json records what finished and the time it took: run again, adapt resumes where it stopped.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from crosstune.data.readers import read_qrels_tsv, read_tsv_pairs
from crosstune.data.types import DataError
from crosstune.train.artifact.outputs import write_atomic
from crosstune.train.config import Config, load_config, mined_dir, run_dir
from crosstune.train.config.checks import format_duration, parse_duration
from crosstune.train.recipes.adapt_steps import run_steps, steps_for

ADAPT_CONFIG = Path(__file__).resolve().with_name("adapt.yaml")
STATE = "adapt.json"
MIN_TRAIN_QUERIES = 20  # fewer judged queries cannot both train and choose: they are reported instead


@dataclass
class Inputs:
    """What `crosstune adapt` was given; a rerun with other inputs is refused (or --overwrite)."""

    path: str
    queries: str = ""
    qrels: str = ""
    test_qrels: str = ""
    budget: str = "30m"


def check_inputs(inp: Inputs) -> None:
    """Every file named exists and the budget parses, before anything is written."""
    if not Path(inp.path).is_dir():
        raise DataError(f"{inp.path}: no such folder; give the folder of documents (PDF, DOCX, HTML, .txt, .md)")
    for flag, value in (("--queries", inp.queries), ("--qrels", inp.qrels), ("--test-qrels", inp.test_qrels)):
        if value and not Path(value).is_file():
            raise DataError(f"{flag} {value}: no such file")
    if bool(inp.queries) != bool(inp.qrels or inp.test_qrels):
        raise DataError("--queries and --qrels go together: the queries' texts and their judgments (query-id<TAB>"
                        "doc-id<TAB>score, doc ids as the files' paths below the folder without the suffix)")
    try:
        if parse_duration(inp.budget) <= 0:
            raise ValueError
    except ValueError:
        raise DataError(f"--budget {inp.budget!r}: give a duration such as 10m, 30m or 1h30m") from None


def write_queries(src: Path, dst: Path) -> None:
    """queries.jsonl as BEIR has it, from JSON lines (copied) or id<TAB>text lines."""
    if src.name.endswith((".jsonl", ".jsonl.gz")):
        shutil.copyfile(src, dst.with_name("queries.jsonl.gz" if src.suffix == ".gz" else "queries.jsonl"))
        return
    rows = read_tsv_pairs(src, "query")  # a bad line or a repeated id is named with its line
    dst.write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in rows.items()), encoding="utf-8")


def make_collection(run: Path, inp: Inputs) -> Path:
    """<run>/collection/: corpus -> the documents, queries.jsonl, qrels/train.tsv and qrels/test.tsv."""
    out = run / "collection"
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    link = out / "corpus"
    if not link.exists():
        link.symlink_to(Path(inp.path).resolve(), target_is_directory=True)
    if inp.queries:
        write_queries(Path(inp.queries), out / "queries.jsonl")
    for split, src in (("train", inp.qrels), ("test", inp.test_qrels)):
        if src:
            read_qrels_tsv(Path(src))  # one line naming the bad row, before any training
            shutil.copyfile(src, out / "qrels" / f"{split}.tsv")
    return out


def mode(inp: Inputs) -> str:
    """pseudo (no judgments), pseudo+test (too few to train on: they are reported), pseudo+judged."""
    if not inp.qrels:
        return "pseudo"
    n = len(read_qrels_tsv(Path(inp.qrels)))
    return "pseudo+judged" if n >= MIN_TRAIN_QUERIES or inp.test_qrels else "pseudo+test"


def write_config(run: Path, inp: Inputs, how: str, base: Path, overrides: list[str]) -> Path:
    """<run>/adapt.yaml: the recipe with the collection, the run folders and the splits this input (`how`) allows."""
    conf = yaml.safe_load(base.read_text(encoding="utf-8"))
    data = conf.setdefault("data", {})
    data["path"] = str(run / "collection")
    conf["run"] = {"root": str(run), "name": "judged" if how == "pseudo+judged" else "pseudo"}
    if how == "pseudo+judged":
        n = len(read_qrels_tsv(Path(inp.qrels)))
        data["holdout_queries"] = min(int(data.get("holdout_queries", 60)), max(4, n // 5))
    else:
        # nothing can tune the fusion weights: BM25 0.3 and the bi-encoder 0.5, within the ranges legalbench-rag's
        # holdouts chose (BENCHMARKS.md: BM25 0.1-0.45, bi-encoder 0.4-0.6)
        data["dev_split"] = ""
        conf.setdefault("eval", {}).update(fusion_weight=0.3, biencoder_weight=0.5)
        if how == "pseudo+test":
            shutil.move(str(run / "collection" / "qrels" / "train.tsv"), run / "collection" / "qrels" / "test.tsv")
    # the overrides are written in, so adapt.yaml alone is the recipe that ran (commands.sh needs nothing else)
    merged = OmegaConf.to_container(OmegaConf.merge(OmegaConf.create(conf), OmegaConf.from_dotlist(overrides)))
    path = run / "adapt.yaml"
    write_atomic(path, yaml.safe_dump(merged, sort_keys=False))
    load_config(path)  # a bad key or value stops here, before any step
    return path


def load_state(run: Path) -> dict:
    path = run / STATE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def prepare(inp: Inputs, run: Path, base: Path, overrides: list[str], overwrite: bool) -> dict:
    """The run folder and its state: new, resumed (same inputs), or refused."""
    state = load_state(run)
    if state and state.get("inputs") != asdict(inp) and not overwrite:
        raise DataError(f"{run} was adapted from other inputs ({state.get('inputs')}); pass --overwrite to start "
                        "over or --name for a new run")
    if state and not overwrite:
        print(f"adapt | resuming {run}: done {', '.join(state['done']) or 'nothing yet'}; "
              f"{format_duration(state['spent_s'])} of {inp.budget} spent; settings from {run / 'adapt.yaml'} as "
              "written (edit it to change them)")
        return state
    if run.exists() and any(run.iterdir()):
        if not overwrite:
            raise DataError(f"{run} already exists and is no adapt run; pass --overwrite or --name for a new run")
        aside = run.with_name(f".{run.name}.previous")  # removed once the new run has written its first output
        shutil.rmtree(aside, ignore_errors=True)
        run.rename(aside)
    run.mkdir(parents=True, exist_ok=True)
    make_collection(run, inp)
    how = mode(inp)
    write_config(run, inp, how, base, overrides)
    state = {"inputs": asdict(inp), "mode": how, "done": [], "spent_s": 0.0, "seconds": {}}
    write_atomic(run / STATE, json.dumps(state, indent=2))
    return state


def adapt_command(inp: Inputs, name: str, root: str = "checkpoints", overrides: list[str] | None = None,
                  overwrite: bool = False, base: str | None = None) -> dict:
    overrides = list(overrides or [])
    check_inputs(inp)
    run = Path(root) / name
    state = prepare(inp, run, Path(base) if base else ADAPT_CONFIG, overrides, overwrite)
    config = run / "adapt.yaml"
    steps = steps_for(state["mode"], config, [])
    (run / "commands.sh").write_text("#!/usr/bin/env bash\n# what crosstune adapt ran, step by step\nset -e\n"
                                     + "".join(f"{s.command}\n" for s in steps), encoding="utf-8")
    deadline = time.time() + parse_duration(inp.budget) - state["spent_s"]
    print(f"adapt | {state['mode']}: {len(steps)} steps within {inp.budget} (done by "
          f"{time.strftime('%H:%M:%S', time.localtime(deadline))}); config {config}, commands {run / 'commands.sh'}")
    run_steps(steps, state, run, deadline)
    shutil.rmtree(run.with_name(f".{run.name}.previous"), ignore_errors=True)
    return finish(state, config, inp)


def finish(state: dict, config: Path, inp: Inputs) -> dict:
    """The figures, the serve line and the report path."""
    cfg: Config = load_config(config)
    final = run_dir(cfg)
    served = final / "export-onnx-int8"
    print(f"\nadapt | done in {format_duration(state['spent_s'])} of {inp.budget} "
          f"({', '.join(f'{k} {format_duration(v)}' for k, v in state['seconds'].items())})")
    report = final / "eval_test" / "report.json"
    if report.is_file():
        from crosstune.train.evaluation.metrics import headline

        result = json.loads(report.read_text(encoding="utf-8"))
        print(f"adapt | {headline(result, 'reranked')} on {result['queries']} test queries that chose nothing; "
              f"report: {report.with_name('report.md')}")
    else:
        print("adapt | no test split (--test-qrels): the holdout chose the checkpoint, so its figures are in-sample; "
              f"see {final / 'best' / 'dev_metrics.json'}" if state["mode"] == "pseudo+judged" else
              "adapt | no judged queries: nothing to evaluate; give --queries and --qrels to measure the model")
    print(f"adapt | serve it: crosstune serve {served} --config {config}\n  (mined data and checkpoints: "
          f"{mined_dir(cfg).parent})")
    return state
