"""Read corpora, queries and qrels from a BEIR folder, MS MARCO style TSV, a Hugging Face dataset or a folder of
document files (PDF, DOCX, HTML, .txt, .md: readers.py)."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .chunking import Chunking, chunk_corpus, tokenizer_spans, word_spans
from .chunking import validate as validate_chunking
from .readers import (
    add_judgment,
    first_existing,
    has_documents,
    read_beir_corpus,
    read_beir_queries,
    read_document_folder,
    read_qrels_tsv,
    read_tsv_pairs,
    text_folder,
)
from .splits import HOLDOUT, carve_holdout
from .types import Corpus, DataError, Doc, Qrels, Queries

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    # a BEIR folder (corpus.jsonl[.gz], queries.jsonl, qrels/<split>.tsv), an MS MARCO folder
    # (collection.tsv, queries.<split>.tsv, qrels.<split>.tsv), a Hugging Face dataset id / local path, or a folder
    # of PDF, DOCX, HTML, .txt and .md documents (in corpus/ or the folder itself, at any depth; queries.jsonl and
    # qrels/ beside them, as in BEIR)
    path: str = "data/demo"
    format: str = "auto"  # auto | beir | msmarco | hf | folder
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
    # whole documents in, passages inside (data/chunking.py): none keeps corpus entries as they are; tokens cuts
    # windows of chunk_size tokens every chunk_stride tokens; paragraphs packs whole lines (else sentences) into
    # up to chunk_size tokens. Passage ids are <document>@<start>-<end> (character offsets into the document)
    chunking: str = "none"
    chunk_size: int = 256  # tokens per passage; the title and the query come on top within model.max_length
    chunk_stride: int = 0  # tokens from one passage's start to the next (< chunk_size overlaps); 0: chunk_size
    # whose tokens: "model" (model.name's tokenizer: sizes mean what max_length means), "words", or a tokenizer
    # name or folder
    chunk_tokenizer: str = "model"
    # what the qrels judge: passage (corpus ids), document (documents, before chunking), span (character offsets,
    # qrels/<split>.spans.tsv); auto: span if that file exists, document when chunking, else passage
    judgments: str = "auto"
    relevance_threshold: int = 1  # the least grade that is relevant; judged grades below it are known negatives
    span_coverage: float = 0.3  # share of a span a passage must hold (of itself, if the span is longer) to be positive


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
        if cfg.format not in ("beir", "msmarco", "hf", "folder"):
            raise DataError(f"data.format={cfg.format!r}; use one of auto, beir, msmarco, hf, folder")
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
    if folder.is_dir() and ((folder / "corpus").is_dir() or has_documents(folder)):
        return "folder"  # document files at any depth (a lone README.md does not make a folder of documents)
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
    if fmt in ("beir", "folder"):
        return qrels_file(folder / "qrels", f"{split}.tsv")
    return qrels_file(folder, f"qrels.{split}.tsv")


def chunking_of(cfg: DataConfig) -> Chunking:
    return Chunking(cfg.chunking, cfg.chunk_size, cfg.chunk_stride)


def token_spans(cfg: DataConfig, tokenizer=None):
    """How chunking counts tokens: the tokenizer given (the model's, passed in by crosstune's commands), regex words,
    or a tokenizer named in data.chunk_tokenizer."""
    name = cfg.chunk_tokenizer
    if name == "words":
        return word_spans
    if name in ("model", ""):
        if tokenizer is None:
            raise DataError("data.chunk_tokenizer=model: pass the model's tokenizer (load_corpus(cfg, tokenizer)), or "
                            "set data.chunk_tokenizer to words or a tokenizer name")
        return tokenizer_spans(tokenizer)
    from transformers import AutoTokenizer

    try:
        return tokenizer_spans(AutoTokenizer.from_pretrained(name))
    except OSError as e:
        raise DataError(f"data.chunk_tokenizer={name!r}: cannot load it ({str(e).splitlines()[0]}); use model, words, "
                        "or a tokenizer folder") from None


def load_corpus(cfg: DataConfig, tokenizer=None) -> Corpus:
    """The corpus as every stage reads it: its entries, or with data.chunking the passages cut from them."""
    validate_chunking(chunking_of(cfg))
    documents = load_documents(cfg)
    if cfg.chunking == "none":
        return documents
    passages = chunk_corpus(documents, chunking_of(cfg), token_spans(cfg, tokenizer))
    if hasattr(documents, "reading"):
        passages.reading = documents.reading  # files read and skipped (readers.py), for mined/stats.json
    return passages


def load_documents(cfg: DataConfig) -> Corpus:
    fmt, folder = detect_format(cfg), Path(cfg.path)
    if fmt == "folder":
        corpus = read_document_folder(text_folder(folder), data_root=text_folder(folder) == folder)
    elif fmt == "beir":
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
    if fmt in ("beir", "folder"):
        return read_beir_queries(first_existing(folder, ["queries.jsonl", "queries.jsonl.gz"]))
    if fmt == "msmarco":
        return read_tsv_pairs(first_existing(folder, [f"queries.{split}.tsv", "queries.tsv"]), "query")
    return hf_by_id(load_hf_table(cfg.path, "queries", "queries"), cfg.path, "query", lambda r: str(r["text"]))


def load_qrels(cfg: DataConfig, split: str) -> Qrels:
    fmt = detect_format(cfg)
    if fmt in ("beir", "msmarco", "folder"):
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
    corpus, queries = ("corpus.jsonl", "queries.jsonl") if fmt in ("beir", "folder") else ("collection.tsv", None)
    if fmt != "folder":
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


def carved(cfg: DataConfig, split: str) -> bool:
    return split == HOLDOUT or (split == cfg.train_split and cfg.dev_split == HOLDOUT)


def split_source(cfg: DataConfig, split: str) -> str:
    """The qrels split a split is read from: the holdout is carved out of train."""
    return cfg.train_split if carved(cfg, split) else split


def keep_side(cfg: DataConfig, split: str, qrels: Qrels, corpus: Corpus) -> Qrels:
    """With dev_split "holdout", the train split loses the held-out queries and "holdout" is them."""
    if not carved(cfg, split):
        return qrels
    held = holdout_queries(cfg, qrels, corpus)
    return {q: d for q, d in qrels.items() if (q in held) == (split == HOLDOUT)}


def with_threshold(qrels: Qrels, threshold: int) -> Qrels:
    """Grades below data.relevance_threshold become 0: judged, and known not to be relevant. Every later stage then
    reads one rule (> 0 is relevant) and nDCG's gains are the grades that count."""
    if threshold == 1:
        return qrels
    return {q: {d: (r if r >= threshold else 0) for d, r in docs.items()} for q, docs in qrels.items()}


def load_split(cfg: DataConfig, split: str, corpus: Corpus) -> tuple[Queries, Qrels]:
    """Queries and passage qrels of one split, restricted to queries that have judgments, thresholded at
    data.relevance_threshold. With dev_split "holdout", the train split loses the held-out queries and "holdout" is
    them. (Document and span judgments: data/judgments.py load_judgments.)"""
    source = split_source(cfg, split)
    queries = load_queries(cfg, source)
    qrels = check_qrels(load_qrels(cfg, source), corpus, queries, f"{cfg.path} split {source!r}")
    qrels = keep_side(cfg, split, with_threshold(qrels, cfg.relevance_threshold), corpus)
    return {q: queries[q] for q in qrels}, qrels


def holdout_queries(cfg: DataConfig, train_qrels: Qrels, corpus: Corpus) -> set[str]:
    held = carve_holdout(train_qrels, corpus, cfg.holdout_queries, cfg.holdout_seed, cfg.document_separator)
    if not held:
        raise DataError(f"data.dev_split=holdout: the {cfg.train_split!r} split's queries all judge one document "
                        "group, so none can be held out; name a dev split (data.dev_split) instead")
    return held
