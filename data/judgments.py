"""Judgments at three levels, read into one shape: passage grades, document grades, and what mining must not use.

- passage: qrels name corpus ids (`qrels/<split>.tsv`), as always.
- document: qrels name documents (with `data.chunking`, the corpus entries before they were cut). Evaluation ranks
  documents by their passages' scores (eval.aggregate); mining takes as positive each judged document's best
  passage by BM25 (`mining.document_positives: best`) or every passage of it (`each`).
- span: `qrels/<split>.spans.tsv` (MS MARCO layout: `qrels.<split>.spans.tsv`), one span a row:
      query-id<TAB>corpus-id<TAB>start<TAB>end<TAB>score
  with an optional header; `start`/`end` are 0-based character offsets into the document's text (not its title),
  end exclusive: `text[start:end]` is the span. A passage is positive when it holds at least
  `data.span_coverage` of a span (of itself, when the span is longer than it); a passage that holds less of a
  positive span is neither positive nor a negative. A document's grade is its best span's.

Grades: `data.relevance_threshold` is the least grade that counts as relevant; judged grades below it become 0,
so metrics (nDCG with the grades as gains, the rest binary) and mining read one rule: > 0 is relevant, a judged
0 is a known non-relevant passage (a negative mining uses before BM25's unjudged ones).
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .chunking import document_lengths, parse_chunk_id, passage_origin, passages_by_document
from .loading import (
    DataConfig,
    check_qrels,
    detect_format,
    keep_side,
    load_hf_table,
    load_qrels,
    load_queries,
    load_split,
    qrels_file,
    split_source,
    with_threshold,
)
from .readers import INTEGER, iter_lines
from .splits import HOLDOUT, held_out_passages
from .types import Corpus, DataError, Qrels, Queries

log = logging.getLogger(__name__)
LEVELS = ("auto", "passage", "document", "span")
SPAN_HEADER = "query-id\tcorpus-id\tstart\tend\tscore"


@dataclass(frozen=True)
class Span:
    doc: str
    start: int
    end: int
    grade: int


Spans = dict[str, list[Span]]  # query id -> its spans


@dataclass
class Judgments:
    level: str  # passage | document | span
    passages: Qrels  # grades of passages; empty when only documents are judged
    documents: Qrels  # grades of documents; empty when passages do not name their documents
    unsure: dict[str, set[str]] = field(default_factory=dict)  # per query: passages no negative may be drawn from


# -- where judgments come from -----------------------------------------------------------------------------------
def span_file(cfg: DataConfig, split: str) -> Path:
    fmt, folder = detect_format(cfg), Path(cfg.path)
    if fmt == "msmarco":
        return qrels_file(folder, f"qrels.{split}.spans.tsv")
    return qrels_file(folder / "qrels", f"{split}.spans.tsv")


def judgment_level(cfg: DataConfig, split: str) -> str:
    """data.judgments, or (auto) span when a spans file exists, document when documents are chunked, else passage."""
    if cfg.judgments not in LEVELS:
        raise DataError(f"data.judgments={cfg.judgments!r}; choose one of {', '.join(LEVELS)}")
    if cfg.judgments != "auto":
        return cfg.judgments
    source = split_source(cfg, split)
    if detect_format(cfg) != "hf" and span_file(cfg, source).exists():
        return "span"
    return "document" if cfg.chunking != "none" else "passage"


# -- reading spans -----------------------------------------------------------------------------------------------
def read_span_qrels(path: Path, lengths: dict[str, int]) -> tuple[Spans, int]:
    """Spans by query, and how many named a document the corpus lacks (skipped, as check_qrels does). A span that
    does not lie inside its document is an error naming the line."""
    spans: Spans = {}
    seen: dict[tuple[str, str, int, int], int] = {}
    unknown = 0
    for line_no, line in iter_lines(path, "span qrels file", "check data.path and the split name"):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.rstrip("\r\n").split("\t")]
        if line_no == 1 and not INTEGER.match(parts[-1]):
            continue  # header
        if len(parts) != 5 or not all(INTEGER.match(p) for p in parts[2:]) or not all(parts[:2]):
            raise DataError(f"{path}:{line_no}: expected '{SPAN_HEADER.replace(chr(9), '<TAB>')}' with integer "
                            f"offsets and score, got {line.strip()!r}")
        qid, did, start, end, grade = parts[0], parts[1], int(parts[2]), int(parts[3]), int(parts[4])
        if did not in lengths:
            unknown += 1
            continue
        if not 0 <= start < end <= lengths[did]:
            raise DataError(f"{path}:{line_no}: span {start}-{end} does not lie inside document {did!r} "
                            f"({lengths[did]} characters); offsets are 0-based character offsets into the document's "
                            "text, end exclusive, with start < end")
        key = (qid, did, start, end)
        if key in seen and seen[key] != grade:
            raise DataError(f"{path}:{line_no}: query {qid!r} judges span {start}-{end} of {did!r} again, now with "
                            f"score {grade} (earlier: {seen[key]}); keep one judgment per span")
        if key not in seen:
            seen[key] = grade
            spans.setdefault(qid, []).append(Span(did, start, end, grade))
    if not spans and not unknown:
        raise DataError(f"{path}: no span judgments (the file is empty or holds only a header)")
    return spans, unknown


def read_hf_spans(cfg: DataConfig, split: str, lengths: dict[str, int]) -> tuple[Spans, int]:
    path = cfg.qrels_path or f"{cfg.path}-qrels"
    spans: Spans = {}
    unknown = 0
    for i, r in enumerate(load_hf_table(path, None, split)):
        if "start" not in r or "end" not in r:
            raise DataError(f"Hugging Face dataset {path!r} split {split!r}: data.judgments=span needs 'start' and "
                            "'end' columns (character offsets) beside query-id, corpus-id and score")
        did, start, end = str(r["corpus-id"]), int(r["start"]), int(r["end"])
        if did not in lengths:
            unknown += 1
            continue
        if not 0 <= start < end <= lengths[did]:
            raise DataError(f"Hugging Face dataset {path!r} split {split!r} row {i}: span {start}-{end} does not lie "
                            f"inside document {did!r} ({lengths[did]} characters)")
        spans.setdefault(str(r["query-id"]), []).append(Span(did, start, end, int(r["score"])))
    return spans, unknown


# -- from spans and documents to passages ------------------------------------------------------------------------
def coverage(span: Span, start: int, end: int) -> float:
    """Share of the span the passage [start, end) holds; of the passage, when the span is longer than it."""
    overlap = min(span.end, end) - max(span.start, start)
    return max(0, overlap) / min(span.end - span.start, end - start)


def span_passage_grades(spans: Spans, corpus: Corpus, share: float) -> tuple[Qrels, dict[str, set[str]]]:
    """Passage grades from spans: a passage holding >= `share` of a span takes its grade (the best such); one that
    overlaps a relevant span less is unsure (neither positive nor negative)."""
    by_doc = passages_by_document(corpus)
    qrels: Qrels = {}
    unsure: dict[str, set[str]] = {}
    for qid, query_spans in spans.items():
        grades: dict[str, int] = {}
        partial: set[str] = set()
        for span in query_spans:
            for pid, start, end in by_doc.get(span.doc, []):
                c = coverage(span, start, end)
                if c >= share and c > 0:
                    grades[pid] = max(grades.get(pid, span.grade), span.grade)
                elif c > 0 and span.grade > 0:
                    partial.add(pid)
        qrels[qid] = grades
        unsure[qid] = {p for p in partial if grades.get(p, 0) <= 0}
        for p in unsure[qid]:
            grades.pop(p, None)  # a passage judged 0 by one span and partly holding a relevant one is no negative
    return {q: g for q, g in qrels.items() if g}, unsure


def best_grades(pairs) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, grade in pairs:
        out[key] = max(out.get(key, grade), grade)
    return out


def passages_name_documents(corpus: Corpus, separator: str) -> bool:
    """True when passage ids say which document they were cut from (`<doc>@<start>-<end>` or `<doc>#<k>`)."""
    sample = list(corpus)[:1000]
    return any(parse_chunk_id(p) or (separator and separator in p) for p in sample)


def document_qrels(qrels: Qrels, separator: str) -> Qrels:
    """Each document's best passage grade: the document is relevant when one of its passages is."""
    return {q: best_grades((passage_origin(d, separator)[0], r) for d, r in docs.items()) for q, docs in qrels.items()}


def mining_qrels(judged: Judgments, corpus: Corpus, scores_of: Callable[[str, list[str]], list[float]],
                 queries: Queries, mode: str = "best") -> tuple[Qrels, dict[str, set[str]]]:
    """Passage grades for mining, and per query the passages no negative may be drawn from. For document judgments:
    a relevant document gives its best passage by BM25 (mode best) or each passage (each); the other passages of a
    relevant document are unsure (the answer may be in any of them); a document judged non-relevant gives its best
    passage as a known negative (any passage of it is non-relevant; the best-matching one is the hardest)."""
    if judged.level != "document":
        return judged.passages, judged.unsure
    by_doc = passages_by_document(corpus)
    qrels: Qrels = {}
    unsure: dict[str, set[str]] = {}
    for qid, docs in judged.documents.items():
        grades: dict[str, int] = {}
        for doc, grade in sorted(docs.items()):
            pids = [p for p, _, _ in by_doc.get(doc, [])]
            if not pids:
                continue
            if grade > 0 and mode == "each":
                grades.update(dict.fromkeys(pids, grade))
                continue
            scores = scores_of(queries[qid], pids)
            best = pids[max(range(len(pids)), key=lambda i: (scores[i], -i))]  # ties: the earlier passage
            grades[best] = grade
            if grade > 0:
                unsure.setdefault(qid, set()).update(p for p in pids if p != best)
        qrels[qid] = grades
    return qrels, unsure


# -- one split ---------------------------------------------------------------------------------------------------
def require_relevant(cfg: DataConfig, split: str, grades, raw_grades: Callable[[], list[int]]) -> None:
    """Stop before the index is built when no judgment of the split reaches data.relevance_threshold: mining
    would find no positive and evaluation nothing to find. `raw_grades` (the grades as the qrels hold them) is
    read only then."""
    if any(g > 0 for g in grades):
        return
    counts, t, source = sorted(Counter(raw_grades()).items()), cfg.relevance_threshold, split_source(cfg, split)
    low, top = (counts[0][0], counts[-1][0]) if counts else (0, 0)
    span = f"only {top}" if low == top else f"{low}-{top}"
    held = f"grade {span} ({', '.join(f'{g}: {n}' for g, n in counts)})" if counts else "are none"
    fix = f"lower it to at most {top}" if top > 0 else "no grade is above 0: check the qrels file and its score column"
    raise DataError(f"data.relevance_threshold={t} but the {source!r} split's judgments ({cfg.path}) {held}; no "
                    f"judgment counts as relevant; {fix}")


def load_judgments(cfg: DataConfig, split: str, corpus: Corpus) -> tuple[Queries, Judgments]:
    """Queries and judgments of one split at the level the data holds (data.judgments), thresholded at
    data.relevance_threshold; with dev_split holdout, train loses the held-out queries as load_split does."""
    level = judgment_level(cfg, split)
    if level == "passage":
        queries, qrels = load_split(cfg, split, corpus)
        require_relevant(cfg, split, (r for docs in qrels.values() for r in docs.values()),
                         lambda: [r for docs in load_qrels(cfg, split_source(cfg, split)).values() for r in docs.values()])
        sep = cfg.document_separator
        docs = document_qrels(qrels, sep) if passages_name_documents(corpus, sep) else {}
        return queries, Judgments("passage", qrels, docs)
    source = split_source(cfg, split)
    queries = load_queries(cfg, source)
    lengths = document_lengths(corpus)
    where = f"{cfg.path} split {source!r}"
    if level == "document":
        raw = check_qrels(load_qrels(cfg, source), lengths, queries, where)
        qrels = with_threshold(raw, cfg.relevance_threshold)
        require_relevant(cfg, split, (r for docs in qrels.values() for r in docs.values()),
                         lambda: [r for docs in raw.values() for r in docs.values()])
        qrels = keep_side(cfg, split, qrels, corpus)
        return {q: queries[q] for q in qrels}, Judgments("document", {}, qrels)
    spans, unknown = (read_hf_spans(cfg, source, lengths) if detect_format(cfg) == "hf"
                      else read_span_qrels(span_file(cfg, source), lengths))
    spans = {q: s for q, s in spans.items() if q in queries}
    if unknown:
        log.warning("%s: skipped %d span judgments of documents the corpus lacks", where, unknown)
    t = cfg.relevance_threshold
    require_relevant(cfg, split, (s.grade for ss in spans.values() for s in ss if s.grade >= t),
                     lambda: [s.grade for ss in spans.values() for s in ss])
    spans = {q: [Span(s.doc, s.start, s.end, s.grade if s.grade >= t else 0) for s in ss] for q, ss in spans.items()}
    documents = {q: best_grades((s.doc, s.grade) for s in ss) for q, ss in spans.items()}
    if not documents:
        raise DataError(f"{where}: no span judgment names a known query and document; are the spans from this corpus?")
    documents = keep_side(cfg, split, documents, corpus)
    passages, unsure = span_passage_grades({q: spans[q] for q in documents}, corpus, cfg.span_coverage)
    return {q: queries[q] for q in documents}, Judgments("span", passages, documents, unsure)


def holdout_exclusions(cfg: DataConfig, corpus: Corpus) -> set[str]:
    """Passages of the documents the holdout judges (empty without a holdout), at any judgment level: mining keeps
    them out of every training row."""
    if cfg.dev_split != HOLDOUT:
        return set()
    _, held = load_judgments(cfg, HOLDOUT, corpus)
    qrels = held.documents or held.passages
    return held_out_passages(set(qrels), qrels, corpus, cfg.document_separator)
