"""The trainer end to end on CPU with a tiny random BERT: loop, resume, accumulation, export, evaluate."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from crosstune.data.types import DataError
from crosstune.train.cli import main
from crosstune.train.config import run_dir
from crosstune.train.recipes.evaluate import evaluate_command
from crosstune.train.recipes.export import export_command
from crosstune.train.recipes.mine import mine_command
from crosstune.train.recipes.rerank import rerank_command
from crosstune.train.recipes.train import train
from crosstune.train.training.checkpoint import list_checkpoints

ROOT = Path(__file__).resolve().parent.parent


def weights(folder) -> dict:
    return load_file(str(folder / "model.safetensors"))


def assert_same_weights(a, b, atol=0.0, skip=()):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in set(wa) - set(skip):
        torch.testing.assert_close(wa[k], wb[k], atol=atol, rtol=0 if atol == 0 else 1e-5, msg=k)


def test_end_to_end_mine_train_export_crossencoder_evaluate(tiny_cfg, capsys):
    cfg = tiny_cfg()
    stats = mine_command(cfg)
    assert stats["rows"] > 0 and stats["queries_used"] <= 165
    summary = train(cfg)
    out = run_dir(cfg)
    assert summary["steps"] == 4
    assert [s for s, _ in list_checkpoints(out)] == [2, 4]
    assert (out / "best" / "dev_metrics.json").exists()
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss"]) for r in records if "loss" in r)

    export = export_command(cfg, source=str(out / "step_000004"))
    config = json.loads((export / "config.json").read_text())
    assert config["num_labels"] == 1 if "num_labels" in config else len(config["id2label"]) == 1
    assert (export / "tokenizer.json").exists() and (export / "README.md").exists()
    assert json.loads((export / "tokenizer_config.json").read_text())["model_max_length"] == cfg.model.max_length

    # the export, the checkpoint and sentence-transformers give the same scores
    from sentence_transformers import CrossEncoder

    from crosstune.train.ranking.scorers import CrossEncoderScorer

    pairs = [("can my landlord raise the rent twice a year?", "Residential Tenancies Act: A landlord must not..."),
             ("how long is location data kept?", "We retain location data for 18 months."),
             ("who pays the supplier?", "The Buyer shall pay all invoices within thirty days.")]
    ours = CrossEncoderScorer.from_pretrained(str(out / "step_000004"), device="cpu", precision="no").score(pairs)
    exported = CrossEncoderScorer.from_pretrained(str(export), device="cpu", precision="no").score(pairs)
    st = CrossEncoder(str(export), device="cpu").predict(pairs)
    np.testing.assert_allclose(ours, exported, atol=1e-5)
    np.testing.assert_allclose(st, ours, atol=1e-4)  # logits, not sigmoid: the card says so
    assert "raw logits" in (export / "README.md").read_text()

    report = evaluate_command(cfg, model=str(export))
    ev = out / "eval_test"
    assert {"report.json", "report.md", "bm25.trec", "reranked.trec", "config.yaml"} <= {p.name for p in ev.iterdir()}
    assert report["queries"] == 30
    assert set(report["metrics"]) == {"nDCG@10", "MRR@10", "Recall@10", "Recall@100", "MAP"}
    assert 0 < report["metrics"]["nDCG@10"]["BM25"] <= 1
    assert len(json.loads((ev / "report.json").read_text())["per_query"]["reranked"]["nDCG@10"]) == 30

    rerank_command(cfg, {"q": "how long does the running app keep where I have been?"}, model=str(export), top_n=3)
    printed = capsys.readouterr().out
    assert "BM25 #" in printed and "  1." in printed


def small_dataset(mined_tiny, tmp_path, n: int = 6) -> Path:
    """The first n mined rows: with batch 2 an epoch is 3 micro-batches, so a few steps cross epoch boundaries."""
    from datasets import load_from_disk

    out = tmp_path / f"rows{n}"
    if not out.exists():
        load_from_disk(str(mined_tiny / "dataset")).select(range(n)).save_to_disk(str(out))
    return out


def losses(cfg) -> dict[int, float]:
    records = [json.loads(l) for l in (run_dir(cfg) / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]
    assert len(steps) == len(set(steps)), "a step logged twice"
    return {r["step"]: r["loss"] for r in records if "loss" in r}


@pytest.mark.parametrize("resume_at", [2, 3])  # at an epoch's end, and inside the next epoch
def test_resume_equals_a_straight_run_with_dropout_accumulation_epochs_and_dev_checks(
        tiny_cfg, mined_tiny, tmp_path, resume_at):
    # 6 rows, batch 2, accumulation 2: epochs of 3 micro-batches = 2 optimizer steps; 6 steps = 3 epochs, with
    # dropout on and a dev check every 2 steps
    common = [f"train.dataset={small_dataset(mined_tiny, tmp_path)}", "train.dropout=0.1", "train.grad_accum=2",
              "train.max_steps=6", "train.save_every=1", "train.keep_last=0", "train.eval_every=2"]
    straight = tiny_cfg(*common, "run.name=straight")
    train(straight)
    resumed = tiny_cfg(*common, "run.name=resumed")
    train(resumed, resume=str(run_dir(straight) / f"step_{resume_at:06d}"))
    a, b = losses(straight), losses(resumed)
    assert sorted(b) == list(range(resume_at + 1, 7))
    for step in b:
        assert b[step] == pytest.approx(a[step], abs=1e-5), step
    assert_same_weights(run_dir(straight) / "step_000006" / "model", run_dir(resumed) / "step_000006" / "model",
                        atol=1e-6)


def test_resuming_an_older_checkpoint_abandons_the_newer_ones(tiny_cfg, mined_tiny, tmp_path):
    cfg = tiny_cfg(f"train.dataset={small_dataset(mined_tiny, tmp_path)}", "train.max_steps=4", "train.save_every=1",
                   "train.keep_last=0", "train.eval_every=1")
    train(cfg)
    out = run_dir(cfg)
    assert [s for s, _ in list_checkpoints(out)] == [1, 2, 3, 4]
    train(cfg, resume=str(out / "step_000002"))  # the same 4 steps again from step 2
    abandoned = list((out / "abandoned").iterdir())
    assert len(abandoned) == 1 and {"step_000003", "step_000004", "metrics.jsonl"} <= {p.name for p in abandoned[0].iterdir()}
    assert [s for s, _ in list_checkpoints(out)] == [1, 2, 3, 4]  # 3 and 4 written again by the resumed run
    assert sorted(losses(cfg)) == [1, 2, 3, 4]  # each step once
    dev_steps = [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines() if "dev/nDCG@10" in l]
    assert dev_steps == [1, 2, 3, 4]
    assert json.loads((out / "best" / "dev_metrics.json").read_text())["step"] <= 4


def test_resume_latest_continues_and_refuses_a_silent_restart(tiny_cfg, mined_tiny):
    cfg = tiny_cfg(f"train.dataset={mined_tiny / 'dataset'}", "data.dev_split=''", "train.max_steps=2")
    train(cfg)
    with pytest.raises(DataError, match="--resume latest"):
        train(cfg)
    longer = tiny_cfg(f"train.dataset={mined_tiny / 'dataset'}", "data.dev_split=''", "train.max_steps=4")
    assert train(longer, resume="latest")["steps"] == 4
    assert [s for s, _ in list_checkpoints(run_dir(cfg))] == [2, 4]


def test_patience_stops_when_dev_ndcg_stops_improving(tiny_cfg, mined_tiny):
    # lr 0: the dev ranking never changes, so the second check is not a new best and patience 1 ends the run
    cfg = tiny_cfg(f"train.dataset={mined_tiny / 'dataset'}", "train.lr=0", "train.max_steps=8",
                   "train.eval_every=1", "train.patience=1")
    summary = train(cfg)
    out = run_dir(cfg)
    assert summary["steps"] == 2
    state = json.loads((out / "step_000002" / "trainer_state.json").read_text())
    assert state["stale_checks"] == 1 and json.loads((out / "best" / "dev_metrics.json").read_text())["step"] == 1
    patient = tiny_cfg(f"train.dataset={mined_tiny / 'dataset'}", "train.lr=0", "train.max_steps=3",
                       "train.eval_every=1", "train.patience=0", "run.name=patient")
    assert train(patient)["steps"] == 3


def test_the_gpu_recipe_runs_a_few_steps_on_cpu(tiny_model, tmp_path):
    # configs/legal-gpu.yaml as is (groups of 16, one padded forward, 2 loader workers, patience), on the demo
    # data with the tiny model: what a GPU session would run, checked here without one
    from crosstune.train.config import load_config

    cfg = load_config(ROOT / "configs" / "legal-gpu.yaml", [
        f"model.name={tiny_model}", f"run.root={tmp_path}", f"data.path={ROOT / 'data' / 'demo'}",
        "model.max_length=64", "train.max_steps=2", "train.batch_size=2", "train.eval_every=2", "eval.depth=10"])
    assert cfg.train.group_size == 16 and cfg.train.forward_chunk == 0 and cfg.train.precision == "bf16"
    mine_command(cfg)
    # Accelerate fixes precision once per process: clear it around this bf16 run (as accelerate's own tests do)
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    try:
        summary = train(cfg, cpu=True)
    finally:
        AcceleratorState._reset_state(True)
    assert summary["steps"] == 2 and summary["best_dev_ndcg@10"] is not None


def test_a_bi_encoder_fused_in_training_export_and_evaluate(tiny_cfg, mined_tiny, tiny_model):
    # the tiny BERT doubles as the bi-encoder (sentence-transformers adds mean pooling to a plain folder)
    cfg = tiny_cfg(f"train.dataset={mined_tiny / 'dataset'}", f"eval.biencoder={tiny_model}", "train.max_steps=2",
                   "eval.fusion_weight=0.2", "eval.biencoder_weight=0.3")
    train(cfg)
    out = run_dir(cfg)
    dev = json.loads((out / "best" / "dev_metrics.json").read_text())
    assert dev["biencoder_weight"] == 0.3 and "bi-encoder" in dev["metrics"]["nDCG@10"]
    export = export_command(cfg)
    fusion = json.loads((export / "crosstune.json").read_text())["fusion"]
    assert fusion["weight"] == 0.2 and fusion["biencoder_weight"] == 0.3 and fusion["biencoder"] == tiny_model
    assert "0.3 * cosine(bi-encoder" in (export / "README.md").read_text()
    # evaluate reads the weights and the bi-encoder back from the export; the final ranking differs from the
    # cross-encoder's alone
    plain = tiny_cfg(f"train.dataset={mined_tiny / 'dataset'}", "train.max_steps=2")
    report = evaluate_command(plain, model=str(export))
    assert report["biencoder"] == tiny_model and report["biencoder_weight"] == 0.3 and report["fusion_weight"] == 0.2
    ev = run_dir(plain) / "eval_test"
    assert (ev / "reranked.trec").read_text() != ""
    assert "bi-encoder" in (ev / "report.md").read_text()


def test_batch_8_equals_batch_2_times_accumulation_4(tiny_cfg, mined_tiny):
    common = [f"train.dataset={mined_tiny / 'dataset'}", "data.dev_split=''", "train.max_steps=2",
              "train.schedule=constant", "train.save_every=2"]
    big = tiny_cfg(*common, "run.name=big", "train.batch_size=8", "train.grad_accum=1")
    small = tiny_cfg(*common, "run.name=small", "train.batch_size=2", "train.grad_accum=4")
    train(big)
    train(small)
    # Adam divides by the gradient's own scale, so float noise in near-zero gradients moves a few weights
    # by ~1e-5; any real difference in the groups or the averaging moves them by ~lr (1e-3). The head's bias
    # is skipped: a softmax over the group ignores a shared shift, so its gradient is pure rounding noise
    assert_same_weights(run_dir(big) / "step_000002" / "model", run_dir(small) / "step_000002" / "model",
                        atol=1e-4, skip=["classifier.bias"])


def test_two_processes_of_batch_1_equal_one_process_accumulating_two_batches_of_1(tiny_cfg, mined_tiny, tmp_path):
    # the same groups each step (process i takes the i-th batch of the shared order), gradients averaged across
    # processes: losses and weights match one process that accumulates the same two batches, across epochs, and
    # the dev check that every process shares gives the same figures.
    # The reference is accumulation, not one batch of 2: a batch of 2 runs other kernels (other reduction orders),
    # and at this lr Adam turns that float noise into weight moves of ~lr that differ per CPU (AVX2, AVX-512, ARM).
    # Batch 1 on one thread in both runs is the same arithmetic, and averaging two gradients is exact (halving is
    # exact, a sum of two is commutative), so the runs agree bit for bit on every CPU: any difference is a bug.
    # (Accumulation equals a bigger batch: test_batch_8_equals_batch_2_times_accumulation_4.)
    # groups of 2 drawn from 4 mined negatives: each epoch's draw differs, so a dataset left at epoch 0 shows; a
    # high lr makes the loss depend on which negatives a group holds
    common = [f"train.dataset={small_dataset(mined_tiny, tmp_path)}", "train.max_steps=6", "train.save_every=6",
              "train.eval_every=6", "train.batch_size=1", "train.group_size=2", "train.lr=0.02"]
    ddp, single = tiny_cfg(*common, "run.name=ddp"), tiny_cfg(*common, "train.grad_accum=2", "run.name=single")
    args = ["-m", "crosstune.train", "--config", str(ROOT / "configs" / "tiny.yaml"), f"model.name={ddp.model.name}",
            f"run.root={ddp.run.root}", f"data.path={ddp.data.path}", *common]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
              str(ROOT / "configs" / "accelerate" / "cpu.yaml")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread in every process: the same kernels in both runs
    runs = {"ddp": [*launch, *args, "run.name=ddp"], "single": [sys.executable, *args, "train.grad_accum=2",
                                                                "run.name=single"]}
    procs = {name: subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
             for name, cmd in runs.items()}
    for name, proc in procs.items():
        assert proc.returncode == 0, name + proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 process(es)" in procs["ddp"].stdout and procs["ddp"].stdout.count("train | {") == 1  # one run, not two
    assert "1 process(es)" in procs["single"].stdout
    out = run_dir(ddp)
    assert [s for s, _ in list_checkpoints(out)] == [6]
    state = out / "step_000006" / "state"
    assert (state / "random_states_0.pkl").exists() and (state / "random_states_1.pkl").exists()

    a, b = losses(single), losses(ddp)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
    for step in a:
        # the same two losses, averaged in float32 (gathered) or in Python: at most one unit of the 5th decimal
        assert b[step] == pytest.approx(a[step], abs=1.01e-5), step
    assert_same_weights(run_dir(single) / "step_000006" / "model", out / "step_000006" / "model")  # bit for bit
    dev = [json.loads((run_dir(c) / "best" / "dev_metrics.json").read_text()) for c in (single, ddp)]
    assert dev[0]["queries"] == dev[1]["queries"] == 15
    assert dev[1]["metrics"]["nDCG@10"] == pytest.approx(dev[0]["metrics"]["nDCG@10"], abs=1e-6)
    from sentence_transformers import CrossEncoder

    scores = CrossEncoder(str(out / "step_000006" / "model"), device="cpu").predict([("a query", "a passage")])
    assert np.isfinite(scores).all()


def test_cli_errors_name_the_key_and_the_fix(tiny_cfg, capsys):
    cfg = tiny_cfg()
    assert main(["train", "--config", str(ROOT / "configs" / "tiny.yaml"), "train.lrr=1"]) == 2
    assert "train.lrr" in capsys.readouterr().err
    # training before mining names the missing step
    args = ["train", "--config", str(ROOT / "configs" / "tiny.yaml"), f"model.name={cfg.model.name}",
            f"run.root={cfg.run.root}", f"data.path={cfg.data.path}"]
    assert main(args) == 2
    assert "crosstune mine" in capsys.readouterr().err
    # a second mine refuses to overwrite; --overwrite replaces
    mine_args = ["mine", *args[1:]]
    assert main(mine_args) == 0
    assert main(mine_args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*mine_args, "--overwrite"]) == 0
    assert not any(p.name.startswith(".") for p in run_dir(cfg).iterdir())  # no temporary folder left


def test_a_classifier_with_two_labels_is_refused(tmp_path, tiny_model):
    from transformers import AutoConfig, BertForSequenceClassification

    from crosstune.train.artifact.model import load_model

    config = AutoConfig.from_pretrained(tiny_model, num_labels=2)
    BertForSequenceClassification(config).save_pretrained(tmp_path / "two")
    with pytest.raises(DataError, match="num_labels=2; a reranker needs num_labels=1"):
        load_model(str(tmp_path / "two"))


def test_default_base_is_checksum_verified(monkeypatch):
    from crosstune.train.artifact import model

    folder = model.resolve_model(model.DEFAULT_BASE)
    assert os.path.exists(os.path.join(folder, "model.safetensors"))
    monkeypatch.setattr(model, "DEFAULT_BASE_SHA256", "0" * 64)
    with pytest.raises(DataError, match="sha256"):
        model.resolve_model(model.DEFAULT_BASE)


def test_demo_overwrite_keeps_the_previous_run_until_the_new_one_finishes(tiny_model, tmp_path, capsys):
    root = tmp_path / "runs"
    (root / "demo" / "eval_test").mkdir(parents=True)
    (root / "demo" / "eval_test" / "report.md").write_text("the previous demo")
    tiny = [f"model.name={tiny_model}", f"run.root={root}", "model.max_length=64", "train.max_steps=2", "train.precision=no",
            "train.eval_every=2", "train.save_every=2"]
    # a demo that fails part-way (here: training) leaves the previous run where it can be moved back
    assert main(["demo", "--overwrite", *tiny, f"train.dataset={tmp_path / 'missing'}"]) == 2
    assert (root / ".demo.previous" / "eval_test" / "report.md").read_text() == "the previous demo"
    assert (root / "demo" / "mined").exists()  # the failed attempt's leftovers
    # a retry clears those leftovers but keeps the finished previous demo until it has finished itself
    assert main(["demo", "--overwrite", *tiny]) == 0
    assert not (root / ".demo.previous").exists() and (root / "demo" / "eval_test" / "report.md").exists()


def test_auto_precision_is_measured_and_trains(tiny_cfg, mined_tiny, monkeypatch, capsys):
    from crosstune.train.ranking import scorers as scoring

    scoring.bf16_faster_on_cpu.cache_clear()
    monkeypatch.setattr(scoring, "cpu_has_bf16", lambda: False)  # no bf16 units: never bf16, nothing timed
    assert scoring.auto_precision(torch.device("cpu")) == "no"
    scoring.bf16_faster_on_cpu.cache_clear()
    monkeypatch.undo()
    cfg = tiny_cfg(f"train.dataset={mined_tiny / 'dataset'}", "data.dev_split=''", "train.max_steps=1",
                   "train.precision=auto")
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)  # Accelerate fixes precision once a process
    try:
        train(cfg)
    finally:
        AcceleratorState._reset_state(True)
    chosen = scoring.auto_precision(torch.device("cpu"))
    assert f"precision {chosen} (auto)" in capsys.readouterr().out
