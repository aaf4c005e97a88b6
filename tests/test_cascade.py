"""Cascades in the one ranking pipeline, and the configuration chosen under a latency budget, on the tiny model."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from crosstune.data.types import DataError, ranked
from crosstune.train.evaluation.budget import (
    MODEL,
    Chain,
    Inputs,
    choose,
    configurations,
    frontier,
    ndcg,
    ranked_with,
)
from crosstune.train.ranking.cascade import Stage
from crosstune.train.ranking.fusion import Fusion

ROOT = Path(__file__).resolve().parent.parent


def seeded_scorer(tiny_model: str, seed: int, layers: int = 0):
    """The tiny BERT with a fresh head drawn from `seed`: two seeds, two scorers that disagree."""
    import torch

    from crosstune.train.artifact.model import load_model, load_tokenizer
    from crosstune.train.ranking.scorers import CrossEncoderScorer

    torch.manual_seed(seed)
    model = load_model(tiny_model, layers=layers).eval()
    return CrossEncoderScorer(model, load_tokenizer(tiny_model, 64), 64, 16)


@pytest.fixture(scope="module")
def demo(tiny_model):
    """The demo corpus, its dev queries and BM25's top-30 for each."""
    from crosstune.data.bm25 import BM25Config, BM25Index
    from crosstune.data.judgments import load_judgments
    from crosstune.train.config import load_config
    from crosstune.train.ranking.passages import load_passages

    cfg = load_config(ROOT / "configs" / "tiny.yaml", [f"model.name={tiny_model}", f"data.path={ROOT / 'data' / 'demo'}"])
    corpus = load_passages(cfg)
    queries, _ = load_judgments(cfg.data, "dev", corpus)
    index = BM25Index.build(corpus, BM25Config(), progress=False)
    return corpus, queries, index.search(queries, 30)


def test_a_pipeline_without_earlier_stages_ranks_exactly_as_one_rerank(tiny_model, demo):
    from crosstune.train.ranking.candidates import score_candidates, with_tail
    from crosstune.train.ranking.fusion import fuse
    from crosstune.train.ranking.pipeline import RankingPipeline

    corpus, queries, bm25 = demo
    scorer = seeded_scorer(tiny_model, 1)
    ranking = RankingPipeline(scorer, depth=10, fusion=Fusion(0.3), corpus=corpus).rank(bm25, queries, corpus)
    logits = score_candidates(bm25, queries, corpus, scorer, 10)
    assert ranking.stages == () and ranking.cross_encoder == logits
    assert ranking.final == with_tail(fuse(bm25, logits, 0.3), bm25)


def test_a_later_stage_only_reorders_the_top_of_the_stage_before(tiny_model, demo):
    from crosstune.train.ranking.pipeline import RankingPipeline

    corpus, queries, bm25 = demo
    student, teacher = seeded_scorer(tiny_model, 1, layers=1), seeded_scorer(tiny_model, 2)
    pipe = RankingPipeline(teacher, depth=5, fusion=Fusion(0.2), corpus=corpus,
                           stages=(Stage("student", student, 15, Fusion(0.1)),))
    ranking = pipe.rank(bm25, queries, corpus)
    moved = 0
    for q in queries:
        final, first, base = ranked(ranking.final[q]), ranked(ranking.stages[0][q]), ranked(bm25[q])
        assert set(first[:15]) == set(base[:15]) and first[15:] == base[15:]  # the student reorders BM25's top-15
        assert set(final[:5]) == set(first[:5]) and final[5:] == first[5:]  # the teacher, the student's top-5
        assert set(ranking.cross_encoder[q]) == set(first[:5])  # and scores nothing else
        moved += first[:5] != base[:5]
    assert moved  # the student's order is not BM25's: the teacher read what the student chose


def test_a_cascade_whose_depths_grow_is_refused(tiny_model):
    from crosstune.train.ranking.pipeline import RankingPipeline

    scorer = seeded_scorer(tiny_model, 1)
    with pytest.raises(DataError, match="reads the top 20 of stage 'student', which keeps 10"):
        RankingPipeline(scorer, depth=20, stages=(Stage("student", scorer, 10, Fusion()),))


# -- the choice, replayed from scores (pure) -------------------------------------------------------------------------
def inputs() -> Inputs:
    """Two queries whose one relevant passage BM25 ranks 8th: the model finds it whenever it reads it, the student
    lifts it into its own top 5 when it reads 10."""
    docs = [f"d{i}" for i in range(10)]
    bm25 = {q: {d: 10.0 - i for i, d in enumerate(docs)} for q in ("q1", "q2")}
    model = {q: {d: (5.0 if d == "d7" else -float(i)) for i, d in enumerate(docs)} for q in bm25}
    student = {q: {d: (1.0 if d == "d7" else -float(i)) for i, d in enumerate(docs)} for q in bm25}
    costs = {MODEL: {5: 50.0, 10: 100.0}, "student": {5: 5.0, 10: 10.0}}
    return Inputs({q: {"d7": 1} for q in bm25}, bm25, {MODEL: model, "student": student}, costs, 1.0)


def test_the_most_accurate_configuration_that_fits_is_chosen_and_the_cheaper_on_a_tie():
    data = inputs()
    chains = configurations(["student"], [5, 10], data.costs)
    assert {c.label for c in chains} == {"model@5", "model@10", "student@10 > model@5"}
    chosen, points = choose(data, chains, 70)
    assert chosen.config.label == "student@10 > model@5" and chosen.ndcg == 1.0 and chosen.p95_ms == 61.0
    assert {p.config.label: p.fits for p in points} == {"model@5": True, "model@10": False, "student@10 > model@5": True}
    # no budget: the most accurate; model@10 is as accurate and dearer
    assert choose(inputs(), chains, None)[0].config.label == "student@10 > model@5"
    assert [p.config.label for p in frontier(points)] == ["model@5", "student@10 > model@5"]
    assert choose(inputs(), [Chain(((MODEL, 10),))], None)[0].ndcg == 1.0
    # the chosen weights replayed without tuning give the figure the choice saw
    assert ndcg(data, ranked_with(data, chosen)) == chosen.ndcg


def test_an_impossible_budget_names_the_cheapest_configuration_and_its_cost():
    data = inputs()
    with pytest.raises(DataError, match=r"latency_budget_ms=40: the cheapest configuration \(model@5\) costs 51 ms"):
        choose(data, configurations(["student"], [5, 10], data.costs), 40)


# -- through the commands ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def student(tiny_model, mined_tiny, tmp_path_factory):
    """A 1-layer export of the tiny model: a cheaper stage."""
    from crosstune.train.config import load_config
    from crosstune.train.recipes.export import export_command
    from crosstune.train.recipes.train import train

    root = tmp_path_factory.mktemp("student")
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [
        f"model.name={tiny_model}", f"run.root={root}", f"data.path={ROOT / 'data' / 'demo'}", "run.name=student",
        f"train.dataset={mined_tiny / 'dataset'}", "train.max_steps=1", "data.dev_split=''", "model.layers=1"])
    train(cfg)
    return str(export_command(cfg))


def test_train_chooses_under_a_budget_measured_here_and_evaluate_export_and_search_use_the_choice(
        tiny_cfg, mined_tiny, tiny_model, student, tmp_path):
    from crosstune.train.ranking.pipeline import RankingPipeline
    from crosstune.train.recipes.evaluate import evaluate_command
    from crosstune.train.recipes.export import export_command
    from crosstune.train.recipes.train import train
    from crosstune.train.training.cascade_choice import choose_cascade
    from crosstune.train.training.devcheck import DevSet

    keys = ["run.name=cascade", f"train.dataset={mined_tiny / 'dataset'}", "train.max_steps=2", "train.eval_every=2",
            f"eval.stage_models=[{student}, bi-encoder]", f"eval.biencoder={tiny_model}",
            "eval.candidate_depths=[5, 10, 20]", "eval.latency_queries=5", "eval.depth_curve=[]"]
    cfg = tiny_cfg(*keys)
    summary = train(cfg)  # no budget: the most accurate configuration
    best = Path(cfg.run.root) / "cascade" / "best"
    unbounded = json.loads((best / "cascade.json").read_text())
    assert summary["cascade"] == unbounded["chosen"]["label"] and (best / "frontier.png").is_file()
    assert unbounded["chosen"]["nDCG@10"] == max(p["nDCG@10"] for p in unbounded["points"])
    # a budget between the cheapest and the dearest cost measured in this run: the choice fits it
    costs = sorted(p["p95_ms"] for p in unbounded["points"])
    budget = (costs[0] + costs[-1]) / 2
    cfg = tiny_cfg(*keys, f"eval.latency_budget_ms={budget}")
    from accelerate import Accelerator

    dev = DevSet(cfg, Accelerator(cpu=True))
    chosen = choose_cascade(cfg, dev, best, log=lambda *a: None)
    fits = [p for p in chosen["points"] if p["p95_ms"] <= budget]
    assert chosen["chosen"]["p95_ms"] <= budget and chosen["measured_p95_ms"] > 0
    assert chosen["chosen"]["nDCG@10"] >= max(p["nDCG@10"] for p in fits) - 1e-9
    assert all(p["fits"] == (p["p95_ms"] <= budget) for p in chosen["points"])
    # the export ranks with the chosen chain, its earlier stages copied in
    export = export_command(cfg)
    manifest = json.loads((export / "crosstune.json").read_text())
    chain = chosen["chosen"]["stages"]
    assert [(s["depth"]) for s in manifest["stages"]] == [s["depth"] for s in chain[:-1]]
    assert manifest["fusion"]["depth"] == chain[-1]["depth"] and manifest["cascade"]["budget_ms"] == budget
    pipe = RankingPipeline.load(str(export), tiny_cfg("run.name=cascade"), search=True)
    assert [s.depth for s in pipe.stages] == [s["depth"] for s in chain[:-1]] and pipe.depth == chain[-1]["depth"]
    assert len(pipe.search("what is a lease", k=3)) == 3
    report = evaluate_command(tiny_cfg(*keys), model=str(export), split="dev")
    assert report["cascade"]["chosen"]["label"] == chosen["chosen"]["label"]
    text = (Path(cfg.run.root) / "cascade" / "eval_dev" / "report.md").read_text()
    assert "## Cascade" in text and (Path(cfg.run.root) / "cascade" / "eval_dev" / "frontier.png").is_file()


def cascade_export(tiny_cfg, mined_tiny, student, tmp_path) -> Path:
    """An export whose manifest names the student as its first stage (copied into stages/1, hashed with the rest)."""
    from crosstune.train.artifact.manifest import read_manifest, write_manifest
    from crosstune.train.ranking.cascade import stage_spec
    from crosstune.train.recipes.export import export_command
    from crosstune.train.recipes.train import train

    cfg = tiny_cfg("run.name=staged", f"train.dataset={mined_tiny / 'dataset'}", "train.max_steps=1",
                   "data.dev_split=''")
    train(cfg)
    export = export_command(cfg)
    shutil.copytree(student, export / "stages" / "1")
    fields = {k: v for k, v in read_manifest(export).items() if k != "files"}
    fields["stages"] = [stage_spec("stages/1", 30, Fusion(0.1), export / "stages" / "1")]
    write_manifest(export, fields)
    return export


def test_a_stage_file_changed_or_missing_is_refused_with_the_file_named(tiny_cfg, mined_tiny, student, tmp_path):
    from crosstune.train.artifact.manifest import read_manifest, write_manifest
    from crosstune.train.ranking.pipeline import RankingPipeline

    export = cascade_export(tiny_cfg, mined_tiny, student, tmp_path)
    cfg = tiny_cfg("run.name=staged")
    pipe = RankingPipeline.load(str(export), cfg)
    assert [(s.name, s.depth) for s in pipe.stages] == [("stages/1", 30)]
    changed = export / "stages" / "1" / "tokenizer.json"
    changed.write_text(changed.read_text() + " ")
    with pytest.raises(DataError, match="stages/1/tokenizer.json: sha256 differs"):
        RankingPipeline.load(str(export), cfg)
    # re-hashed on top, the stage's own manifest still names the file
    write_manifest(export, {k: v for k, v in read_manifest(export).items() if k != "files"})
    with pytest.raises(DataError, match="stages/1/tokenizer.json: sha256 differs"):
        RankingPipeline.load(str(export), cfg)
    shutil.rmtree(export / "stages")
    write_manifest(export, {k: v for k, v in read_manifest(export).items() if k != "files"})
    with pytest.raises(DataError, match=r"stage 1 \('stages/1'\): .*stages/1/crosstune.json is missing"):
        RankingPipeline.load(str(export), cfg)


def test_stage_models_are_checked_before_the_run_starts(tiny_cfg, tiny_model, tmp_path):
    from crosstune.train.training.cascade_choice import check_stage_models

    with pytest.raises(DataError, match="eval.stage_models=.*no such folder"):
        check_stage_models(tiny_cfg(f"eval.stage_models=[{tmp_path / 'nowhere'}]"))
    with pytest.raises(DataError, match="names bi-encoder but eval.biencoder is empty"):
        check_stage_models(tiny_cfg("eval.stage_models=[bi-encoder]"))
    with pytest.raises(DataError, match="has no crosstune.json"):
        check_stage_models(tiny_cfg(f"eval.stage_models=[{tiny_model}]"))


def test_serve_warns_when_the_budget_was_measured_on_another_machine():
    from crosstune.train.recipes.serve import machine_warning

    manifest = {"cascade": {"budget_ms": 500, "machine": "Intel Xeon, 2 cores, avx2 avx512f"}}
    assert "unmeasured" in machine_warning(manifest, "AMD EPYC, 2 cores, avx2")
    assert machine_warning(manifest, "Intel Xeon, 2 cores, avx2 avx512f") == ""
    assert machine_warning({}, "AMD EPYC, 2 cores, avx2") == ""
