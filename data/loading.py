"""Read corpora, queries and qrels from a BEIR folder, MS MARCO style TSV or a Hugging Face dataset."""
from __future__ import annotations

import gzip
import json
import logging
import re
import zlib
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


def iter_lines(path: Path, what: str = "file", hint: str = "check data.path") -> Iterator[tuple[int, str]]:
    """Yield (line number, text) of a UTF-8 file, gzipped when it ends in .gz.

    Bytes are decoded a line at a time so that bad UTF-8 or a truncated .gz names its line; every
    reader goes through here, so no input file can end in a bare UnicodeDecodeError or EOFError.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: {what} not found; {hint}")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a {what}")
    line_no = 0
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            for line_no, raw in enumerate(f, 1):
                try:
                    yield line_no, raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{line_no}: not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                                    "re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        where = f"after line {line_no}" if line_no else "from its first byte"
        raise DataError(f"{path}: truncated or corrupt gzip file {where} ({e}); download or compress it again") from None


def first_existing(folder: Path, names: list[str]) -> Path:
    for name in names:
        if (folder / name).exists():
            return folder / name
    raise DataError(f"{folder}: none of {', '.join(names)} found; point data.path at a folder that has one")


def duplicate_id(path: Path, line_no: int, kind: str, key: str) -> DataError:
    return DataError(f"{path}:{line_no}: {kind} id {key!r} appears a second time; ids must be unique "
                     "(remove or rename one of the two)")


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object); a malformed line stops with the file and line named."""
    for line_no, line in iter_lines(path):
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
        if doc_id in corpus:
            raise duplicate_id(path, line_no, "doc", doc_id)
        corpus[doc_id] = Doc(title=str(obj.get("title") or ""), text=field(obj, "text", path, line_no))
    return corpus


def read_beir_queries(path: Path) -> Queries:
    queries = {}
    for line_no, obj in read_jsonl(path):
        qid = field(obj, "_id", path, line_no)
        if qid in queries:
            raise duplicate_id(path, line_no, "query", qid)
        queries[qid] = field(obj, "text", path, line_no)
    return queries


INTEGER = re.compile(r"^-?\d+$")


def qrels_columns(line: str) -> list[str] | None:
    """BEIR rows are TAB-separated (`query-id<TAB>corpus-id<TAB>score`), so an id may hold spaces; TREC rows
    (`qid 0 docid rel`) may use spaces. Returns [query, doc, score], or None when the shape is wrong."""
    text = line.rstrip("\r\n")
    parts = [p.strip() for p in text.split("\t")] if "\t" in text else text.split()
    if len(parts) == 4:
        parts = [parts[0], parts[2], parts[3]]
    return parts if len(parts) == 3 and all(parts) else None


def add_judgment(qrels: Qrels, qid: str, did: str, score: int, where: str) -> None:
    """Refuse a second, different judgment of one (query, doc) pair: one would silently overwrite the other."""
    if did in qrels.get(qid, {}):
        if qrels[qid][did] != score:
            raise DataError(f"{where}: query {qid!r} and doc {did!r} are judged again, now with score {score} "
                            f"(earlier: {qrels[qid][did]}); keep one judgment per pair")
        # the same judgment repeated (often from concatenated qrels files) means the same thing: warn, keep one
        log.warning("%s: repeats an earlier judgment of query %r and doc %r; kept once", where, qid, did)
        return
    qrels.setdefault(qid, {})[did] = score


def read_qrels_tsv(path: Path) -> Qrels:
    """BEIR qrels: `query-id<TAB>corpus-id<TAB>score` with an optional header; TREC qrels: `qid 0 docid rel`."""
    qrels: Qrels = {}
    first = True
    for line_no, line in iter_lines(path, "qrels file", "check data.path and the split name"):
        if not line.strip():
            continue
        parts = qrels_columns(line)
        if first and not INTEGER.match(line.split()[-1]):
            first = False
            continue  # header row: only the first line may be one
        first = False
        if parts is None or not INTEGER.match(parts[2]):
            raise DataError(f"{path}:{line_no}: expected 'query-id<TAB>doc-id<TAB>integer score' "
                            f"(or TREC 'qid 0 doc-id score'), got {line.strip()!r}")
        add_judgment(qrels, parts[0], parts[1], int(parts[2]), f"{path}:{line_no}")
    if not qrels:
        raise DataError(f"{path}: no judgments (the file is empty or holds only a header); "
                        "add 'query-id<TAB>doc-id<TAB>score' rows or pick another split")
    return qrels


def read_tsv_pairs(path: Path, kind: str) -> dict[str, str]:
    out = {}
    for line_no, line in iter_lines(path):
        row = line.rstrip("\r\n").split("\t")
        if len(row) < 2:
            raise DataError(f"{path}:{line_no}: expected 'id<TAB>text'")
        if row[0] in out:
            raise duplicate_id(path, line_no, kind, row[0])
        out[row[0]] = "\t".join(row[1:])
    return out


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def looks_like_hub_id(name: str) -> bool:
    """`name` or `org/name`, as the Hugging Face hub spells ids; `./x`, `/x`, `~/x` and `a/b/c` are paths."""
    return bool(HUB_ID.match(name)) and ".." not in name


def missing_folder(path: str) -> DataError:
    return DataError(f"data.path={path}: no such local folder ({Path(path).expanduser().resolve()}); "
                     "fix data.path (a Hugging Face dataset id looks like org/name)")


def detect_format(cfg: DataConfig) -> str:
    if not cfg.path:
        raise DataError("data.path is empty; set it to a BEIR or MS MARCO folder or a Hugging Face dataset id")
    folder = Path(cfg.path)
    if cfg.format != "auto":
        if cfg.format not in ("beir", "msmarco", "hf"):
            raise DataError(f"data.format={cfg.format!r}; use one of auto, beir, msmarco, hf")
        if not folder.exists() and (cfg.format != "hf" or not looks_like_hub_id(cfg.path)):
            raise missing_folder(cfg.path)
        return cfg.format
    if not folder.exists():
        if looks_like_hub_id(cfg.path):
            return "hf"  # a hub id for `datasets`
        raise missing_folder(cfg.path)
    if (folder / "corpus.jsonl").exists() or (folder / "corpus.jsonl.gz").exists():
        return "beir"
    if (folder / "collection.tsv").exists() or (folder / "collection.tsv.gz").exists():
        return "msmarco"
    if folder.is_file() or not any(folder.iterdir()):
        raise DataError(f"{folder}: not a BEIR, MS MARCO or Hugging Face dataset folder; see data.format")
    # anything else is handed to `datasets`: a local folder it can read
    return "hf"


def load_hf_table(path: str, name: str | None, split: str | None):
    import datasets

    try:
        ds = datasets.load_dataset(path, name, split=split)
    except Exception as e:  # datasets raises many types; the one-line reason is what a user needs
        local = "" if Path(path).exists() else f"; there is no local folder {Path(path).resolve()} either"
        raise DataError(f"could not load Hugging Face dataset {path!r} (config {name!r}, split {split!r}): "
                        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}{local}") from None
    return ds


def hf_by_id(ds, path: str, kind: str, value) -> dict:
    """A Hugging Face corpus or queries table by `_id`; a repeated id is an error, as in files."""
    out = {}
    for i, r in enumerate(ds):
        key = str(r["_id"])
        if key in out:
            raise DataError(f"Hugging Face dataset {path!r} ({kind}s) row {i}: {kind} id {key!r} appears a second "
                            "time; ids must be unique")
        out[key] = value(r)
    return out


def qrels_file(folder: Path, name: str) -> Path:
    """`<name>` or `<name>.gz`; the plain name (to report as missing) when neither exists."""
    gz = folder / f"{name}.gz"
    return gz if gz.exists() and not (folder / name).exists() else folder / name


def split_qrels_file(cfg: DataConfig, fmt: str, split: str) -> Path:
    folder = Path(cfg.path)
    return qrels_file(folder / "qrels", f"{split}.tsv") if fmt == "beir" else qrels_file(folder, f"qrels.{split}.tsv")


def load_corpus(cfg: DataConfig) -> Corpus:
    fmt, folder = detect_format(cfg), Path(cfg.path)
    if fmt == "beir":
        corpus = read_beir_corpus(first_existing(folder, ["corpus.jsonl", "corpus.jsonl.gz"]))
    elif fmt == "msmarco":
        texts = read_tsv_pairs(first_existing(folder, ["collection.tsv", "collection.tsv.gz"]), "doc")
        corpus = {k: Doc("", v) for k, v in texts.items()}
    else:
        corpus = hf_by_id(load_hf_table(cfg.path, "corpus", "corpus"), cfg.path, "doc",
                          lambda r: Doc(str(r.get("title") or ""), str(r["text"])))
    if not corpus:
        raise DataError(f"{cfg.path}: the corpus is empty; a reranker needs passages to rank")
    return corpus


def load_queries(cfg: DataConfig, split: str) -> Queries:
    fmt, folder = detect_format(cfg), Path(cfg.path)
    if fmt == "beir":
        return read_beir_queries(first_existing(folder, ["queries.jsonl", "queries.jsonl.gz"]))
    if fmt == "msmarco":
        return read_tsv_pairs(first_existing(folder, [f"queries.{split}.tsv", "queries.tsv"]), "query")
    return hf_by_id(load_hf_table(cfg.path, "queries", "queries"), cfg.path, "query", lambda r: str(r["text"]))


def load_qrels(cfg: DataConfig, split: str) -> Qrels:
    fmt = detect_format(cfg)
    if fmt in ("beir", "msmarco"):
        return read_qrels_tsv(split_qrels_file(cfg, fmt, split))
    path = cfg.qrels_path or f"{cfg.path}-qrels"
    qrels: Qrels = {}
    for i, r in enumerate(load_hf_table(path, None, split)):
        add_judgment(qrels, str(r["query-id"]), str(r["corpus-id"]), int(r["score"]),
                     f"Hugging Face dataset {path!r} split {split!r} row {i}")
    return qrels


def check_files(cfg: DataConfig, splits: list[str]) -> None:
    """Cheap check before a long job: the data folder and the files it will read exist (nothing is parsed)."""
    fmt, folder = detect_format(cfg), Path(cfg.path)
    if fmt == "hf":
        return  # `datasets` resolves hub ids and local layouts itself
    corpus, queries = ("corpus.jsonl", "queries.jsonl") if fmt == "beir" else ("collection.tsv", None)
    first_existing(folder, [corpus, f"{corpus}.gz"])
    for split in {cfg.train_split if s == HOLDOUT else s for s in splits}:  # the holdout is read from train
        if queries:
            first_existing(folder, [queries, f"{queries}.gz"])
        else:
            first_existing(folder, [f"queries.{split}.tsv", "queries.tsv"])
        if not (qrels := split_qrels_file(cfg, fmt, split)).exists():
            raise DataError(f"{qrels}: qrels file not found; check data.path and the split name")


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
