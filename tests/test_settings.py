"""How a loaded model ranks: the one settings resolver (ranking/settings.py), a test per precedence rule; BM25 and
the reranker agreeing on the passage format; an export verified once per load; and the dev check ranking through
exactly the code `crosstune evaluate` runs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from crosstune.data.types import DataError
from crosstune.train.config import Config, load_config
from crosstune.train.ranking.settings import resolve

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "tiny.yaml"
MANIFEST = {"use_title": True, "max_length": 64, "max_query_tokens": 16,
            "first_stage": {"name": "bm25", "method": "lucene", "k1": 0.9, "b": 0.4},
            "fusion": {"weight": 0.3, "biencoder": None, "biencoder_weight": 0.0, "depth": 20, "source": "tuned"}}


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_rule_1_an_override_wins_over_the_manifest():
    cfg = load_config(TINY, ["data.use_title=false", "model.max_query_tokens=8", "bm25.k1=1.2"])
    got = resolve(MANIFEST, cfg, "m")
    assert (got.use_title, got.max_query_tokens, got.bm25.k1) == (False, 8, 1.2)
    assert got.origin["data.use_title"] == got.origin["bm25.k1"] == "override"
    # both weights given on the command line: the user's choice, at any depth
    fixed = resolve(MANIFEST, load_config(TINY, ["eval.depth=50", "eval.fusion_weight=0.1",
                                                  "eval.biencoder_weight=0"]), "m")
    assert (fixed.depth, fixed.fusion.weight, fixed.fusion.depth) == (50, 0.1, 50)
    assert "config" in fixed.fusion.source


def test_rule_2_the_manifest_wins_over_the_config_file(tmp_path):
    path = config_file(tmp_path, "data:\n  use_title: false\nmodel:\n  max_length: 128\nbm25:\n  k1: 2.0\n"
                                 "eval:\n  depth: 50\n  fusion_weight: 0.6\n")
    got = resolve(MANIFEST, load_config(path), "m")
    assert (got.use_title, got.max_length, got.bm25.k1, got.depth) == (True, 64, 0.9, 20)
    assert (got.fusion.weight, got.fusion.depth) == (0.3, 20) and "m/crosstune.json" in got.fusion.source
    assert {o for k, o in got.origin.items() if k != "eval.biencoder"} == {"manifest"}  # it names none


def test_rule_3_the_config_file_fills_what_the_manifest_does_not_record(tmp_path):
    path = config_file(tmp_path, "data:\n  use_title: false\nmodel:\n  max_length: 128\neval:\n  depth: 50\n"
                                 "  fusion_weight: 0.6\n")
    got = resolve({}, load_config(path), "m")
    assert (got.use_title, got.max_length, got.depth, got.fusion.weight) == (False, 128, 50, 0.6)
    assert got.origin["data.use_title"] == "config" and got.fusion.source.endswith("in the config")
    # a manifest that records some keys: those from it, the rest from the file
    partial = resolve({"use_title": True}, load_config(path), "m")
    assert (partial.use_title, partial.max_length) == (True, 128)
    assert (partial.origin["data.use_title"], partial.origin["model.max_length"]) == ("manifest", "config")


def test_rule_4_the_defaults_last():
    got, default = resolve({}, None, "m"), Config()
    assert (got.use_title, got.max_length, got.depth) == (default.data.use_title, default.model.max_length,
                                                          default.eval.depth)
    assert not got.fusion.fused and set(got.origin.values()) == {"default"}


def test_tuned_weights_are_refused_at_an_overridden_depth():
    with pytest.raises(DataError, match="tuned on BM25 top-20 but eval.depth=50"):
        resolve(MANIFEST, load_config(TINY, ["eval.depth=50"]), "m")
    # the weight set to 0 explicitly: nothing tuned is applied, any depth goes
    alone = resolve(MANIFEST, load_config(TINY, ["eval.depth=50", "eval.fusion_weight=0"]), "m")
    assert not alone.fusion.fused and alone.depth == 50


def test_bm25_and_the_reranker_read_passages_alike(tiny_cfg, mined_tiny, tmp_path):
    from crosstune.train.ranking.pipeline import RankingPipeline
    from crosstune.train.recipes.export import export_command
    from crosstune.train.recipes.train import train

    cfg = tiny_cfg(f"train.dataset={mined_tiny / 'dataset'}", "train.max_steps=1", "data.dev_split=''")
    train(cfg)
    export = export_command(cfg)
    assert json.loads((export / "crosstune.json").read_text())["use_title"] is True
    untitled = config_file(tmp_path, f"run:\n  root: {tmp_path}\ndata:\n  path: {ROOT / 'data' / 'demo'}\n"
                                     "  use_title: false\n")
    for loaded, expected in ((load_config(untitled), True), (tiny_cfg("data.use_title=false"), False)):
        pipe = RankingPipeline.load(str(export), loaded, search=True)
        assert pipe.use_title is expected and pipe.index.use_title is expected


def count_hashes(monkeypatch) -> dict[str, int]:
    from crosstune.train.artifact import manifest, model

    counts: dict[str, int] = {}
    real = manifest.sha256

    def counted(path):
        counts[str(path)] = counts.get(str(path), 0) + 1
        return real(path)

    for module in (manifest, model):
        monkeypatch.setattr(module, "sha256", counted)
    model._digest.cache_clear()
    return counts


def test_an_export_and_the_bundled_bi_encoder_are_hashed_once_per_load(tiny_cfg, mined_tiny, monkeypatch):
    from crosstune.train.artifact.model import DEFAULT_BASE
    from crosstune.train.ranking.pipeline import RankingPipeline
    from crosstune.train.recipes.export import export_command
    from crosstune.train.recipes.train import train

    cfg = tiny_cfg("run.name=fused", f"train.dataset={mined_tiny / 'dataset'}", "train.max_steps=1",
                   "data.dev_split=''", f"eval.biencoder={DEFAULT_BASE}", "eval.fusion_weight=0.2",
                   "eval.biencoder_weight=0.3")
    train(cfg)
    export = export_command(cfg)
    listed = json.loads((export / "crosstune.json").read_text())["files"]
    counts = count_hashes(monkeypatch)
    pipe = RankingPipeline.load(str(export), tiny_cfg("run.name=fused"))
    assert pipe.fusion.biencoder == DEFAULT_BASE and pipe.biencoder is not None
    assert {Path(p).relative_to(export).as_posix(): n for p, n in counts.items()
            if Path(p).is_relative_to(export)} == dict.fromkeys(listed, 1)
    base = [n for p, n in counts.items() if not Path(p).is_relative_to(export)]
    assert base == [1]  # the bi-encoder's weights: checked by the loader, loaded without a second hash
    changed = export / "tokenizer.json"
    changed.write_text(changed.read_text() + " ")
    with pytest.raises(DataError, match="tokenizer.json: sha256 differs"):
        RankingPipeline.load(str(export), tiny_cfg("run.name=fused"))


def dev_record(run: Path) -> dict:
    """metrics.jsonl's dev check at the step best/ holds."""
    step = json.loads((run / "best" / "dev_metrics.json").read_text())["step"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return next(r for r in records if r.get("step") == step and "dev/nDCG@10" in r)


def assert_dev_equals_evaluate(run: Path, report: dict) -> None:
    record, figures = dev_record(run), report["metrics"]["nDCG@10"]
    # metrics.jsonl keeps 4 decimals: equal figures round alike
    assert record["dev/nDCG@10"] == round(figures["reranked"], 4)
    assert record["dev/ce_nDCG@10"] == round(figures.get("cross-encoder", figures["reranked"]), 4)
    assert record["dev/bm25_nDCG@10"] == round(figures["BM25"], 4)
    assert record["dev/MRR@10"] == round(report["metrics"]["MRR@10"]["reranked"], 4)


def test_the_dev_figure_is_what_evaluate_reports_on_the_dev_split(tiny_cfg, mined_tiny, tiny_model, tmp_path):
    from crosstune.train.cli import main

    # fp32 in both: the dev check scores in train.precision, evaluate in eval.precision
    args = ["--config", str(TINY), f"model.name={tiny_model}", f"run.root={tmp_path / 'runs'}",
            f"data.path={ROOT / 'data' / 'demo'}", f"train.dataset={mined_tiny / 'dataset'}", "train.max_steps=4",
            "train.eval_every=2", f"eval.biencoder={tiny_model}", "eval.precision=no"]
    assert main(["train", *args]) == 0
    run = tmp_path / "runs" / "tiny"
    assert main(["evaluate", *args, "--split", "dev", "--model", str(run / "best")]) == 0
    report = json.loads((run / "eval_dev" / "report.json").read_text())
    assert report["level"] == "passage" and report["queries"] == json.loads(
        (run / "best" / "dev_metrics.json").read_text())["queries"]
    assert "crosstune.json" in report["fusion_source"]  # ranked with the weights the dev check tuned
    assert_dev_equals_evaluate(run, report)
