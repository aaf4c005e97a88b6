"""From pseudo-queries (data/pseudo.py) to what mining takes: query ids, one-positive qrels, the positive's text, and
per query the passages that must never be its negatives because they likely answer it too.

The choice, per query: its own passage; its document's passages within `neighbours` positions of it (a section, or
the context of a cut-out sentence, runs on across the cut that made the passages; -1: the whole document); and its
document's passages that contain, as words, the phrase it was built from (the heading, the quoted defined term, the
sentence, the key phrase). Other documents' passages stay negatives: the query names its document by its title.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from .pseudo import PseudoQuery, normal
from .splits import document_of
from .types import Corpus, Doc


@dataclass
class PseudoSet:
    """Pseudo-queries in the shape mining takes (queries, qrels) plus what it needs to treat them right."""

    queries: dict[str, str] = field(default_factory=dict)
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)
    positives: dict[str, Doc] = field(default_factory=dict)  # query id -> the positive text to train on
    avoid: dict[str, set[str]] = field(default_factory=dict)  # query id -> passages that must not be negatives
    kind: dict[str, str] = field(default_factory=dict)
    stats: dict = field(default_factory=dict)


def neighbourhoods(corpus: Corpus, separator: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """passage -> its document, and document -> its passages in corpus order (the order they were cut in)."""
    doc_of = {pid: document_of(pid, corpus, separator) for pid in corpus}
    passages: dict[str, list[str]] = defaultdict(list)
    for pid, d in doc_of.items():
        passages[d].append(pid)
    return doc_of, passages


def avoid_sets(queries: list[PseudoQuery], corpus: Corpus, neighbours: int, separator: str) -> list[set[str]]:
    """For each query, the passages that must not be its negatives: the source; its document's passages within
    `neighbours` positions (a section, or a sentence's context, runs on across the cut; -1: the whole document);
    and its document's passages that contain the query's phrase as words (they answer it too)."""
    doc_of, passages = neighbourhoods(corpus, separator)
    position = {pid: i for ps in passages.values() for i, pid in enumerate(ps)}
    lowered: dict[str, str] = {}
    out = []
    for q in queries:
        siblings = passages[doc_of[q.passage_id]]
        i = position[q.passage_id]
        near = siblings if neighbours < 0 else siblings[max(0, i - neighbours):i + neighbours + 1]
        avoid = {q.passage_id, *near}
        phrase = normal(q.phrase)
        if phrase:
            pattern = re.compile(rf"(?<!\w){re.escape(phrase)}(?!\w)")
            for pid in siblings:
                if pid not in lowered:
                    lowered[pid] = normal(corpus[pid].text)
                text = lowered[pid]
                if phrase in text and pattern.search(text):
                    avoid.add(pid)
        out.append(avoid)
    return out


def pseudo_set(queries: list[PseudoQuery], corpus: Corpus, neighbours: int = 1, separator: str = "#") -> PseudoSet:
    """Queries and one-positive qrels for mining, keyed `<kind>:<passage>:<n>` so that a query's id (and with it its
    seeded negatives) does not depend on which other kinds were asked for."""
    out, count = PseudoSet(), Counter()
    for q, avoid in zip(queries, avoid_sets(queries, corpus, neighbours, separator)):
        qid = f"{q.kind}:{q.passage_id}:{count[(q.kind, q.passage_id)]}"
        count[(q.kind, q.passage_id)] += 1
        out.queries[qid], out.qrels[qid], out.positives[qid] = q.query, {q.passage_id: 1}, q.positive
        out.avoid[qid], out.kind[qid] = avoid, q.kind
    return out
