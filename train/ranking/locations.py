"""How a passage's place in its document reads to a person: `crosstune rerank`'s lines, report.md's examples.

data/locations.py finds the place (`locate`: document, file, character offsets, pages); this module only decides when
it is worth showing and how. Light on purpose: report.py (which `crosstune plot` reaches) imports it, no model code.
"""
from __future__ import annotations

from typing import Optional

from crosstune.data.locations import Location, locate
from crosstune.data.types import Corpus


def has_place(location: Location, passage_id: str) -> bool:
    """A passage cut from a document, or an entry read from a file (or with pages): its place says more than its id.
    An entry of a plain corpus is a whole document with no file, and "doc-7, characters 0-540" would add nothing."""
    return location.document != passage_id or bool(location.source) or location.page is not None


def place(passage_id: str, corpus: Corpus) -> Optional[Location]:
    """The passage's location where the corpus has documents (`has_place`), else None; None for an id not in it."""
    if passage_id not in corpus:
        return None
    location = locate(passage_id, corpus)
    return location if has_place(location, passage_id) else None


def with_offsets(location: Location) -> str:
    """"acme.pdf, page 12 (characters 20340-21200)"; without pages the label already holds the offsets."""
    label = location.label()
    return label if location.page is None else f"{label} (characters {location.start}-{location.end})"
