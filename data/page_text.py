"""The text of laid-out pages (a PDF's, as pypdf extracts them) as one document text with its page starts.

Three things legal PDFs need, each page on its own:
- running headers and footers out: a line at the top or bottom of at least half of the pages (3 pages or more),
  the same but for a page number that changes ("Page 3 of 12", "Confidential | 3"), and bare page-number lines
  ("3", "- 3 -"), peeled from the page's edges inwards, so they repeat into no passage;
- wrapped lines back into paragraphs: a line that reaches the page's right margin runs on into the next, unless
  that one starts a clause or heading ("1.2", "(a)", "Section 3", "ARTICLE IV", a line in capitals) or the first
  ends a list item (":" or ";") or a sentence before a capital. So each clause or heading starts its own line and
  `data.chunking: paragraphs` cuts at them, not at wherever the layout wrapped;
- a word hyphenated at a line's end loses the line break but keeps its hyphen ("agree-ment"): dropping the hyphen
  would need a dictionary to leave "self-employed" whole.
"""
from __future__ import annotations

import re

# a line that is only a page number: "3", "- 3 -", "Page 3", "Page 3 of 12", "3/12", "[3]"
PAGE_NUMBER = re.compile(r"^[\s\-–—\[(]*(?:page|p\.|pg\.?)?\s*\d{1,4}(?:\s*(?:of|/)\s*\d{1,4})?[\s\-–—\])]*$", re.I)
# a running line whose number may change from page to page: it names a page ("Page 3", "3 of 12") or sets the
# number apart ("Confidential | 3"); "ARTICLE 3" at the top of each page is a heading, not a running line
PAGE_MARK = re.compile(r"\bpage\s+\d|\b\d+\s*(?:of|/)\s*\d+\b|[|·•–—-]\s*\d{1,4}\s*$|^\s*\d{1,4}\s*[|·•–—-]", re.I)
EDGE_LINES = 3  # a header or footer is at most this many lines deep
DIGITS = re.compile(r"\d+")


def running_key(line: str) -> str:
    return " ".join(DIGITS.sub("#", line.lower()).split())


def without_furniture(pages: list[list[str]]) -> list[list[str]]:
    """Pages less their running headers and footers, peeled from the edges in: a line goes when it is a bare page
    number, or when (on a document of 3 pages or more) the same line, page numbers aside, stands at that edge of at
    least half of the pages. Peeling stops at the first line of a page that is neither."""
    pages = [list(p) for p in pages]
    for edge in (0, -1):
        for _ in range(EDGE_LINES):
            for lines in pages:
                while lines and not lines[edge].strip():
                    lines.pop(edge)
            edges = [lines[edge] if lines else "" for lines in pages]
            running = running_lines(edges)
            cut = [bool(line.strip()) and (PAGE_NUMBER.match(line) is not None or running_key(line) in running)
                   for line in edges]
            if not any(cut):
                break
            for lines, drop in zip(pages, cut):
                if drop:
                    lines.pop(edge)
    return pages


def running_lines(edges: list[str]) -> set[str]:
    """Keys of the lines that stand at one edge of at least half of the pages (3 pages or more)."""
    if len(edges) < 3:
        return set()
    groups: dict[str, set[str]] = {}
    for line in edges:
        if line.strip():
            groups.setdefault(running_key(line), set()).add(line.strip())
    return {key for key, lines in groups.items()
            if sum(running_key(e) == key for e in edges) * 2 >= len(edges)
            and (len(lines) == 1 or all(PAGE_MARK.search(line) for line in lines))}


# a line that starts a clause, list item or heading: "1.", "1.2", "(a)", "a)", "iv.", "Section 3", "ARTICLE IV", "§ 2"
CLAUSE_START = re.compile(r"^\s*(?:\d+(?:\.\d+)*\.?\s|\(\s*[a-z0-9]{1,5}\s*\)|[a-z]{1,2}\)\s|[ivxlc]{1,6}\.\s|§|[•●▪◦*–-]\s|"
                          r"(?:section|article|clause|schedule|annex|appendix|exhibit|part|chapter|recital)s?\b)",
                          re.I)
# a line reaches the right margin (and so wraps on) when it is at least this share of the page's longest line, and
# this many characters long: a short page's longest line may be a heading
WRAPPED, WRAPPED_CHARS = 0.7, 40


def heading(line: str) -> bool:
    return any(c.isalpha() for c in line) and line == line.upper()


def runs_on(line: str, following: str, width: int) -> bool:
    """Whether `following` continues the paragraph that `line` wraps out of."""
    line, following = line.rstrip(), following.strip()
    if not line.strip() or not following or len(line) < max(WRAPPED * width, WRAPPED_CHARS):
        return False
    if CLAUSE_START.match(following) or heading(line) or heading(following) or line.endswith((":", ";")):
        return False
    return not (line.endswith((".", "?", "!")) and following[0].isupper())


def reflow(lines: list[str]) -> list[str]:
    """Wrapped lines joined into their paragraphs (a space between, none after a hyphen that ends a word part)."""
    width = max((len(line.rstrip()) for line in lines), default=0)
    out: list[str] = []
    for line in lines:
        if out and runs_on(out[-1], line, width):
            prev = out[-1].rstrip()
            glue = "" if prev.endswith("-") and prev[-2:-1].isalpha() else " "
            out[-1] = prev + glue + line.strip()
        else:
            out.append(line.rstrip())
    return out


def pages_text(pages: list[str]) -> tuple[str, tuple[int, ...]]:
    """The pages' texts (headers and footers out, paragraphs reflowed) joined by a blank line, and the character
    offset where each page begins: `text[starts[k]:]` begins page k+1 (an empty page starts where the next does)."""
    lines = without_furniture([p.replace("\r\n", "\n").replace("\r", "\n").split("\n") for p in pages])
    texts = ["\n".join(reflow(page)).strip("\n") for page in lines]
    starts, offset = [], 0
    for text in texts:
        starts.append(offset)
        offset += len(text) + 2
    return "\n\n".join(texts), tuple(starts)
