"""Export formats (hf, onnx, onnx-int8) of one tiny model: scores in crosstune and plain onnxruntime, the layout
sentence-transformers' ONNX backend loads (and the backend itself where it can be installed); the manifest's hashes;
a changed file refused; bad formats refused. Real onnxruntime, real files: the exports are made once for the module
by `crosstune export`'s own function."""
from __future__ import annotations

import copy
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from crosstune.data.loading import DataConfig, load_corpus, load_split
from crosstune.data.types import DataError, doc_text
from crosstune.train.artifact.manifest import FORMATS
from crosstune.train.artifact.onnx import quantization_target
from crosstune.train.cli import main
from crosstune.train.config import load_config
from crosstune.train.ranking.scorers import CrossEncoderScorer, OnnxScorer, load_scorer
from crosstune.train.recipes.evaluate import evaluate_command
from crosstune.train.recipes.export import export_command

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "configs" / "tiny.yaml")
DEMO = ROOT / "data" / "demo"


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory) -> dict:
    """{"cfg", "root", "hf", "onnx", "onnx-int8"}: the same source model exported in each format."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, BertForSequenceClassification

    root = tmp_path_factory.mktemp("formats")
    # a random 1-logit model whose weights are 10x the usual init scale (0.2, not 0.02): its logits then spread
    # over several units across pairs, as a trained reranker's do; at 0.02 they differ in the 4th decimal and
    # any rounding reorders them, so the int8 check would measure noise, not quantisation
    torch.manual_seed(1)
    config = AutoConfig.from_pretrained(tiny_model, num_labels=1, initializer_range=0.2)
    BertForSequenceClassification(config).save_pretrained(root / "source")
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(root / "source")
    cfg = load_config(TINY, [f"model.name={tiny_model}", f"run.root={root / 'runs'}", f"data.path={DEMO}"])
    out = {"cfg": cfg, "root": root}
    for fmt in FORMATS:
        out[fmt] = export_command(cfg, source=str(root / "source"), fmt=fmt)
    return out


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, str]]:
    """400 (query, passage) pairs of the demo set: short and long passages, many cut at max_length 64."""
    corpus = load_corpus(DataConfig(path=str(DEMO)))
    queries, _ = load_split(DataConfig(path=str(DEMO)), "test", corpus)
    docs = sorted(corpus)
    return [(q, doc_text(corpus[docs[(i * 7 + j * 13) % len(docs)]])) for i, q in enumerate(sorted(queries.values()))
            for j in range(40)][:400]


def bare_onnxruntime(folder: Path, pairs) -> np.ndarray:
    """What a user without crosstune or sentence-transformers writes: tokenizer + InferenceSession."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    session = ort.InferenceSession(str(folder / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    out = []
    for start in range(0, len(pairs), 50):
        batch = pairs[start:start + 50]
        feats = tokenizer([q for q, _ in batch], [p for _, p in batch], truncation=True, max_length=64,
                          padding=True, return_tensors="np")
        out.append(session.run(["logits"], {n: feats[n].astype(np.int64) for n in names})[0].reshape(-1))
    return np.concatenate(out)


def test_onnx_scores_equal_torch_in_crosstune_and_onnxruntime(exported, pairs):
    torch_scorer = load_scorer(str(exported["hf"]), device="cpu", precision="no")
    onnx_scorer = load_scorer(str(exported["onnx"]))
    assert isinstance(torch_scorer, CrossEncoderScorer) and isinstance(onnx_scorer, OnnxScorer)
    assert (onnx_scorer.precision, onnx_scorer.max_length) == ("onnx", 64)
    reference = torch_scorer.score(pairs)
    assert np.ptp(reference) > 1.0  # the scores spread: equal-to-1e-4 is a real check, not a flat line
    np.testing.assert_allclose(onnx_scorer.score(pairs), reference, atol=1e-4)
    # other batch sizes and lengths than the traced sample: the graph's shapes are dynamic
    np.testing.assert_allclose(load_scorer(str(exported["onnx"]), batch_size=7).score(pairs[:50]), reference[:50],
                               atol=1e-4)
    np.testing.assert_allclose(bare_onnxruntime(exported["onnx"], pairs), reference, atol=1e-4)


def test_onnx_folders_are_laid_out_as_sentence_transformers_loads_them(exported):
    """sentence-transformers' ONNX backend (optimum-onnx) cannot be installed beside transformers 5 (its only
    release, 0.1.0, requires transformers < 4.58), so its contract is checked here: ST's own resolver picks
    onnx/model.onnx, and optimum's ORTModelForSequenceClassification finds the config (one label: a reranker's
    score), the tokenizer and the graph inputs it feeds and the `logits` output it reads."""
    import onnx
    from sentence_transformers.backend.utils import backend_should_export
    from transformers import AutoConfig, AutoTokenizer

    for fmt in ("onnx", "onnx-int8"):
        folder = exported[fmt]
        export, kwargs = backend_should_export(folder, True, {}, "model.onnx", "*.onnx", "ONNX")
        assert not export and (kwargs["subfolder"], kwargs["file_name"]) == ("onnx", "model.onnx")
        assert [p.relative_to(folder).as_posix() for p in folder.rglob("*.onnx")] == ["onnx/model.onnx"]
        graph = onnx.load(str(folder / "onnx" / "model.onnx")).graph
        assert {i.name for i in graph.input} == {"input_ids", "attention_mask", "token_type_ids"}
        assert [o.name for o in graph.output] == ["logits"]
        assert not (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
        assert AutoConfig.from_pretrained(folder).num_labels == 1
        assert set(AutoTokenizer.from_pretrained(folder).model_input_names) == {i.name for i in graph.input}


def test_onnx_int8_is_quantised_and_ranks_like_fp32(exported, pairs):
    import onnx

    folder = exported["onnx-int8"]
    graph = onnx.load(str(folder / "onnx" / "model.onnx"))
    assert "DynamicQuantizeLinear" in {n.op_type for n in graph.graph.node}  # int8 activations, made at run time
    assert (folder / "onnx" / "model.onnx").stat().st_size < 0.5 * (exported["onnx"] / "onnx" / "model.onnx").stat().st_size
    manifest = json.loads((folder / "crosstune.json").read_text())
    assert quantization_target() in manifest["onnx"]["quantization"]

    fp32 = load_scorer(str(exported["hf"]), device="cpu", precision="no").score(pairs)
    scorer = load_scorer(str(folder))
    assert isinstance(scorer, OnnxScorer) and scorer.precision == "onnx-int8"
    int8 = scorer.score(pairs)
    assert not np.allclose(int8, fp32, atol=1e-4)  # really another graph, not the fp32 one under a new name
    # int8 moves each logit by ~0.02 on average (0.07 at most) while the 400 scores spread over ~1.1 (sd 0.19), so
    # the order barely changes: Spearman 0.991 measured on an AVX512-VNNI Xeon. 0.95 leaves room for other CPUs'
    # int8 kernels and presets
    assert spearmanr(int8, fp32).statistic > 0.95
    # dynamic quantisation scales activations per batch, so other batches (plain onnxruntime: 50 at a time, in
    # input order) round differently: as close to fp32 (0.992 measured), not equal to crosstune's int8 scores
    assert spearmanr(bare_onnxruntime(folder, pairs), fp32).statistic > 0.95


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("fmt", FORMATS)
def test_manifest_lists_every_file_with_its_sha256(exported, fmt):
    folder = exported[fmt]
    manifest = json.loads((folder / "crosstune.json").read_text())
    assert (manifest["format"], manifest["activation"], manifest["max_length"]) == (fmt, "identity", 64)
    on_disk = {p.relative_to(folder).as_posix(): sha256(p) for p in folder.rglob("*")
               if p.is_file() and p.name != "crosstune.json"}
    assert manifest["files"] == on_disk
    assert {"config.json", "tokenizer.json", "README.md"} <= set(on_disk)
    assert f"## Format: {fmt}" in (folder / "README.md").read_text()
    # text-embeddings-inference reads a reranker from config.json's one label; sentence-transformers keeps logits
    config = json.loads((folder / "config.json").read_text())
    assert len(config["id2label"]) == 1
    assert config["sentence_transformers"]["activation_fn"] == "torch.nn.modules.linear.Identity"
    assert ("model.safetensors" in on_disk) == (fmt == "hf")


def tamper(folder: Path, rel: str, tmp: Path) -> Path:
    """A copy of the export with one byte of `rel` changed."""
    copy = Path(shutil.copytree(folder, tmp / f"tampered-{folder.name}"))
    data = bytearray((copy / rel).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / rel).write_bytes(bytes(data))
    return copy


@pytest.mark.parametrize("fmt, rel", [("hf", "model.safetensors"), ("onnx", "onnx/model.onnx"),
                                      ("onnx-int8", "tokenizer.json")])
def test_a_file_changed_after_export_is_refused_by_name(exported, fmt, rel, tmp_path, capsys):
    copy = tamper(exported[fmt], rel, tmp_path)
    with pytest.raises(DataError, match=rf"{rel}: sha256 differs from crosstune.json .*re-export it"):
        load_scorer(str(copy))
    argv = ["evaluate", "--config", TINY, f"model.name={exported['cfg'].model.name}",
            f"run.root={tmp_path / 'runs'}", f"data.path={DEMO}", "--model", str(copy)]
    capsys.readouterr()
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and rel in err[0] and "re-export it" in err[0], err
    assert not (tmp_path / "runs").exists()  # stopped before any slow step wrote anything
    (copy / rel).unlink()
    with pytest.raises(DataError, match=rf"{rel}: listed in crosstune.json but missing"):
        load_scorer(str(copy))


def test_evaluate_ranks_with_the_int8_export(exported):
    report = evaluate_command(exported["cfg"], model=str(exported["onnx-int8"]))
    assert report["precision"] == "onnx-int8" and report["queries"] == 30
    assert 0 < report["metrics"]["nDCG@10"]["reranked"] <= 1


def test_the_ranking_pipeline_runs_an_onnx_export_as_it_runs_the_hf_one(exported):
    from crosstune.train.ranking.pipeline import RankingPipeline

    texts = ["The tenant may terminate the lease with notice.", "We keep location data for 18 months.",
             "Invoices are paid within thirty days.", "Either party may end this agreement."]
    fp32 = copy.deepcopy(exported["cfg"])
    fp32.eval.precision = "no"  # the graph is fp32: compare with the torch model in fp32 on every CPU
    hf, onnx = RankingPipeline.load(str(exported["hf"]), fp32), RankingPipeline.load(str(exported["onnx"]), exported["cfg"])
    assert (hf.format, onnx.format) == ("hf", "onnx") and onnx.info()["precision"] == "onnx"
    a, b = hf.rerank("who may end the lease?", texts), onnx.rerank("who may end the lease?", texts)
    assert [h.index for h in a] == [h.index for h in b]
    np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-4)


def test_an_onnx_export_scores_but_does_not_train_or_take_torch_precisions(exported):
    from crosstune.train.artifact.model import check_model_source

    onnx = str(exported["onnx"])
    assert check_model_source(onnx, "--model") == onnx
    with pytest.raises(DataError, match=r"model\.name=.*an ONNX export \(onnx/model\.onnx, no torch weights\)"):
        check_model_source(onnx, "model.name", allow_onnx=False)
    with pytest.raises(DataError, match="an ONNX export"):
        CrossEncoderScorer.from_pretrained(onnx)
    with pytest.raises(DataError, match=r"an onnx-int8 export, whose precision is fixed at export; precision=bf16"):
        load_scorer(str(exported["onnx-int8"]), precision="bf16")


def cli_export(exported, *extra: str) -> list[str]:
    return ["export", "--config", TINY, f"model.name={exported['cfg'].model.name}",
            f"run.root={exported['root'] / 'cli'}", f"data.path={DEMO}",
            "--checkpoint", str(exported["root"] / "source"), *extra]


def test_an_unknown_format_is_one_line_exit_2(exported, capsys):
    capsys.readouterr()
    assert main(cli_export(exported, "--format", "bogus")) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == ["crosstune export: error: --format bogus: unknown; choose one of hf, onnx, onnx-int8"]
    assert not (exported["root"] / "cli").exists()


def test_onnx_without_the_extra_names_the_install(exported, capsys, monkeypatch):
    # None in sys.modules is Python's own "this module cannot be imported": the ImportError a machine without
    # onnxruntime raises, while the rest of the process stays real
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    capsys.readouterr()
    assert main(cli_export(exported, "--format", "onnx-int8")) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and 'pip install "crosstune[onnx]"' in err[0], err
    assert not (exported["root"] / "cli").exists()


def test_quantization_preset_follows_the_cpu():
    assert quantization_target("fpu avx2 avx512f avx512_vnni", "x86_64") == "avx512_vnni"
    assert quantization_target("fpu avx2 avx512f", "x86_64") == "avx512"
    assert quantization_target("fpu avx2", "x86_64") == "avx2"
    assert quantization_target("", "aarch64") == "arm64"
