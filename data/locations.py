"""Where a passage lies: its document, file, character offsets and pages, so a hit reads "contract.pdf, page 12"."""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Optional

from .chunking import parse_chunk_id
from .types import Corpus


@dataclass(frozen=True)
class Location:
    """Where a passage lies in its document: the file, character offsets into the document's text and the pages
    (1-based, inclusive) those offsets fall on; page None where the document has no pages."""

    document: str
    source: str
    start: int
    end: int
    page: Optional[int] = None
    last_page: Optional[int] = None

    def label(self) -> str:
        """"contract.pdf, page 12", "contract.pdf, pages 12-13", or "nda/acme, characters 0-812"."""
        where = self.source or self.document
        if self.page is None:
            return f"{where}, characters {self.start}-{self.end}"
        pages = f"page {self.page}" if self.last_page == self.page else f"pages {self.page}-{self.last_page}"
        return f"{where}, {pages}"

    def as_dict(self) -> dict:
        return {"document": self.document, "source": self.source, "start": self.start, "end": self.end,
                "page": self.page, "last_page": self.last_page}


def page_at(page_starts: tuple[int, ...], offset: int) -> Optional[int]:
    """The 1-based page holding character `offset`, None without pages."""
    return bisect.bisect_right(page_starts, offset) if page_starts else None


def locate(passage_id: str, corpus: Corpus) -> Location:
    """Where a passage of `corpus` comes from: a chunked passage by its id and its corpus's document origins, any
    other entry as a whole document of its own (its own source and pages)."""
    parsed = parse_chunk_id(passage_id)
    origins = getattr(corpus, "doc_origins", {})
    if parsed and (parsed[0] in origins or parsed[0] in getattr(corpus, "doc_lengths", {})):
        doc_id, start, end = parsed
        source, starts = origins.get(doc_id, ("", ()))
    else:
        doc = corpus[passage_id]
        doc_id, start, end, source, starts = passage_id, 0, len(doc.text), doc.source, doc.page_starts
    last = max(start, end - 1)
    return Location(doc_id, source, start, end, page_at(starts, start), page_at(starts, last))
