"""Bad input: one `crosstune <command>: error: ...` line on stderr, exit status 2, and nothing written or lost.

Each row of CASES builds one bad input under tmp_path and runs the CLI in-process; the whole tmp tree (and the
shared mined dataset) must be byte-identical afterwards. The tests below the table follow a run folder
through `train --overwrite`, a crash, and a retry after a run that failed before its first checkpoint.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from crosstune.data.loading import DataConfig, load_qrels, read_qrels_tsv
from crosstune.data.types import DataError
from crosstune.train.cli import main
from crosstune.train.config import load_config
from crosstune.train.training.checkpoint import list_checkpoints

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "configs" / "tiny.yaml")
DEMO = ROOT / "data" / "demo"


def snapshot(*folders: Path) -> dict[str, str]:
    """path -> sha256 of every file (and '<dir>' for every folder) under the given folders."""
    out = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            out[str(p)] = "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def finished_run(tiny_model, mined_tiny, tmp_path_factory) -> Path:
    """A finished tiny run: mined/, step_000001, step_000002, best/, metrics.jsonl, tensorboard/, export/, eval_test/."""
    from crosstune.train.recipes.export import export_command
    from crosstune.train.recipes.train import train

    root = tmp_path_factory.mktemp("finished") / "runs"
    shutil.copytree(mined_tiny, root / "tiny" / "mined")
    cfg = load_config(TINY, [f"model.name={tiny_model}", f"run.root={root}", f"data.path={DEMO}",
                             "train.max_steps=2", "train.save_every=1", "train.eval_every=2"])
    train(cfg)
    export_command(cfg)
    (root / "tiny" / "eval_test").mkdir()
    (root / "tiny" / "eval_test" / "report.json").write_text('{"from": "the old run"}')
    return root


@pytest.fixture
def env(tmp_path, tiny_model, mined_tiny, finished_run, monkeypatch):
    """What a row needs: its tmp folder, the common CLI words, a copy of the finished run on request."""
    runs = tmp_path / "runs"

    def args(*extra: str) -> list[str]:
        return ["--config", TINY, f"model.name={tiny_model}", f"run.root={runs}", f"data.path={DEMO}", *extra]

    def copy_run() -> Path:
        shutil.copytree(finished_run, runs)
        return runs / "tiny"

    def data(name: str = "data") -> Path:
        """A copy of the demo data to break."""
        return Path(shutil.copytree(DEMO, tmp_path / name))

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a stray hub lookup fails fast instead of waiting on the network
    return SimpleNamespace(tmp=tmp_path, runs=runs, args=args, copy_run=copy_run, data=data, model=tiny_model,
                           mined=mined_tiny, monkeypatch=monkeypatch)


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def model_folder(e, *, weights=True, tokenizer=True, config=True) -> Path:
    """A copy of the tiny model with parts left out."""
    folder = Path(shutil.copytree(e.model, e.tmp / "model"))
    if not weights:
        (folder / "model.safetensors").unlink()
    if not tokenizer:
        for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
            (folder / name).unlink(missing_ok=True)
    if not config:
        (folder / "config.json").unlink()
    return folder


def foreign_config(e, kind: str) -> Path:
    from transformers import AutoConfig

    folder = e.tmp / kind
    AutoConfig.for_model(kind).save_pretrained(folder)
    return folder


def mine_args(e, data: Path, *extra: str) -> list[str]:
    return ["mine", *e.args(f"data.path={data}", *extra)]


def train_on_mined(e, *extra: str) -> list[str]:
    return ["train", *e.args(f"train.dataset={e.mined / 'dataset'}", *extra)]


def broken_gz(e):
    d = e.data()
    raw = gzip.compress((DEMO / "corpus.jsonl").read_bytes())
    (d / "corpus.jsonl").unlink()
    write(d / "corpus.jsonl.gz", raw[: len(raw) // 2])
    return mine_args(e, d)


def not_gzip(e):
    d = e.data()
    (d / "corpus.jsonl").rename(d / "corpus.jsonl.gz")
    return mine_args(e, d)


def latin1(e, name: str, line: str):
    d = e.data()
    with open(d / name, "ab") as f:
        f.write(line.encode("latin-1"))
    return mine_args(e, d)


def append(e, name: str, text: str):
    d = e.data()
    with open(d / name, "a") as f:
        f.write(text)
    return mine_args(e, d)


def replace_file(e, name: str, text: str):
    d = e.data()
    write(d / name, text)
    return mine_args(e, d)


def first_line(path: Path) -> str:
    return path.read_text().splitlines()[0]


def yaml_file(e, text: str) -> list[str]:
    return ["train", "--config", str(write(e.tmp / "exp.yaml", text))]


def corrupt_latest(e, damage) -> list[str]:
    run = e.copy_run()
    damage(run / "step_000002")
    return ["train", *e.args("train.max_steps=3"), "--resume", "latest"]


def truncate(path: Path, size: int | None = None) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if size is None else size])
    return path


def truncated_model(e) -> list[str]:
    folder = model_folder(e)
    truncate(folder / "model.safetensors")
    return train_on_mined(e, f"model.name={folder}")


def span_data(e, row: str) -> list[str]:
    """A whole-document BEIR folder whose span qrels hold `row`, mined with word-token chunking."""
    d = e.tmp / "documents"
    write(d / "corpus.jsonl", '{"_id": "lease", "title": "Lease", "text": "The tenant may sublet with consent."}\n')
    write(d / "queries.jsonl", '{"_id": "q1", "text": "may the tenant sublet"}\n')
    write(d / "qrels" / "train.spans.tsv", "query-id\tcorpus-id\tstart\tend\tscore\n" + row)
    return mine_args(e, d, "data.chunking=tokens", "data.chunk_tokenizer=words", "data.chunk_size=8")


def latin1_document(e) -> list[str]:
    d = e.tmp / "texts"
    write(d / "lease.txt", "The tenant may sublet.")
    write(d / "nda.txt", "Confidential information, caf\xe9".encode("latin-1"))
    return mine_args(e, d)


def graded_train(e) -> list[str]:
    """The demo with train judgments graded 0, 1, 2 in turn (177 rows: 59 each), mined at threshold 3."""
    d = e.data("graded")
    header, *rows = (d / "qrels" / "train.tsv").read_text().splitlines()
    graded = [f"{r.rsplit(chr(9), 1)[0]}\t{i % 3}" for i, r in enumerate(rows)]
    write(d / "qrels" / "train.tsv", "\n".join([header, *graded]) + "\n")
    return mine_args(e, d, "data.relevance_threshold=3")


def overwrite_run(e, *extra: str) -> list[str]:
    """`train --overwrite` over a copy of the finished run."""
    e.copy_run()
    return ["train", *e.args(*extra), "--overwrite"]


CASES = [
    # ---- data files
    ("truncated corpus.jsonl.gz", broken_gz, r"corpus\.jsonl\.gz: truncated or corrupt gzip file after line \d+"),
    ("corpus.jsonl.gz that is not gzip", not_gzip, r"corpus\.jsonl\.gz: truncated or corrupt gzip file from its first byte"),
    ("latin-1 corpus line", lambda e: latin1(e, "corpus.jsonl", '{"_id": "x", "text": "caf\xe9"}\n'),
     r"corpus\.jsonl:230: not UTF-8 \(byte 0xe9.*re-save the file as UTF-8"),
    ("latin-1 queries line", lambda e: latin1(e, "queries.jsonl", '{"_id": "qx", "text": "d\xe9p\xf4t"}\n'),
     r"queries\.jsonl:\d+: not UTF-8"),
    ("latin-1 qrels line", lambda e: latin1(e, "qrels/train.tsv", "q-contract-1\tcaf\xe9\t1\n"),
     r"train\.tsv:\d+: not UTF-8"),
    ("doc id twice", lambda e: append(e, "corpus.jsonl", first_line(DEMO / "corpus.jsonl") + "\n"),
     r"corpus\.jsonl:230: doc id '[^']+' appears a second time; ids must be unique"),
    ("query id twice", lambda e: append(e, "queries.jsonl", first_line(DEMO / "queries.jsonl") + "\n"),
     r"queries\.jsonl:\d+: query id '[^']+' appears a second time"),
    ("one pair judged twice, differently", lambda e: append(e, "qrels/train.tsv", "q-contract-1\tcontract-nda-4\t0\n"),
     r"train\.tsv:179: query 'q-contract-1' and doc 'contract-nda-4' are judged again, now with score 0 "
     r"\(earlier: 1\); keep one judgment per pair"),
    ("header-only qrels", lambda e: replace_file(e, "qrels/train.tsv", "query-id\tcorpus-id\tscore\n"),
     r"qrels/train\.tsv: no judgments \(the file is empty or holds only a header\)"),
    ("empty qrels", lambda e: replace_file(e, "qrels/train.tsv", ""), r"qrels/train\.tsv: no judgments"),
    ("data.path missing (absolute)", lambda e: ["mine", *e.args("data.path=/nonexistent")],
     r"data\.path=/nonexistent: no such local folder"),
    ("data.path missing (relative)", lambda e: ["mine", *e.args("data.path=./typo")],
     r"data\.path=\./typo: no such local folder .*a Hugging Face dataset id looks like org/name"),
    ("negative_range past depth", lambda e: ["mine", *e.args("mining.depth=10")],
     r"mining\.negative_range ends at 30, past mining\.depth=10"),
    # a threshold above every grade: found when the judgments load (before the index), naming the grades held
    ("data.relevance_threshold above the demo's one grade", lambda e: ["mine", *e.args("data.relevance_threshold=99")],
     r"data\.relevance_threshold=99 but the 'train' split's judgments \(.*demo\) grade only 1 \(1: 177\); no judgment "
     r"counts as relevant; lower it to at most 1$"),
    ("data.relevance_threshold above graded qrels", graded_train,
     r"data\.relevance_threshold=3 but the 'train' split's judgments \(.*graded\) grade 0-2 \(0: 59, 1: 59, 2: 59\); "
     r"no judgment counts as relevant; lower it to at most 2$"),
    # ---- config files and values
    ("YAML syntax error", lambda e: yaml_file(e, "train:\n  lr: [1,\n"), r"exp\.yaml:3:1: YAML syntax error"),
    ("YAML top level is a list", lambda e: yaml_file(e, "- train\n- lr\n"),
     r"exp\.yaml: the top level is a list; it must be a mapping of sections"),
    ("YAML top level is a scalar", lambda e: yaml_file(e, "3\n"), r"exp\.yaml: the top level is a single value; it must be a mapping"),
    ("--config names a folder", lambda e: ["train", "--config", str(e.tmp)], r"is a folder; --config takes a YAML file"),
    *[(f"{o}", (lambda o: lambda e: ["train", *e.args(o)])(o), m) for o, m in [
        ("train.batch_size=0", r"train\.batch_size=0; set train\.batch_size to an integer >= 1"),
        ("train.group_size=1", r"train\.group_size=1; set train\.group_size to an integer >= 2"),
        ("train.grad_accum=0", r"train\.grad_accum=0; set train\.grad_accum to an integer >= 1"),
        ("eval.batch_size=0", r"eval\.batch_size=0; set eval\.batch_size to an integer >= 1"),
        ("train.save_every=0", r"train\.save_every=0; set train\.save_every to an integer >= 1"),
        ("train.log_every=0", r"train\.log_every=0; set train\.log_every to an integer >= 1"),
        ("eval.recall_at=[]", r"eval\.recall_at=\[\]; set eval\.recall_at to a list of cutoffs >= 1"),
        ("eval.recall_at=[0,10]", r"eval\.recall_at=\[0, 10\]; set eval\.recall_at"),
        ("eval.depth=-1", r"eval\.depth=-1; set eval\.depth to an integer >= 1"),
        ("eval.depth=0", r"eval\.depth=0; set eval\.depth"),
        ("data.holdout_queries=0", r"data\.holdout_queries=0; set data\.holdout_queries"),
        ("train.keep_last=-1", r"train\.keep_last=-1; set train\.keep_last to an integer >= 0"),
        ("train.num_workers=-1", r"train\.num_workers=-1; set train\.num_workers"),
        ("train.lr=-1e-4", r"train\.lr=-0\.0001; set train\.lr to a learning rate >= 0"),
        ("train.warmup_ratio=1.5", r"train\.warmup_ratio=1\.5; set train\.warmup_ratio to a fraction .* \[0, 1\]"),
        ("train.warmup_ratio=-0.1", r"train\.warmup_ratio=-0\.1; set train\.warmup_ratio"),
        ("model.max_length=4", r"model\.max_length=4; set model\.max_length to an integer >= 8"),
    ]],
    # ---- whole documents: chunking, judgments, document ranking, the analyzer, the query budget
    *[(f"{o}", (lambda o: lambda e: ["mine", *e.args(o)])(o), m) for o, m in [
        ("data.chunking=sentences", r"data\.chunking='sentences'; choose one of none, tokens, paragraphs"),
        ("data.chunk_stride=300", r"data\.chunk_stride=300 with data\.chunk_size=256; the stride .* must be in "
                                  r"1\.\.256, or 0 for 256 \(no overlap\)"),
        ("data.chunk_size=4", r"data\.chunk_size=4; give at least 8 tokens per passage"),
        ("data.judgments=clause", r"data\.judgments='clause'; choose one of auto, passage, document, span"),
        ("data.relevance_threshold=0", r"data\.relevance_threshold=0; set data\.relevance_threshold to an integer >= 1"),
        ("data.span_coverage=1.5", r"data\.span_coverage=1\.5; set data\.span_coverage to a share in \(0, 1\]"),
        ("eval.aggregate=median", r"eval\.aggregate='median'; choose one of maxp, firstp, sump, mean-top-k"),
        ("eval.aggregate_k=0", r"eval\.aggregate_k=0; set eval\.aggregate_k to an integer >= 1"),
        ("bm25.analyzer=french", r"bm25\.analyzer='french'; choose one of plain, legal"),
        ("mining.document_positives=all", r"mining\.document_positives='all'; choose one of best, each"),
        ("model.max_query_tokens=60", r"model\.max_query_tokens=60 leaves the passage fewer than 16 of "
                                      r"model\.max_length=64 tokens"),
        ("bm25.stemmer=klingon", r"bm25\.stemmer='klingon' is not a Snowball language"),
    ]],
    ("span offsets outside the document", lambda e: span_data(e, "q1\tlease\t4\t99\t1\n"),
     r"train\.spans\.tsv:2: span 4-99 does not lie inside document 'lease' \(35 characters\)"),
    ("span that ends before it starts", lambda e: span_data(e, "q1\tlease\t9\t4\t1\n"),
     r"train\.spans\.tsv:2: span 9-4 does not lie inside .* with start < end"),
    ("span qrels row without offsets", lambda e: span_data(e, "q1\tlease\t1\n"),
     r"train\.spans\.tsv:2: expected 'query-id<TAB>corpus-id<TAB>start<TAB>end<TAB>score'"),
    ("a latin-1 .txt document", latin1_document, r"nda\.txt: not UTF-8 \(byte 0xe9"),
    # ---- the command line
    ("overrides on both sides of a flag, one unknown",
     lambda e: ["train", "--config", TINY, "train.lr=1e-4", "--overwrite", "train.lrr=1"],
     r"unknown config key 'train\.lrr'"),
    ("rerank --queries empty file", lambda e: ["rerank", *e.args(), "--queries", str(write(e.tmp / "q.txt", ""))],
     r"q\.txt: no queries \(the file is empty or blank\)"),
    ("rerank --queries blank lines", lambda e: ["rerank", *e.args(), "--queries", str(write(e.tmp / "q.txt", "\n  \n\n"))],
     r"q\.txt: no queries"),
    ("rerank --queries latin-1", lambda e: ["rerank", *e.args(), "--queries", str(write(e.tmp / "q.txt", b"d\xe9p\xf4t\n"))],
     r"q\.txt:1: not UTF-8"),
    # ---- model.name, --model, --checkpoint
    ("model.name path missing", lambda e: train_on_mined(e, "model.name=/nonexistent/model"),
     r"model\.name=/nonexistent/model: no such folder"),
    ("model.name unknown hub id", lambda e: train_on_mined(e, "model.name=nobody/no-such-model"),
     r"model\.name=nobody/no-such-model: not a local folder and not in the Hugging Face cache; no network here\?"),
    ("model folder without config.json", lambda e: train_on_mined(e, f"model.name={model_folder(e, config=False)}"),
     r"model\.name=.*model: no config\.json"),
    ("model folder with a ViT config", lambda e: train_on_mined(e, f"model.name={foreign_config(e, 'vit')}"),
     r"model\.name=.*vit: a 'vit' model, which transformers cannot give a text-classification head"),
    ("model folder with a CLIP config", lambda e: train_on_mined(e, f"model.name={foreign_config(e, 'clip')}"),
     r"a 'clip' model"),
    ("model folder without weights", lambda e: train_on_mined(e, f"model.name={model_folder(e, weights=False)}"),
     r"model\.name=.*model: config\.json but no weights"),
    ("model folder without tokenizer", lambda e: train_on_mined(e, f"model.name={model_folder(e, tokenizer=False)}"),
     r"model\.name=.*model: no tokenizer"),
    ("model weights truncated", truncated_model, r"model\.safetensors is truncated or not a safetensors file"),
    ("model.max_length past the model's positions", lambda e: train_on_mined(e, "model.max_length=256"),
     r"model\.max_length=256 but .* has 128 positions; set model\.max_length <= 128"),
    ("evaluate --model folder without config.json",
     lambda e: ["evaluate", *e.args(), "--model", str(model_folder(e, config=False))], r"--model=.*model: no config\.json"),
    ("rerank --model missing", lambda e: ["rerank", *e.args(), "--model", "./no/such/model", "a question"],
     r"--model=\./no/such/model: no such folder"),
    ("export --checkpoint without weights",
     lambda e: ["export", *e.args(), "--checkpoint", str(model_folder(e, weights=False))], r"--checkpoint=.*no weights"),
    # ---- --resume of a damaged checkpoint: the message names the file and the intact one to use instead
    ("resume: trainer_state.json not JSON",
     lambda e: corrupt_latest(e, lambda c: write(c / "trainer_state.json", "{step: 2")),
     r"--resume .*step_000002: trainer_state\.json is not JSON .*; resume from the newest intact one, --resume "
     r".*step_000001, or start over with --overwrite"),
    ("resume: trainer_state.json without keys",
     lambda e: corrupt_latest(e, lambda c: write(c / "trainer_state.json", '{"step": 2}')),
     r"step_000002: trainer_state\.json lacks epoch, batch_in_epoch, best"),
    ("resume: optimizer state missing", lambda e: corrupt_latest(e, lambda c: (c / "state" / "optimizer.bin").unlink()),
     r"step_000002: state/optimizer\.bin is missing"),
    ("resume: weights empty", lambda e: corrupt_latest(e, lambda c: truncate(c / "state" / "model.safetensors", 0)),
     r"step_000002: state/model\.safetensors is empty"),
    ("resume: weights truncated", lambda e: corrupt_latest(e, lambda c: truncate(c / "state" / "model.safetensors")),
     r"step_000002: state/model\.safetensors is truncated"),
    ("resume: optimizer truncated", lambda e: corrupt_latest(e, lambda c: truncate(c / "state" / "optimizer.bin")),
     r"step_000002: state/optimizer\.bin is truncated or corrupt"),
    # ---- train --overwrite of a finished run with a bad input: checked before anything moves
    ("--overwrite with a model.name typo", lambda e: overwrite_run(e, "model.name=./typo"),
     r"model\.name=\./typo: no such folder"),
    ("--overwrite with no mined dataset", lambda e: overwrite_run(e, f"train.dataset={e.tmp / 'nope'}"),
     r"nope: no mined dataset; run `crosstune mine`"),
    ("--overwrite with mined rows too short for the group",
     lambda e: overwrite_run(e, "train.group_size=8", "mining.num_negatives=7"),
     r"train\.group_size=8 needs 7 negatives per row but the mined rows in .* have 4"),
    ("--overwrite with a missing dev qrels file", lambda e: overwrite_run(e, "data.dev_split=validation"),
     r"qrels/validation\.tsv: qrels file not found"),
    # ---- few labels, distillation, students (tests/test_distill.py has the working paths)
    ("train.loss unknown", lambda e: ["train", *e.args("train.loss=foo")],
     r"train\.loss='foo'; choose one of listwise, bce, margin-mse, kl"),
    ("mine --teacher missing", lambda e: ["mine", *e.args(), "--teacher", "/nonexistent/teacher"],
     r"mining\.teacher=/nonexistent/teacher: no such folder"),
    ("teacher is a bare encoder", lambda e: ["mine", *e.args(f"mining.teacher={e.model}")],
     r"mining\.teacher=.*: a bare encoder \(BertModel\) .*set mining\.teacher_kind: bi-encoder"),
    ("teacher_margin without a teacher", lambda e: ["mine", *e.args("mining.teacher_margin=1.0")],
     r"mining\.teacher_margin=1\.0 needs a teacher"),
    ("model.layers past the model's", lambda e: train_on_mined(e, "model.layers=5"),
     r"model\.layers=5 but .* has 2 layers; set model\.layers to 1\.\.2"),
    ("model.freeze_layers past the model's", lambda e: train_on_mined(e, "model.freeze_layers=3"),
     r"model\.freeze_layers=3 but the model trains with 2 layers"),
    ("model.freeze_layers past model.layers", lambda e: train_on_mined(e, "model.layers=1", "model.freeze_layers=2"),
     r"model\.freeze_layers=2 but model\.layers=1"),
    ("margin-mse without teacher scores", lambda e: train_on_mined(e, "train.loss=margin-mse"),
     r"train\.loss=margin-mse needs teacher scores but .*dataset has none; mine with a teacher first"),
    ("distill_weight with a hard-label loss", lambda e: ["train", *e.args("train.distill_weight=0.5")],
     r"train\.distill_weight=0\.5 mixes a teacher into the loss, but train\.loss=listwise"),
    ("unknown pseudo-query kind", lambda e: ["mine", *e.args(), "--pseudo-queries", "headline"],
     r"mining\.pseudo_queries='headline': unknown kind 'headline'"),
    ("--pseudo-file missing", lambda e: ["mine", *e.args(), "--pseudo-file", str(e.tmp / "nope.tsv")],
     r"nope\.tsv: pseudo-query file not found; check mining\.pseudo_file"),
    ("the file kind without a file", lambda e: ["mine", *e.args("mining.pseudo_queries=headings,file")],
     r"mining\.pseudo_queries='headings,file' names the file kind but mining\.pseudo_file is empty"),
]


@pytest.mark.parametrize("build, pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(env, capsys, build, pattern):
    argv = build(env)
    env.tmp.mkdir(exist_ok=True)
    before = snapshot(env.tmp, env.mined)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"crosstune {argv[0]}: error: "), lines[0]
    assert re.search(pattern, lines[0]), lines[0]
    assert snapshot(env.tmp, env.mined) == before


def test_too_few_negatives_in_the_range_names_the_mining_keys(env, capsys):
    # found after retrieval, so BM25's progress bars precede it on stderr: the error is the last line
    assert main(["mine", *env.args("mining.negative_range=[28,30]", "mining.num_negatives=3")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1].split("\r")[-1].strip()
    assert re.fullmatch(r".*crosstune mine: error: no training rows: \{'fewer_candidates_than_negatives': 165\}; "
                        r"lower mining\.num_negatives or mining\.negative_range\[0\], or raise mining\.depth", last), last
    assert not (env.runs / "tiny" / "mined").exists()


# ---------------------------------------------------------------- readers that now read what they misread


def test_qrels_read_ids_with_spaces_gzip_and_repeats(tmp_path, caplog):
    beir = write(tmp_path / "beir.tsv", "query-id\tcorpus-id\tscore\nq 1\tdoc one\t1\nq 1\tdoc two\t0\n")
    assert read_qrels_tsv(beir) == {"q 1": {"doc one": 1, "doc two": 0}}
    trec = write(tmp_path / "trec.txt", "101 0 7 1\n101\t0\tdoc 8\t2\n")
    assert read_qrels_tsv(trec) == {"101": {"7": 1, "doc 8": 2}}
    # the same judgment twice (concatenated qrels files) is kept once, with a warning
    twice = write(tmp_path / "twice.tsv", "q1\td1\t1\nq1\td1\t1\n")
    assert read_qrels_tsv(twice) == {"q1": {"d1": 1}}
    assert "twice.tsv:2: repeats an earlier judgment of query 'q1' and doc 'd1'; kept once" in caplog.text
    # gzipped qrels in both layouts
    beir_dir = Path(shutil.copytree(DEMO, tmp_path / "beir_gz"))
    text = (beir_dir / "qrels" / "dev.tsv").read_bytes()
    (beir_dir / "qrels" / "dev.tsv").unlink()
    write(beir_dir / "qrels" / "dev.tsv.gz", gzip.compress(text))
    assert load_qrels(DataConfig(path=str(beir_dir)), "dev") == load_qrels(DataConfig(path=str(DEMO)), "dev")
    ms = tmp_path / "ms"
    write(ms / "collection.tsv", "0\tpassage\n")
    write(ms / "qrels.dev.tsv.gz", gzip.compress(b"200 0 0 1\n"))
    assert load_qrels(DataConfig(path=str(ms)), "dev") == {"200": {"0": 1}}


def test_mining_ranges_fail_at_config_load():
    with pytest.raises(DataError, match=r"past mining\.depth=10"):
        load_config(TINY, ["mining.depth=10"])


def test_a_hub_id_in_the_cache_resolves_to_its_snapshot(tmp_path, tiny_model, monkeypatch):
    from huggingface_hub import constants

    from crosstune.train.artifact.model import check_model_source

    snap = tmp_path / "hub" / "models--org--tiny" / "snapshots" / "abc123"
    shutil.copytree(tiny_model, snap)
    write(tmp_path / "hub" / "models--org--tiny" / "refs" / "main", "abc123")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert check_model_source("org/tiny") == str(snap)
    # without HF_HUB_OFFLINE, an unreachable hub is found out at once instead of after a minute of retries
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("crosstune.train.artifact.model.hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(DataError, match=r"not in the Hugging Face cache; no network here\? \(huggingface\.co is unreachable\)"):
        check_model_source("org/other")


def test_overrides_after_flags_are_overrides(tmp_path, capsys):
    argv = ["mine", "--config", TINY, f"run.root={tmp_path}", "--overwrite", f"data.path={DEMO}", "mining.depth=10"]
    assert main(argv) == 2  # reaches the config: the last override is read (and refused) rather than rejected
    assert "past mining.depth=10" in capsys.readouterr().err
    assert main(["mine", "--config", TINY, "--bogus"]) == 2
    assert capsys.readouterr().err.strip() == "crosstune mine: error: unknown option --bogus; see crosstune mine --help"


# ---------------------------------------------------------------- the run folder across --overwrite


def outputs_of(run: Path) -> dict[str, str]:
    """The old run's training outputs, by path relative to the run (mined/ excluded)."""
    return {str(Path(p).relative_to(run)): h for p, h in snapshot(run).items()
            if not Path(p).relative_to(run).parts[0] in ("mined", ".replaced")}


def test_overwrite_with_a_bad_model_name_keeps_the_old_run_byte_identical(env, capsys):
    run = env.copy_run()
    before = outputs_of(run)
    assert {"best", "step_000001", "step_000002", "metrics.jsonl", "export"} <= set(before)
    assert main(["train", *env.args("model.name=/no/such/model"), "--overwrite"]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert outputs_of(run) == before and not (run / ".replaced").exists()


def test_overwrite_sets_the_old_run_aside_until_the_first_checkpoint(env, monkeypatch):
    import crosstune.train.training.loop as checkpoint

    run = env.copy_run()
    old, mined = outputs_of(run), snapshot(run / "mined")
    seen = []

    def discard(out):  # called by save_checkpoint: the old run must be intact and aside at that moment
        aside = list((out / ".replaced").iterdir())
        seen.append(len(aside))
        assert len(aside) == 1 and outputs_of(aside[0]) == old
        assert not (out / "export").exists() and not (out / "eval_test").exists() and not (out / "best").exists()
        real_discard(out)

    real_discard = checkpoint.discard_replaced
    monkeypatch.setattr(checkpoint, "discard_replaced", discard)
    # the overrides come after --overwrite
    argv = ["train", *env.args(), "--overwrite", "train.max_steps=2", "train.save_every=2", "data.dev_split=''"]
    assert main(argv) == 0
    assert seen == [1]
    assert not (run / ".replaced").exists() and not (run / "export").exists() and not (run / "eval_test").exists()
    assert [s for s, _ in list_checkpoints(run)] == [2]
    assert (run / "step_000002" / "model" / "config.json").exists() and not (run / "best").exists()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]  # the new run's records only
    assert snapshot(run / "mined") == mined  # mine's output is never touched
    from crosstune.train.recipes.common import newest_model

    assert newest_model(load_config(TINY, env.args()[2:])) == run / "step_000002" / "model"  # no stale export


def test_a_crash_before_the_first_checkpoint_leaves_the_old_run_recoverable(env, monkeypatch, caplog):
    import crosstune.train.recipes.train as loop

    run = env.copy_run()
    old = outputs_of(run)

    def boom(*a, **k):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(loop, "load_model", boom)
    cfg = load_config(TINY, env.args("data.dev_split=''")[2:])
    with pytest.raises(RuntimeError, match="out of memory"):
        loop.train(cfg, overwrite=True)
    aside = list((run / ".replaced").iterdir())
    assert len(aside) == 1 and outputs_of(aside[0]) == old
    assert str(aside[0]) in caplog.text and "deleted once this run writes its first checkpoint" in caplog.text


def test_a_run_that_failed_before_its_first_checkpoint_does_not_block_a_retry(env):
    from crosstune.train.recipes.train import train

    run = env.runs / "tiny"
    write(run / "config.yaml", "run:\n  name: tiny\n")
    write(run / "metrics.jsonl", json.dumps({"step": 1, "loss": 1.3}) + "\n")
    (run / "tensorboard").mkdir()
    cfg = load_config(TINY, env.args(f"train.dataset={env.mined / 'dataset'}", "train.max_steps=1",
                                     "data.dev_split=''")[2:])
    with pytest.raises(DataError, match="no step_\\* checkpoint .*; start without --resume"):
        train(cfg, resume="latest")
    assert train(cfg)["steps"] == 1  # no --overwrite needed: nothing trained was there
    assert [s for s, _ in list_checkpoints(run)] == [1] and not (run / ".replaced").exists()
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1]
