"""Choose on one split, report on another: the holdout carved from train, in-sample labels, fusion settings."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from crosstune.data.loading import load_corpus, load_split
from crosstune.data.splits import carve_holdout, document_of, held_out_passages, query_groups
from crosstune.data.types import DataError, Doc
from crosstune.train.config import run_dir
from crosstune.train.evaluation.tuning import tune_weights
from crosstune.train.recipes.evaluate import evaluate_command
from crosstune.train.recipes.export import export_command
from crosstune.train.recipes.mine import mine_command
from crosstune.train.recipes.train import train

CORPUS = {f"{d}#{k}": Doc(d, f"text {d} {k}") for d in ("nda", "lease", "policy", "merger") for k in range(3)}
QRELS = {
    "q1": {"nda#0": 1, "lease#2": 0},  # a judged non-relevant passage links nothing
    "q2": {"nda#1": 1},                # shares the nda with q1
    "q3": {"lease#1": 1, "policy#0": 1},
    "q4": {"policy#2": 1},             # linked to q3 through the policy
    "q5": {"merger#0": 1},
}


def test_document_of_reads_the_id_then_the_title():
    assert document_of("privacy_qa/Keep#12", {}) == "privacy_qa/Keep"
    assert document_of("a#b#3", {}) == "a#b"
    assert document_of("contract-nda-1", {"contract-nda-1": Doc("Mutual NDA", "x")}) == "Mutual NDA"
    assert document_of("p1", {"p1": Doc("", "x")}) == "p1"


def test_queries_sharing_a_document_stay_together():
    assert query_groups(QRELS, CORPUS) == [["q1", "q2"], ["q3", "q4"], ["q5"]]
    for seed in range(10):
        held = carve_holdout(QRELS, CORPUS, 1, seed)
        assert held in ({"q1", "q2"}, {"q3", "q4"}, {"q5"})
        assert carve_holdout(QRELS, CORPUS, 1, seed) == held  # seeded: the same every time
        passages = held_out_passages(held, QRELS, CORPUS)
        docs = {document_of(d, CORPUS) for d in passages}
        trained = {document_of(d, CORPUS) for q in set(QRELS) - held for d, r in QRELS[q].items() if r > 0}
        assert docs and not docs & trained  # no document on both sides
        assert passages == {d for d in CORPUS if document_of(d, CORPUS) in docs}  # every passage of those documents
    assert len(carve_holdout(QRELS, CORPUS, 100, 0)) < len(QRELS)  # never all of train


def test_holdout_split_and_mining_keep_held_documents_out_of_training(tiny_cfg):
    cfg = tiny_cfg("data.dev_split=holdout", "data.holdout_queries=20")
    corpus = load_corpus(cfg.data)
    train_q, _ = load_split(cfg.data, "train", corpus)
    held_q, held_qrels = load_split(cfg.data, "holdout", corpus)
    full = tiny_cfg()  # dev_split: dev, so train is whole
    all_q, _ = load_split(full.data, "train", corpus)
    assert len(held_q) >= 20 and not set(train_q) & set(held_q) and set(train_q) | set(held_q) == set(all_q)
    stats = mine_command(cfg)
    assert stats["passages_excluded"] > 0
    from datasets import load_from_disk

    rows = load_from_disk(str(run_dir(cfg) / "mined" / "dataset")).to_list()
    held_passages = held_out_passages(set(held_q), held_qrels, corpus, cfg.data.document_separator)
    seen = {r["positive_id"] for r in rows} | {d for r in rows for d in r["negative_ids"]}
    assert not seen & held_passages and not {r["query_id"] for r in rows} & set(held_q)


def test_a_fixed_weight_stays_fixed_while_the_other_is_tuned():
    qrels = {"q": {"a": 1}}
    bm25 = {"q": {"a": 1.0, "b": 3.0, "c": 2.0}}
    ce = {"q": {"a": 0.0, "b": 1.0, "c": 0.5}}
    bi = {"q": {"a": 1.0, "b": 0.0, "c": 0.0}}
    weight, bi_weight, _ = tune_weights(qrels, bm25, ce, bi, weight=0.3)
    assert weight == 0.3 and bi_weight > 0
    weight, bi_weight, _ = tune_weights(qrels, bm25, ce, bi, biencoder_weight=0.0)
    assert bi_weight == 0.0
    assert tune_weights(qrels, bm25, ce, bi, weight=0.1, biencoder_weight=0.2)[:2] == (0.1, 0.2)


def test_dev_check_keeps_a_fixed_bm25_weight(tiny_cfg, mined_tiny, tiny_model):
    cfg = tiny_cfg(f"train.dataset={mined_tiny / 'dataset'}", f"eval.biencoder={tiny_model}", "train.max_steps=2",
                   "eval.fusion_weight=0.25")
    train(cfg)
    dev = json.loads((run_dir(cfg) / "best" / "dev_metrics.json").read_text())
    assert dev["fusion_weight"] == 0.25 and dev["split"] == "dev" and dev["depth"] == cfg.eval.depth


def test_reports_say_which_split_chose_and_label_in_sample(tiny_cfg, mined_tiny, capsys):
    cfg = tiny_cfg(f"train.dataset={mined_tiny / 'dataset'}", "train.max_steps=2")
    train(cfg)
    out = run_dir(cfg)
    # best/ carries the fusion it was chosen with: evaluating it before export ranks the same way
    manifest = json.loads((out / "best" / "crosstune.json").read_text())
    assert manifest["selection"]["split"] == "dev" and manifest["fusion"]["depth"] == cfg.eval.depth
    report = evaluate_command(cfg, model=str(out / "best"))
    assert report["selection"] == {"chosen_on": "dev", "reported_on": "test", "in_sample": False,
                                   "note": report["selection"]["note"]}
    assert "crosstune.json" in report["fusion_source"] and report["fusion_weight"] == manifest["fusion"]["weight"]
    export = export_command(cfg)
    inside = evaluate_command(cfg, model=str(export), split="dev")
    assert inside["selection"]["in_sample"] is True
    assert "IN-SAMPLE" in (out / "eval_dev" / "report.md").read_text()
    assert "warning: IN-SAMPLE" in capsys.readouterr().out
    assert "IN-SAMPLE" not in (out / "eval_test" / "report.md").read_text()


def test_tuned_weights_are_not_applied_at_another_depth(tiny_cfg, mined_tiny):
    cfg = tiny_cfg(f"train.dataset={mined_tiny / 'dataset'}", "train.max_steps=2", "eval.fusion_weight=0.3",
                   "eval.biencoder_weight=0")
    train(cfg)
    export = export_command(cfg)
    deeper = tiny_cfg(f"train.dataset={mined_tiny / 'dataset'}", "eval.depth=25")
    with pytest.raises(DataError, match=r"tuned on BM25 top-20 but eval.depth=25"):
        evaluate_command(deeper, model=str(export))
    # weights given explicitly are the user's choice at any depth
    fixed = tiny_cfg(f"train.dataset={mined_tiny / 'dataset'}", "eval.depth=25", "eval.fusion_weight=0.1",
                     "eval.biencoder_weight=0")
    report = evaluate_command(fixed, model=str(export), overwrite=True)
    assert report["fusion_weight"] == 0.1 and "config" in report["fusion_source"]


def test_legal_configs_choose_on_a_holdout_and_report_dev():
    from crosstune.train.config import load_config

    root = Path(__file__).resolve().parent.parent
    for name in ("legal.yaml", "legal-gpu.yaml"):
        cfg = load_config(root / "configs" / name)
        assert cfg.data.dev_split == "holdout" and cfg.data.test_split == "dev", name
