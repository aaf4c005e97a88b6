"""The one data contract every stage takes and returns (DESIGN.md)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Doc:
    title: str
    text: str
    # documents read from files (data/documents.py): the file below data.path ("leases/acme.pdf"), and the character
    # offset in `text` where each page begins (page_starts[0] == 0); both empty where the source has no pages
    source: str = ""
    page_starts: tuple[int, ...] = ()


Corpus = dict[str, Doc]
Queries = dict[str, str]
Qrels = dict[str, dict[str, int]]
Run = dict[str, dict[str, float]]


class DataError(ValueError):
    """Bad input: the message names the file, line or key and the fix."""


def doc_text(doc: Doc, use_title: bool = True) -> str:
    """The passage as the cross-encoder and BM25 read it.

    Legal passages often only make sense with their document's name (which NDA, which policy),
    so the title is prefixed by default; one function keeps mining, training and serving consistent.
    """
    if use_title and doc.title:
        return f"{doc.title}: {doc.text}"
    return doc.text


def ranked(scores: dict[str, float]) -> list[str]:
    """Doc ids best first; ties broken by id so every stage orders the same way."""
    return sorted(scores, key=lambda d: (-scores[d], d))


def top_k(run: Run, k: int) -> Run:
    return {q: {d: docs[d] for d in ranked(docs)[:k]} for q, docs in run.items()}
