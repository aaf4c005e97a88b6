"""A tuning split carved from the training queries, whole documents at a time.

Choosing a checkpoint, early stopping and fusion weights on the split that is then reported makes the
report in-sample. When a collection ships only train and dev judgments, the split that chooses comes
out of train: `data.dev_split: holdout` keeps `data.holdout_queries` training queries (and every
document they judge) away from training. Queries that judge passages of one document are held out
together, so no document feeds both sides.
"""
from __future__ import annotations

import random

from .chunking import parse_chunk_id
from .types import Corpus, Qrels

HOLDOUT = "holdout"  # the data.dev_split value that asks for the carved split


def document_of(doc_id: str, corpus: Corpus, separator: str = "#") -> str:
    """The document a passage was cut from: its chunk id's document (`<doc>@<start>-<end>`), the id before the last
    separator (`<doc>#<k>`), else its title, else the passage itself (a corpus of whole, untitled documents)."""
    chunk = parse_chunk_id(doc_id)
    if chunk:
        return chunk[0]
    if separator and separator in doc_id:
        return doc_id.rsplit(separator, 1)[0]
    doc = corpus.get(doc_id)
    return doc.title if doc is not None and doc.title else doc_id


def query_groups(qrels: Qrels, corpus: Corpus, separator: str = "#") -> list[list[str]]:
    """Queries linked (transitively) by a judged-relevant document: each group must stay on one side."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for qid in sorted(qrels):
        find(f"q:{qid}")
        for did, rel in qrels[qid].items():
            if rel > 0:
                parent[find(f"q:{qid}")] = find(f"d:{document_of(did, corpus, separator)}")
    groups: dict[str, list[str]] = {}
    for qid in sorted(qrels):
        groups.setdefault(find(f"q:{qid}"), []).append(qid)
    return sorted(groups.values())


def carve_holdout(qrels: Qrels, corpus: Corpus, n_queries: int, seed: int = 0,
                  separator: str = "#") -> set[str]:
    """Seeded choice of whole query groups until at least `n_queries` are held out (at most all but one group).

    Groups are shuffled, not sorted by size, so the holdout mirrors the mix of documents in train.
    """
    groups = query_groups(qrels, corpus, separator)
    random.Random(f"holdout:{seed}").shuffle(groups)
    held: set[str] = set()
    for group in groups[:-1]:  # the last group always stays in train: a holdout of everything trains nothing
        if len(held) >= n_queries:
            break
        held.update(group)
    return held


def held_out_passages(held: set[str], qrels: Qrels, corpus: Corpus, separator: str = "#") -> set[str]:
    """Every passage of every document the held-out queries judge relevant: kept out of training rows, negatives
    included, so the model never reads a held-out document."""
    docs = {document_of(d, corpus, separator) for q in held for d, r in qrels.get(q, {}).items() if r > 0}
    return {d for d in corpus if document_of(d, corpus, separator) in docs}
