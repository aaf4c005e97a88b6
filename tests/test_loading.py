"""data/loading.py: BEIR, MS MARCO and Hugging Face layouts, error messages, the bundled demo set."""
from __future__ import annotations

import gzip
import json
import logging
import re
from pathlib import Path

import pytest

from crosstune.data.loading import (
    DataConfig,
    check_qrels,
    detect_format,
    load_corpus,
    load_qrels,
    load_queries,
    load_split,
    read_qrels_tsv,
)
from crosstune.data.types import DataError, Doc, doc_text

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"

CORPUS_ROWS = [
    {"_id": "d1", "title": "Lease Agreement", "text": "The tenant pays rent monthly."},
    {"_id": "d2", "title": "", "text": "Deposits are returned within 30 days."},
    {"_id": "d3", "text": "No title key at all."},
    {"_id": 4, "title": None, "text": "Numeric id and null title."},
]
QUERY_ROWS = [
    {"_id": "q1", "text": "when is rent due"},
    {"_id": "q2", "text": "deposit refund"},
    {"_id": "q3", "text": "a query without judgments in train"},
]


def write_jsonl(path: Path, rows: list[dict], gz: bool = False) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def make_beir(folder: Path, gz: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / ("corpus.jsonl.gz" if gz else "corpus.jsonl"), CORPUS_ROWS, gz=gz)
    write_jsonl(folder / "queries.jsonl", QUERY_ROWS)
    (folder / "qrels").mkdir(exist_ok=True)
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\nq2\td1\t0\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq3\td3\t1\n")
    return folder


# ---------------------------------------------------------------- BEIR


@pytest.mark.parametrize("gz", [False, True], ids=["jsonl", "jsonl.gz"])
def test_beir_folder_loads(tmp_path, gz):
    folder = make_beir(tmp_path / "beir", gz=gz)
    cfg = DataConfig(path=str(folder))
    assert detect_format(cfg) == "beir"
    corpus = load_corpus(cfg)
    assert corpus == {
        "d1": Doc("Lease Agreement", "The tenant pays rent monthly."),
        "d2": Doc("", "Deposits are returned within 30 days."),
        "d3": Doc("", "No title key at all."),
        "4": Doc("", "Numeric id and null title."),
    }
    assert list(corpus) == ["d1", "d2", "d3", "4"]  # file order is kept
    assert doc_text(corpus["d1"]) == "Lease Agreement: The tenant pays rent monthly."
    assert doc_text(corpus["d1"], use_title=False) == "The tenant pays rent monthly."
    assert doc_text(corpus["d2"]) == "Deposits are returned within 30 days."

    assert load_queries(cfg, "train") == {q["_id"]: q["text"] for q in QUERY_ROWS}
    assert load_qrels(cfg, "train") == {"q1": {"d1": 1}, "q2": {"d2": 2, "d1": 0}}

    queries, qrels = load_split(cfg, "train", corpus)
    assert queries == {"q1": "when is rent due", "q2": "deposit refund"}  # q3 has no train judgment
    assert qrels == {"q1": {"d1": 1}, "q2": {"d2": 2, "d1": 0}}
    queries, qrels = load_split(cfg, "test", corpus)
    assert queries == {"q3": "a query without judgments in train"}
    assert qrels == {"q3": {"d3": 1}}


def test_explicit_format_overrides_detection(tmp_path):
    folder = make_beir(tmp_path / "beir")
    assert detect_format(DataConfig(path=str(folder), format="beir")) == "beir"
    with pytest.raises(DataError, match=r"data.format='parquet'"):
        detect_format(DataConfig(path=str(folder), format="parquet"))


def test_detect_format_rejects_empty_folder_and_file(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="not a BEIR, MS MARCO or Hugging Face"):
        detect_format(DataConfig(path=str(empty)))
    a_file = tmp_path / "corpus.txt"
    a_file.write_text("x")
    with pytest.raises(DataError, match="not a BEIR, MS MARCO or Hugging Face"):
        detect_format(DataConfig(path=str(a_file)))
    # a folder holding something else (e.g. a README with configs) goes to `datasets`
    other = tmp_path / "hub_like"
    other.mkdir()
    (other / "README.md").write_text("---\n---\n")
    assert detect_format(DataConfig(path=str(other))) == "hf"


def test_qrels_reader_header_and_trec_forms(tmp_path):
    beir = tmp_path / "beir.tsv"
    beir.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n\nq1\td2\t-1\nq2\td1\t0\n")
    assert read_qrels_tsv(beir) == {"q1": {"d1": 1, "d2": -1}, "q2": {"d1": 0}}
    trec = tmp_path / "trec.txt"
    # no header: the first line is a judgment and must be kept
    trec.write_text("101 0 7 1\n101 0 8 0\n102 Q0 9 2\n")
    assert read_qrels_tsv(trec) == {"101": {"7": 1, "8": 0}, "102": {"9": 2}}
    bad = tmp_path / "bad.tsv"
    bad.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\trelevant\n")
    with pytest.raises(DataError, match=r"bad\.tsv:3: expected 'query-id<TAB>doc-id<TAB>integer score'"):
        read_qrels_tsv(bad)


# ---------------------------------------------------------------- MS MARCO


def make_msmarco(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "collection.tsv").write_text(
        "0\tThe tenant pays rent monthly.\n"
        '1\tA "quoted" passage stays verbatim.\n'
        "2\ttext with\ta tab inside\n",
        encoding="utf-8")
    (folder / "queries.train.tsv").write_text("100\twhen is rent due\n101\tquoted passage\n102\tunjudged\n")
    (folder / "queries.dev.tsv").write_text("200\ttab text\n")
    # TREC qrels: qid 0 docid rel, no header
    (folder / "qrels.train.tsv").write_text("100\t0\t0\t1\n101\t0\t1\t1\n101\t0\t2\t0\n")
    (folder / "qrels.dev.tsv").write_text("200 0 2 1\n")
    return folder


def test_msmarco_folder_loads(tmp_path):
    folder = make_msmarco(tmp_path / "msmarco")
    cfg = DataConfig(path=str(folder))
    assert detect_format(cfg) == "msmarco"
    corpus = load_corpus(cfg)
    assert corpus == {
        "0": Doc("", "The tenant pays rent monthly."),
        "1": Doc("", 'A "quoted" passage stays verbatim.'),
        "2": Doc("", "text with\ta tab inside"),
    }
    assert load_queries(cfg, "train") == {"100": "when is rent due", "101": "quoted passage", "102": "unjudged"}
    assert load_queries(cfg, "dev") == {"200": "tab text"}
    assert load_qrels(cfg, "train") == {"100": {"0": 1}, "101": {"1": 1, "2": 0}}
    queries, qrels = load_split(cfg, "dev", corpus)
    assert queries == {"200": "tab text"} and qrels == {"200": {"2": 1}}


def test_msmarco_falls_back_to_queries_tsv_and_reads_gz_collection(tmp_path):
    folder = tmp_path / "msmarco"
    folder.mkdir()
    with gzip.open(folder / "collection.tsv.gz", "wt", encoding="utf-8") as f:
        f.write("7\tpassage seven\n")
    (folder / "queries.tsv").write_text("1\tseven\n")
    cfg = DataConfig(path=str(folder))
    assert detect_format(cfg) == "msmarco"
    assert load_corpus(cfg) == {"7": Doc("", "passage seven")}
    assert load_queries(cfg, "test") == {"1": "seven"}


def test_msmarco_row_without_text_names_line(tmp_path):
    folder = make_msmarco(tmp_path / "msmarco")
    (folder / "collection.tsv").write_text("0\tok\n1\n")
    with pytest.raises(DataError, match=r"collection\.tsv:2: expected 'id<TAB>text'"):
        load_corpus(DataConfig(path=str(folder)))


# ---------------------------------------------------------------- Hugging Face (local folders via datasets)

HF_CORPUS_README = """---
configs:
- config_name: corpus
  data_files:
  - split: corpus
    path: corpus.jsonl
- config_name: queries
  data_files:
  - split: queries
    path: queries.jsonl
---
# tiny BEIR-style dataset
"""

HF_QRELS_README = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: train.tsv
  - split: test
    path: test.tsv
---
"""


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """Keep `datasets`' cache out of the home folder and never reach the network."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    return tmp_path / "hf_cache"


def make_hf(root: Path) -> tuple[Path, Path]:
    data = root / "hf_data"
    data.mkdir(parents=True)
    (data / "README.md").write_text(HF_CORPUS_README)
    write_jsonl(data / "corpus.jsonl", [
        {"_id": "d1", "title": "Lease", "text": "rent is due monthly"},
        {"_id": "d2", "title": "", "text": "deposits come back"},
        {"_id": "d3", "title": "Policy", "text": "cookies are stored"},
    ])
    write_jsonl(data / "queries.jsonl", [{"_id": "q1", "text": "rent due"}, {"_id": "q2", "text": "cookies"},
                                         {"_id": "q3", "text": "deposit"}])
    qrels = root / "hf_qrels"
    qrels.mkdir()
    (qrels / "README.md").write_text(HF_QRELS_README)
    (qrels / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq3\td2\t2\nq3\td1\t0\n")
    (qrels / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq2\td3\t1\n")
    return data, qrels


def test_hf_local_folder_loads_through_datasets(tmp_path, hf_cache):
    data, qrels_folder = make_hf(tmp_path)
    cfg = DataConfig(path=str(data), format="hf", qrels_path=str(qrels_folder))
    corpus = load_corpus(cfg)
    assert corpus == {"d1": Doc("Lease", "rent is due monthly"), "d2": Doc("", "deposits come back"),
                      "d3": Doc("Policy", "cookies are stored")}
    assert load_queries(cfg, "train") == {"q1": "rent due", "q2": "cookies", "q3": "deposit"}
    assert load_qrels(cfg, "train") == {"q1": {"d1": 1}, "q3": {"d2": 2, "d1": 0}}
    queries, qrels = load_split(cfg, "test", corpus)
    assert queries == {"q2": "cookies"} and qrels == {"q2": {"d3": 1}}
    assert hf_cache.exists()  # the real `datasets` code path ran (and cached under the tmp folder)


def test_hf_unknown_split_is_a_data_error(tmp_path, hf_cache):
    data, qrels_folder = make_hf(tmp_path)
    cfg = DataConfig(path=str(data), format="hf", qrels_path=str(qrels_folder))
    with pytest.raises(DataError, match=r"could not load Hugging Face dataset .*hf_qrels.*split 'dev'"):
        load_qrels(cfg, "dev")


# ---------------------------------------------------------------- bad input


def test_missing_files_are_named(tmp_path):
    folder = tmp_path / "beir"
    folder.mkdir()
    write_jsonl(folder / "corpus.jsonl", CORPUS_ROWS)
    cfg = DataConfig(path=str(folder))
    with pytest.raises(DataError, match=r"none of queries\.jsonl, queries\.jsonl\.gz found"):
        load_queries(cfg, "train")
    with pytest.raises(DataError, match=r"qrels[/\\]train\.tsv: qrels file not found"):
        load_qrels(cfg, "train")
    (folder / "corpus.jsonl").unlink()
    with pytest.raises(DataError, match=r"none of corpus\.jsonl, corpus\.jsonl\.gz found"):
        load_corpus(DataConfig(path=str(folder), format="beir"))
    ms = tmp_path / "ms"
    ms.mkdir()
    (ms / "collection.tsv").write_text("0\tx\n")
    with pytest.raises(DataError, match=r"none of queries\.dev\.tsv, queries\.tsv found"):
        load_queries(DataConfig(path=str(ms)), "dev")
    with pytest.raises(DataError, match=r"qrels\.dev\.tsv: qrels file not found"):
        load_qrels(DataConfig(path=str(ms)), "dev")


@pytest.mark.parametrize("gz", [False, True], ids=["jsonl", "jsonl.gz"])
def test_malformed_json_line_names_file_and_line(tmp_path, gz):
    folder = make_beir(tmp_path / "beir", gz=gz)
    name = "corpus.jsonl.gz" if gz else "corpus.jsonl"
    text = json.dumps(CORPUS_ROWS[0]) + "\n\n" + '{"_id": "d2", "text": "unterminated\n' + json.dumps(CORPUS_ROWS[1]) + "\n"
    if gz:
        with gzip.open(folder / name, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        (folder / name).write_text(text)
    with pytest.raises(DataError, match=re.escape(name) + ":3: malformed JSON") as e:
        load_corpus(DataConfig(path=str(folder)))
    assert str(folder / name) in str(e.value)


def test_non_object_line_and_missing_key(tmp_path):
    folder = make_beir(tmp_path / "beir")
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "ok"}\n["a", "list"]\n')
    with pytest.raises(DataError, match=r"queries\.jsonl:2: expected a JSON object per line"):
        load_queries(DataConfig(path=str(folder)), "train")
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "ok"}\n{"_id": "d2", "body": "no text"}\n')
    with pytest.raises(DataError, match=r"corpus\.jsonl:2: missing key 'text'"):
        load_corpus(DataConfig(path=str(folder)))


def test_empty_corpus_is_an_error(tmp_path):
    folder = make_beir(tmp_path / "beir")
    (folder / "corpus.jsonl").write_text("\n  \n")
    with pytest.raises(DataError, match="the corpus is empty"):
        load_corpus(DataConfig(path=str(folder)))
    ms = tmp_path / "ms"
    ms.mkdir()
    (ms / "collection.tsv").write_text("")
    with pytest.raises(DataError, match="the corpus is empty"):
        load_corpus(DataConfig(path=str(ms)))


def test_qrels_with_unknown_ids_warn_and_keep_the_rest(caplog):
    corpus = {"d1": Doc("", "a"), "d2": Doc("", "b")}
    queries = {"q1": "x", "q2": "y"}
    qrels = {"q1": {"d1": 1, "dX": 1}, "q2": {"dY": 1}, "qZ": {"d1": 1, "d2": 0}}
    with caplog.at_level(logging.WARNING, logger="data.loading"):
        kept = check_qrels(qrels, corpus, queries, "where")
    assert kept == {"q1": {"d1": 1}}  # q2 lost its only judgment, qZ is not a known query
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].getMessage() == "where: skipped 2 judgments of unknown queries and 2 of unknown documents"


def test_qrels_without_any_match_is_a_data_error(caplog):
    corpus = {"d1": Doc("", "a")}
    with pytest.raises(DataError, match=r"where: no judgment names a known query and document "
                                        r"\(1 unknown query ids, 1 unknown doc ids\)"):
        check_qrels({"q1": {"dX": 1}, "qZ": {"d1": 1}}, corpus, {"q1": "x"}, "where")


def test_load_split_warns_about_unknown_ids(tmp_path, caplog):
    folder = make_beir(tmp_path / "beir")
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\tghost\t1\nqq\td2\t1\n")
    cfg = DataConfig(path=str(folder))
    corpus = load_corpus(cfg)
    with caplog.at_level(logging.WARNING, logger="data.loading"):
        queries, qrels = load_split(cfg, "train", corpus)
    assert queries == {"q1": "when is rent due"} and qrels == {"q1": {"d1": 1}}
    assert "skipped 1 judgments of unknown queries and 1 of unknown documents" in caplog.text
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nghost-q\td1\t1\n")
    with pytest.raises(DataError, match=r"split 'train': no judgment names a known query"):
        load_split(cfg, "train", corpus)


# ---------------------------------------------------------------- bundled demo


def test_demo_set_loads():
    cfg = DataConfig(path=str(DEMO))
    assert detect_format(cfg) == "beir"
    corpus = load_corpus(cfg)
    assert len(corpus) == 229
    assert all(doc.text for doc in corpus.values())
    sizes = {}
    seen: set[str] = set()
    for split in ("train", "dev", "test"):
        queries, qrels = load_split(cfg, split, corpus)
        sizes[split] = len(queries)
        assert set(queries) == set(qrels)
        assert all(any(r > 0 for r in docs.values()) for docs in qrels.values())
        assert not seen & set(queries), f"{split} shares queries with another split"
        seen |= set(queries)
    assert sizes == {"train": 165, "dev": 15, "test": 30}
