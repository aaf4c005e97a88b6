"""Whole documents in, passages inside: cut each document into passages a cross-encoder can read whole.

A passage keeps its document's id and character offsets in its own id, `<document>@<start>-<end>`, so every
result maps back to its place: `document.text[start:end] == passage.text`, exactly. Its title is the document's
(`doc_text` prefixes it, so each passage still says which contract or judgment it comes from).

- `tokens`: windows of `size` tokens, each starting `stride` tokens after the last (stride < size overlaps them,
  so a sentence cut by one window's edge lies whole in the next).
- `paragraphs`: up to `size` tokens of whole lines, cut at line breaks, else at sentence ends, else (one
  sentence longer than a window) at token windows; with stride < size, consecutive passages share whole lines.

Tokens are those of the model that reads the passages (its fast tokenizer's offsets), so `size` relates directly
to `model.max_length`; `words` (letters/digits runs and single punctuation marks) needs no model.
"""
from __future__ import annotations

import bisect
import logging
import re
from dataclasses import dataclass
from typing import Callable, Optional

from .types import Corpus, DataError, Doc

log = logging.getLogger(__name__)

METHODS = ("none", "tokens", "paragraphs")
# <document>@<start>-<end>: greedy on the document part, so a document id may itself hold '@'
CHUNK_ID = re.compile(r"^(?P<doc>.+)@(?P<start>\d+)-(?P<end>\d+)$", re.S)
WORD = re.compile(r"\w+|[^\w\s]")
# a line break (with the blank lines and indentation around it) separates paragraphs, list items and clauses
LINE = re.compile(r"[^\r\n]+")
# a sentence ends at . ! ? ; followed by space and a capital, digit, quote, bracket or section sign...
SENTENCE_END = re.compile(r"(?<=[.!?;])\s+(?=[\"'“(\[A-Z0-9§])")
# ...unless the full stop ends an abbreviation that legal text puts before a name or number
ABBREVIATION = re.compile(r"(?:\b(?:[A-Za-z]\.){1,4}|\b(?:art|sec|secs|para|no|nos|v|vs|inc|corp|co|ltd|llc|"
                          r"mr|mrs|ms|dr|cf|e\.g|i\.e|etc|u\.s\.c|c\.f\.r|ch|cl|sch|ex|p|pp|reg|s|ss)\.)$",
                          re.I)

TokenSpans = Callable[[str], list[tuple[int, int]]]  # text -> (start, end) character span of each token


@dataclass(frozen=True)
class Chunking:
    method: str = "none"  # none | tokens | paragraphs
    size: int = 256  # tokens per passage at most
    stride: int = 0  # tokens from one passage's start to the next; 0 means `size` (no overlap)

    @property
    def step(self) -> int:
        return self.stride or self.size


def validate(c: Chunking) -> None:
    """Bad chunking settings, found at config load (before any file is read)."""
    if c.method not in METHODS:
        raise DataError(f"data.chunking={c.method!r}; choose one of {', '.join(METHODS)}")
    if c.size < 8:
        raise DataError(f"data.chunk_size={c.size}; give at least 8 tokens per passage (e.g. 256)")
    if c.stride < 0 or c.stride > c.size:
        raise DataError(f"data.chunk_stride={c.stride} with data.chunk_size={c.size}; the stride (tokens from one "
                        f"passage's start to the next) must be in 1..{c.size}, or 0 for {c.size} (no overlap): a "
                        "longer stride would skip text that then no passage holds")


# -- ids ---------------------------------------------------------------------------------------------------------
def chunk_id(doc_id: str, start: int, end: int) -> str:
    return f"{doc_id}@{start}-{end}"


def parse_chunk_id(passage_id: str) -> Optional[tuple[str, int, int]]:
    """(document, start, end) of a passage cut by `chunk_corpus`; None for any other id."""
    m = CHUNK_ID.match(passage_id)
    return (m["doc"], int(m["start"]), int(m["end"])) if m else None


def passage_origin(passage_id: str, separator: str = "#") -> tuple[str, int]:
    """(document, position in it) of a passage: `<doc>@<start>-<end>` (position: start), a pre-cut
    `<doc><separator><k>` (position: k), else the passage is a document of its own (position 0)."""
    parsed = parse_chunk_id(passage_id)
    if parsed:
        return parsed[0], parsed[1]
    if separator and separator in passage_id:
        doc, k = passage_id.rsplit(separator, 1)
        return doc, int(k) if k.isdigit() else 0
    return passage_id, 0


# -- tokens ------------------------------------------------------------------------------------------------------
def word_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in WORD.finditer(text)]


def tokenizer_spans(tokenizer) -> TokenSpans:
    """Token character spans from a Hugging Face fast tokenizer (its Rust backend: no length warnings, no special
    tokens). Offsets index the original string, whatever the tokenizer normalises (case, accents)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise DataError("data.chunking needs a fast tokenizer (tokenizer.json) to find token offsets; "
                        "set data.chunk_tokenizer: words, or use a model with a fast tokenizer")
    from tokenizers import Tokenizer

    # a copy without the truncation and padding a tokenizer.json may carry (MiniLM's cuts at 128 tokens): a whole
    # document must be read to its end
    backend = Tokenizer.from_str(backend.to_str())
    backend.no_truncation()
    backend.no_padding()

    def spans(text: str) -> list[tuple[int, int]]:
        return [(s, e) for s, e in backend.encode(text, add_special_tokens=False).offsets if e > s]

    return spans


# -- cutting one text --------------------------------------------------------------------------------------------
def token_windows(tokens: list[tuple[int, int]], size: int, step: int) -> list[tuple[int, int]]:
    """Character ranges of windows of `size` tokens, `step` tokens apart; the last window ends at the last token."""
    out = []
    for first in range(0, len(tokens), step):
        last = min(first + size, len(tokens)) - 1
        out.append((tokens[first][0], tokens[last][1]))
        if last == len(tokens) - 1:
            break
    return out


def sentence_units(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Character ranges of the sentences in text[start:end]."""
    units, begin = [], start
    for m in SENTENCE_END.finditer(text, start, end):
        if ABBREVIATION.search(text, max(begin, m.start() - 12), m.start()):
            continue
        units.append((begin, m.start()))
        begin = m.end()
    units.append((begin, end))
    return [(s, e) for s, e in units if e > s]


def paragraph_units(text: str, tokens: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """Pieces of at most `size` tokens: whole lines, else their sentences, else token windows of a sentence."""
    starts = [s for s, _ in tokens]

    def count(s: int, e: int) -> int:
        return bisect.bisect_left(starts, e) - bisect.bisect_left(starts, s)

    units = []
    for line in LINE.finditer(text):
        s, e = line.start(), line.end()
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if s == e or not count(s, e):
            continue
        if count(s, e) <= size:
            units.append((s, e))
            continue
        for ss, se in sentence_units(text, s, e):
            if count(ss, se) <= size:
                units.append((ss, se))
            else:
                inner = tokens[bisect.bisect_left(starts, ss):bisect.bisect_left(starts, se)]
                units.extend(token_windows(inner, size, size))
    return units


def pack_units(units: list[tuple[int, int]], counts: list[int], size: int, step: int) -> list[tuple[int, int]]:
    """Consecutive units joined while they fit in `size` tokens. With step < size the next passage starts with the
    previous one's last units, as long as they hold at most size - step tokens."""
    out, i = [], 0
    while i < len(units):
        j, used = i, 0
        while j < len(units) and used + counts[j] <= size:
            used += counts[j]
            j += 1
        j = max(j, i + 1)  # a unit is never larger than size (paragraph_units cuts it), but never loop forever
        out.append((units[i][0], units[j - 1][1]))
        if j == len(units):
            break
        k, overlap = j, 0
        while k - 1 > i and overlap + counts[k - 1] <= size - step:
            overlap += counts[k - 1]
            k -= 1
        i = k
    return out


def chunk_text(text: str, chunking: Chunking, spans: TokenSpans) -> list[tuple[int, int]]:
    """Character ranges (start, end) of the passages of one document; each begins and ends on a token."""
    tokens = spans(text)
    if not tokens:
        return []
    if chunking.method == "tokens":
        return token_windows(tokens, chunking.size, chunking.step)
    units = paragraph_units(text, tokens, chunking.size)
    starts = [s for s, _ in tokens]
    counts = [bisect.bisect_left(starts, e) - bisect.bisect_left(starts, s) for s, e in units]
    return pack_units(units, counts, chunking.size, chunking.step)


# -- a corpus ----------------------------------------------------------------------------------------------------
class Passages(dict):
    """A corpus of passages (passage id -> Doc) that remembers each document's length (span judgments are checked
    against the documents they name) and where each came from (file and page starts, for `locate`)."""

    def __init__(self, passages: dict, doc_lengths: dict[str, int],
                 doc_origins: Optional[dict[str, tuple[str, tuple[int, ...]]]] = None):
        super().__init__(passages)
        self.doc_lengths = doc_lengths
        self.doc_origins = doc_origins or {}  # document -> (source file, page starts); only documents that have them


def chunk_corpus(documents: Corpus, chunking: Chunking, spans: TokenSpans) -> Passages:
    """Every document cut into passages `<doc>@<start>-<end>` carrying the document's title."""
    validate(chunking)
    out: dict[str, Doc] = {}
    empty = 0
    for doc_id, doc in documents.items():
        ranges = chunk_text(doc.text, chunking, spans)
        empty += not ranges
        for start, end in ranges:
            out[chunk_id(doc_id, start, end)] = Doc(doc.title, doc.text[start:end])
    if empty:
        log.warning("%d of %d documents hold no text to cut into passages; they are left out", empty, len(documents))
    if not out:
        raise DataError("data.chunking: no document holds any text; the corpus is empty after chunking")
    return Passages(out, {d: len(doc.text) for d, doc in documents.items()},
                    {d: (doc.source, doc.page_starts) for d, doc in documents.items() if doc.source or doc.page_starts})


def document_lengths(corpus: Corpus) -> dict[str, int]:
    """Length of every document a corpus holds: from a chunked corpus, else each entry is a whole document."""
    lengths = getattr(corpus, "doc_lengths", None)
    return lengths if lengths is not None else {d: len(doc.text) for d, doc in corpus.items()}


def passages_by_document(corpus: Corpus) -> dict[str, list[tuple[str, int, int]]]:
    """document -> [(passage id, start, end)] in document order; an unchunked entry is one passage [0, len)."""
    out: dict[str, list[tuple[str, int, int]]] = {}
    for pid, doc in corpus.items():
        parsed = parse_chunk_id(pid)
        doc_id, start, end = parsed if parsed else (pid, 0, len(doc.text))
        out.setdefault(doc_id, []).append((pid, start, end))
    for passages in out.values():
        passages.sort(key=lambda p: (p[1], p[2]))
    return out


def chunking_stats(corpus: Corpus, chunking: Chunking) -> dict:
    """What chunking made of the documents (for mined/stats.json): passages per document and their lengths."""
    by_doc = passages_by_document(corpus)
    per_doc = sorted(len(p) for p in by_doc.values())
    chars = sorted(len(d.text) for d in corpus.values())

    def pct(values: list[int], q: float) -> int:
        return values[min(len(values) - 1, int(q * len(values)))] if values else 0

    return {"method": chunking.method, "size": chunking.size, "stride": chunking.step,
            "documents": len(by_doc), "passages": len(corpus),
            "documents_cut": sum(n > 1 for n in per_doc),
            "passages_per_document": {"mean": round(len(corpus) / max(1, len(by_doc)), 2), "max": pct(per_doc, 1.0)},
            "passage_chars": {"mean": round(sum(chars) / max(1, len(chars)), 1), "p50": pct(chars, 0.5),
                              "p95": pct(chars, 0.95), "max": pct(chars, 1.0)}}
