"""BM25 analyzers: text -> tokens, the same for the documents and the queries.

`plain` keeps runs of 2+ letters or digits, lower-cased: `§ 1983` becomes `1983`, `U.S.C.` disappears (one letter
at a time), `Art. 5(1)(a)` becomes `art`, and a defined term is a bag of common words.

`legal` adds the tokens legal queries hinge on, beside the plain words (BM25 is a bag of tokens, so the extra ones
only add evidence; a document written `Section 1983` and a query written `§ 1983` meet at `§1983`):
- sections and citations: `§ 1983`, `§§ 1981-1983`, `Section 2.3`, `Sec. 2.3(b)` -> `§1983`, `§1981-1983`, `§2.3`,
  `§2.3(b)` (and `§2.3` for its subdivisions); `42 U.S.C. § 1983` -> also `42usc§1983`; dotted abbreviations
  `U.S.C.`, `C.F.R.` -> `usc`, `cfr`
- provisions: `Art. 5(1)(a)`, `Article 5`, `Rule 12(b)(6)`, `Clause 7.2`, `Schedule 3` -> `art5(1)(a)` and `art5`,
  `rule12(b)(6)` and `rule12`, `clause7.2`, `schedule3`
- defined terms in quotes: `"Confidential Information"` -> `confidential_information`
- numbers whole: `1,000,000` -> `1000000`, `2.3`, single digits (`Article 5`'s 5); dates -> ISO `2020-01-05`
- negations are not stop words here: "may not disclose" is the opposite of "may disclose"
Stemming (bm25.stemmer) applies to the plain words only, never to these tokens.
"""
from __future__ import annotations

import re
from typing import Callable, Optional

ANALYZERS = ("plain", "legal")
PLAIN = re.compile(r"(?u)\b\w\w+\b")

# the words (letters, digits) and whole numbers of the legal analyzer; a number keeps its inner , and .
NUMBER = r"\d+(?:[.,]\d+)+"
LEGAL_WORD = re.compile(rf"{NUMBER}|\w+")
SUBDIVISION = r"(?:\((?:[a-z]{1,4}|[0-9]{1,3}|[ivxlc]{1,6})\))"  # (b), (6), (iv): one level of a provision
SECTION_NUMBER = rf"\d+[a-z]?(?:[.\-–]\d+[a-z]?)*{SUBDIVISION}*"
SECTION = re.compile(rf"(?:§§?|\b(?:sections?|secs?\.|sect\.|ss?\.)(?=\s*\d))\s*({SECTION_NUMBER})"
                     rf"(?:\s*(?:-|–|to|through)\s*({SECTION_NUMBER}))?", re.I)
CITATION = re.compile(rf"\b(\d+)\s+((?:[A-Z][A-Za-z]{{0,5}}\.\s?){{1,5}})\s*§+\s*({SECTION_NUMBER})")
PROVISION = re.compile(rf"\b(art(?:icle)?s?\.?|rules?|reg(?:ulation)?s?\.?|para(?:graph)?s?\.?|clauses?|"
                       rf"schedules?|exhibits?|annex(?:es)?|chapters?|chap\.|parts?|title)\s+({SECTION_NUMBER})", re.I)
DOTTED = re.compile(r"\b(?:[A-Za-z]{1,3}\.){2,}")
QUOTED = re.compile(r"[\"“]([^\"“”\n]{2,80})[\"”]")
MONTHS = {m: i for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
                                      "dec"], 1)}
MONTH = r"(jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|" \
        r"oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
DATE_MDY = re.compile(rf"\b{MONTH}\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s+(\d{{4}})\b", re.I)
DATE_DMY = re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:day\s+of\s+)?{MONTH},?\s+(\d{{4}})\b", re.I)
DATE_ISO = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
KIND = {"art": "art", "article": "art", "rule": "rule", "reg": "reg", "regulation": "reg", "para": "para",
        "paragraph": "para", "clause": "clause", "schedule": "schedule", "exhibit": "exhibit", "annex": "annex",
        "chapter": "chapter", "chap": "chapter", "part": "part", "title": "title"}
NEGATIONS = frozenset({"not", "no", "nor", "none", "neither", "never", "without", "except", "unless"})


def provision_tokens(prefix: str, number: str) -> list[str]:
    """`art` + `5(1)(a)` -> art5(1)(a), art5: the full reference, and its top level so `Article 5` matches too."""
    number = number.lower().rstrip(".").replace("–", "-")
    top = re.split(r"[(]", number, 1)[0]
    return [prefix + number] + ([prefix + top] if top != number else [])


def legal_terms(text: str) -> list[str]:
    """The legal tokens of a text (not its plain words)."""
    out: list[str] = []
    for m in SECTION.finditer(text):
        out += provision_tokens("§", m[1])
        if m[2]:
            out.append(f"§{m[1].lower()}-{m[2].lower()}")
    for m in CITATION.finditer(text):
        code = re.sub(r"[^a-z]", "", m[2].lower())
        out.append(f"{m[1]}{code}§{m[3].lower().rstrip('.')}")
    for m in PROVISION.finditer(text):
        word = re.sub(r"[^a-z]", "", m[1].lower())
        kind = KIND.get(word) or KIND.get(word.rstrip("s")) or KIND.get(re.sub(r"es$", "", word), word)
        out += provision_tokens(kind, m[2])
    out += [re.sub(r"[^a-z]", "", m[0].lower()) for m in DOTTED.finditer(text)]
    for m in QUOTED.finditer(text):
        words = re.findall(r"\w+", m[1].lower())
        if 1 < len(words) <= 6:  # a defined term, not a quoted sentence
            out.append("_".join(words))
    out += dates(text)
    return out


def dates(text: str) -> list[str]:
    """ISO dates (2020-01-05) of `January 5, 2020`, `5th January 2020`, `5 day of January, 2020`, `2020-01-05`."""
    out = []
    for m in DATE_MDY.finditer(text):
        out.append(iso(m[3], m[1], m[2]))
    for m in DATE_DMY.finditer(text):
        out.append(iso(m[3], m[2], m[1]))
    out += [f"{m[1]}-{m[2]}-{m[3]}" for m in DATE_ISO.finditer(text)]
    return [d for d in out if d]


def iso(year: str, month: str, day: str) -> Optional[str]:
    number = MONTHS.get(month.lower()[:3])
    return f"{year}-{number:02d}-{int(day):02d}" if number and 1 <= int(day) <= 31 else None


def make(name: str, stopwords: frozenset[str], stem: Optional[Callable[[list[str]], list[str]]]):
    """text -> tokens for analyzer `name` ("plain" or "legal")."""
    if name == "plain":
        def plain(text: str) -> list[str]:
            tokens = [t for t in PLAIN.findall(text.lower()) if t not in stopwords]
            return stem(tokens) if stem else tokens

        return plain
    stop = stopwords - NEGATIONS

    def legal(text: str) -> list[str]:
        words = []
        for t in LEGAL_WORD.findall(text.lower()):
            if t[0].isdigit():
                words.append(t.replace(",", ""))  # 1,000,000 and 1000000 are one number
            elif len(t) > 1 and t not in stop:
                words.append(t)
        plain_words = [w for w in words if not w[0].isdigit()]
        numbers = [w for w in words if w[0].isdigit()]
        return (stem(plain_words) if stem else plain_words) + numbers + legal_terms(text)

    return legal
