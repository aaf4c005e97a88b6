"""Read corpora, queries and qrels from a BEIR folder, MS MARCO style TSV or a Hugging Face dataset."""
from __future__ import annotations

import csv
import gzip
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from .splits import HOLDOUT, carve_holdout, held_out_passages
from .types import Corpus, DataError, Doc, Qrels, Queries

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    # a BEIR folder (corpus.jsonl[.gz], queries.jsonl, qrels/<split>.tsv), an MS MARCO folder
    # (collection.tsv, queries.<split>.tsv, qrels.<split>.tsv) or a Hugging Face dataset id / local path
    path: str = "data/demo"
    format: str = "auto"  # auto | beir | msmarco | hf
    # for format hf: the dataset holding qrels (BEIR's hub layout keeps them in "<path>-qrels")
    qrels_path: str = ""
    train_split: str = "train"
    # the split that chooses (best checkpoint, early stopping, fusion weights): a qrels split, "holdout" for
    # training queries carved out whole documents at a time (data/splits.py), or empty for no dev checks
    dev_split: Optional[str] = "dev"
    test_split: str = "test"  # the split `crosstune evaluate` reports; never the one that chose
    holdout_queries: int = 100  # with dev_split: holdout, at least this many train queries are held out
    holdout_seed: int = 42
    # passage ids `<document><separator><k>` name their document (else the title does): the holdout keeps
    # whole documents on one side
    document_separator: str = "#"
    # prefix the document title to its text ("<title>: <text>") everywhere a passage is read
    use_title: bool = True


def open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def first_existing(folder: Path, names: list[str]) -> Path:
    for name in names:
        if (folder / name).exists():
            return folder / name
    raise DataError(f"{folder}: none of {', '.join(names)} found; point data.path at a folder that has one")


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object); a malformed line stops with the file and line named."""
    if not path.exists():
        raise DataError(f"{path}: file not found; check data.path")
    with open_text(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{line_no}: malformed JSON ({e.msg}); fix or delete that line") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{line_no}: expected a JSON object per line")
            yield line_no, obj


def field(obj: dict, key: str, path: Path, line_no: int) -> str:
    if key not in obj:
        raise DataError(f"{path}:{line_no}: missing key '{key}' (BEIR rows need '_id' and 'text')")
    return str(obj[key])


def read_beir_corpus(path: Path) -> Corpus:
    corpus = {}
    for line_no, obj in read_jsonl(path):
        doc_id = field(obj, "_id", path, line_no)
        corpus[doc_id] = Doc(title=str(obj.get("title") or ""), text=field(obj, "text", path, line_no))
    return corpus


def read_beir_queries(path: Path) -> Queries:
    return {field(o, "_id", path, n): field(o, "text", path, n) for n, o in read_jsonl(path)}


def read_qrels_tsv(path: Path) -> Qrels:
    """BEIR qrels: `query-id<TAB>corpus-id<TAB>score` with a header; TREC qrels: `qid 0 docid rel`."""
    if not path.exists():
        raise DataError(f"{path}: qrels file not found; check data.path and the split name")
    qrels: Qrels = {}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            parts = line.split()
            if not parts or (line_no == 1 and not parts[-1].lstrip("-").isdigit()):
                continue  # blank line or header row
            if len(parts) == 4:
                parts = [parts[0], parts[2], parts[3]]
            if len(parts) != 3 or not parts[2].lstrip("-").isdigit():
                raise DataError(f"{path}:{line_no}: expected 'query-id<TAB>doc-id<TAB>integer score', got {line.strip()!r}")
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return qrels


def read_tsv_pairs(path: Path) -> dict[str, str]:
    if not path.exists():
        raise DataError(f"{path}: file not found; check data.path")
    out = {}
    with open_text(path) as f:
        for line_no, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if len(row) < 2:
                raise DataError(f"{path}:{line_no}: expected 'id<TAB>text'")
            out[row[0]] = row[-1] if len(row) == 2 else "\t".join(row[1:])
    return out


def detect_format(cfg: DataConfig) -> str:
    if cfg.format != "auto":
        if cfg.format not in ("beir", "msmarco", "hf"):
            raise DataError(f"data.format={cfg.format!r}; use one of auto, beir, msmarco, hf")
        return cfg.format
    folder = Path(cfg.path)
    if (folder / "corpus.jsonl").exists() or (folder / "corpus.jsonl.gz").exists():
        return "beir"
    if (folder / "collection.tsv").exists() or (folder / "collection.tsv.gz").exists():
        return "msmarco"
    if folder.is_file() or (folder.exists() and not any(folder.iterdir())):
        raise DataError(f"{folder}: not a BEIR, MS MARCO or Hugging Face dataset folder; see data.format")
    # anything else is handed to `datasets`: a hub id, or a local folder it can read
    return "hf"


def load_hf_table(path: str, name: str | None, split: str | None):
    import datasets

    try:
        ds = datasets.load_dataset(path, name, split=split)
    except Exception as e:  # datasets raises many types; the one-line reason is what a user needs
        raise DataError(f"could not load Hugging Face dataset {path!r} (config {name!r}, split {split!r}): "
                        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    return ds


def load_corpus(cfg: DataConfig) -> Corpus:
    fmt, folder = detect_format(cfg), Path(cfg.path)
    if fmt == "beir":
        corpus = read_beir_corpus(first_existing(folder, ["corpus.jsonl", "corpus.jsonl.gz"]))
    elif fmt == "msmarco":
        texts = read_tsv_pairs(first_existing(folder, ["collection.tsv", "collection.tsv.gz"]))
        corpus = {k: Doc("", v) for k, v in texts.items()}
    else:
        ds = load_hf_table(cfg.path, "corpus", "corpus")
        corpus = {str(r["_id"]): Doc(str(r.get("title") or ""), str(r["text"])) for r in ds}
    if not corpus:
        raise DataError(f"{cfg.path}: the corpus is empty; a reranker needs passages to rank")
    return corpus


def load_queries(cfg: DataConfig, split: str) -> Queries:
    fmt, folder = detect_format(cfg), Path(cfg.path)
    if fmt == "beir":
        return read_beir_queries(first_existing(folder, ["queries.jsonl", "queries.jsonl.gz"]))
    if fmt == "msmarco":
        return read_tsv_pairs(first_existing(folder, [f"queries.{split}.tsv", "queries.tsv"]))
    ds = load_hf_table(cfg.path, "queries", "queries")
    return {str(r["_id"]): str(r["text"]) for r in ds}


def load_qrels(cfg: DataConfig, split: str) -> Qrels:
    fmt, folder = detect_format(cfg), Path(cfg.path)
    if fmt == "beir":
        return read_qrels_tsv(folder / "qrels" / f"{split}.tsv")
    if fmt == "msmarco":
        return read_qrels_tsv(folder / f"qrels.{split}.tsv")
    ds = load_hf_table(cfg.qrels_path or f"{cfg.path}-qrels", None, split)
    qrels: Qrels = {}
    for r in ds:
        qrels.setdefault(str(r["query-id"]), {})[str(r["corpus-id"])] = int(r["score"])
    return qrels


def check_qrels(qrels: Qrels, corpus: Corpus, queries: Queries, where: str) -> Qrels:
    """Keep judgments whose query and document exist; warn with counts, stop if nothing matches."""
    unknown_q = [q for q in qrels if q not in queries]
    unknown_d = sum(1 for q in qrels if q in queries for d in qrels[q] if d not in corpus)
    kept = {q: {d: r for d, r in docs.items() if d in corpus} for q, docs in qrels.items() if q in queries}
    kept = {q: docs for q, docs in kept.items() if docs}
    if not kept:
        raise DataError(f"{where}: no judgment names a known query and document "
                        f"({len(unknown_q)} unknown query ids, {unknown_d} unknown doc ids); "
                        "are the qrels from this corpus?")
    if unknown_q or unknown_d:
        log.warning("%s: skipped %d judgments of unknown queries and %d of unknown documents",
                    where, sum(len(qrels[q]) for q in unknown_q), unknown_d)
    return kept


def load_split(cfg: DataConfig, split: str, corpus: Corpus) -> tuple[Queries, Qrels]:
    """Queries and qrels of one split, restricted to queries that have judgments. With dev_split "holdout", the
    train split loses the held-out queries and "holdout" is them."""
    carved = split == HOLDOUT or (split == cfg.train_split and cfg.dev_split == HOLDOUT)
    source = cfg.train_split if carved else split
    queries = load_queries(cfg, source)
    qrels = check_qrels(load_qrels(cfg, source), corpus, queries, f"{cfg.path} split {source!r}")
    if carved:
        held = holdout_queries(cfg, qrels, corpus)
        qrels = {q: d for q, d in qrels.items() if (q in held) == (split == HOLDOUT)}
    return {q: queries[q] for q in qrels}, qrels


def holdout_queries(cfg: DataConfig, train_qrels: Qrels, corpus: Corpus) -> set[str]:
    held = carve_holdout(train_qrels, corpus, cfg.holdout_queries, cfg.holdout_seed, cfg.document_separator)
    if not held:
        raise DataError(f"data.dev_split=holdout: the {cfg.train_split!r} split's queries all judge one document "
                        "group, so none can be held out; name a dev split (data.dev_split) instead")
    return held


def holdout_passages(cfg: DataConfig, corpus: Corpus) -> set[str]:
    """Passages of the documents the holdout judges (empty without a holdout): mining keeps them out of training."""
    if cfg.dev_split != HOLDOUT:
        return set()
    queries = load_queries(cfg, cfg.train_split)
    qrels = check_qrels(load_qrels(cfg, cfg.train_split), corpus, queries, f"{cfg.path} split {cfg.train_split!r}")
    return held_out_passages(holdout_queries(cfg, qrels, corpus), qrels, corpus, cfg.document_separator)
