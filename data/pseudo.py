"""Training queries from the corpus alone (no judged queries, no generative model).

Kinds, each a (query, positive) pair cut from one passage:
- headings:      a section heading ("2. Exclusions. The obligations...") is the query for its section's text (what
                 follows it, without it: else the pair is a string match); a defined term ('"Purpose" means ...') gives
                 "what does Purpose mean" for the passage that defines it
- inverse-cloze: a sentence cut out of a passage is the query, the passage without it the positive (Lee et al. 2019)
- title-phrase:  the document's title plus the passage's rarest recurring word pair (else word) is the query for it
- file:          (query, passage id) pairs a query generator wrote (doc2query), read from mining.pseudo_file

Queries from headings and sentences get the document's title in front ("<title>: <heading>"): a bare "Termination"
is answered by every contract's termination clause, which would all be false negatives. Each query also names the
text it was built from (`phrase`): a passage of the same document that contains it, or sits next to the source, is
never a negative for it (mining `avoid`), because it likely answers the query too.
"""
from __future__ import annotations

import math
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from .types import Corpus, DataError, Doc

GENERATED = ("headings", "inverse-cloze", "title-phrase")
KINDS = (*GENERATED, "file")


@dataclass(frozen=True)
class PseudoQuery:
    kind: str  # one of KINDS; headings split into "heading" and "defined-term" in the stats
    passage_id: str
    query: str
    positive: Doc  # the positive as trained on: the passage minus its heading or cut-out sentence
    phrase: str = ""  # what the query was built from: same-document passages containing it are not negatives
    subkind: str = ""


def parse_kinds(value: str, file: str = "") -> list[str]:
    """"headings,inverse-cloze" -> the kinds; "all" is the three generators; "none" or "" is none. A pseudo-query
    file, when one is named, is always read (the file kind is implied)."""
    words = [w.strip() for w in str(value or "none").split(",") if w.strip() and w.strip() != "none"]
    words = [k for w in words for k in (GENERATED if w == "all" else [w])] + (["file"] if file else [])
    bad = [w for w in words if w not in KINDS]
    if bad:
        raise DataError(f"mining.pseudo_queries={value!r}: unknown kind {bad[0]!r}; give none, all, or a comma list of "
                        f"{', '.join(KINDS)}")
    return list(dict.fromkeys(words))


# ------------------------------------------------------------------------------------------------- text helpers
SPACE = re.compile(r"\s+")
# "Inc. Ltd. No. U.S." end abbreviations, not sentences; a lone number or letter ("2." "(a).") is a list label
ABBREV = re.compile(r"(?:\b(?:Inc|Ltd|Co|Corp|No|Nos|Sec|Art|Mr|Mrs|Ms|Dr|St|vs|etc|e\.g|i\.e|U\.S|Jr|Sr|cf|para)"
                    r"|\b[A-Za-z]|\(?\b[0-9ivxIVX]+(?:\.[0-9]+)*\)?)\.$")
# a sentence ends at . ! ? before a capital or a number, or at a line break (a heading on its own line)
SENTENCE_END = re.compile(r"(?<=[.!?])[\"”’)]*\s+(?=[\"“(\[]?[A-Z0-9])|[ \t]*\n\s*")
MINOR = {"a", "an", "and", "as", "at", "by", "for", "from", "in", "of", "on", "or", "the", "to", "with", "under", "upon"}
# a section number ("5", "5.3.", "Section 5.3", "IV."); four digits are a year ("the 2024 Omnibus Plan. ..."), not one
NUMBER = r"(?:(?:Section|SECTION|Article|ARTICLE|Clause|CLAUSE)\s+)?(?:\d{1,3}(?:\.\d+)*\.?(?!\d)|[IVX]+\.)"
# "2. Exclusions. The obligations..." / "Section 5.3 No Solicitation. (a) The Company..." / "Section 36 — Pay slips."
INLINE_HEADING = re.compile(rf"(?:^|(?<=[\s.;:]))({NUMBER}\s+([—–-]\s+)?([A-Z][A-Za-z’'&,;/ -]{{1,80}}?)\.)"
                            r"(?=\s+(?:[\"“(]?[A-Z]|\([a-z0-9]{1,4}\))|\s*$)")
# '"Confidential Information" means' / 'The term “Affiliate” shall mean' / '"Term" has the meaning'
DEFINED = re.compile(r"[\"“]([A-Z][^\"”\n]{1,60}?)[\"”]\s*(?:\)\s*)?(?:shall\s+)?(?:means?\b|has the meaning|refers to)")
WORD = re.compile(r"[A-Za-z][A-Za-z'-]*[A-Za-z]")
# BM25's stop list (Lucene's 33 words) keeps "its own", "shall" or "hereof", which make no key phrase
FUNCTION_WORDS = frozenset("""
about above after again against all also am any anyone anything because been before being below between both can
cannot could did does doing done down during each either else ever every few from further had has have having he
her here hereby herein hereof hereto hereunder hers herself him himself his how however i its itself just may me
might more most much must my myself neither nor now off once one only other others otherwise our ours ourselves out
over own per same shall she should since so some than that's thereby therefore therein thereof thereto thereunder
those though through thus too under unless until upon us very via was we were what whatever when where whereas
whether which while who whom whose why within without would yet you your yours yourself
""".split())


def squash(text: str) -> str:
    return SPACE.sub(" ", text).strip()


def normal(text: str) -> str:
    """Lower case, straight quotes, single spaces: how a phrase is looked for in other passages."""
    return squash(text.lower().replace("“", '"').replace("”", '"').replace("’", "'"))


def cut(text: str, start: int, end: int) -> str:
    return squash(f"{text[:start]} {text[end:]}")


def title_like(words: list[str]) -> bool:
    """Every word that is not a minor one starts with a capital (Title Case or ALL CAPS)."""
    content = [w for w in words if w.lower() not in MINOR]
    return bool(content) and all(w[0].isupper() or not w[0].isalpha() for w in content)


def with_title(title: str, phrase: str, use: bool) -> str:
    return f"{title}: {phrase}" if use and title else phrase


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans (start, end) in `text`; a split after an abbreviation or a list label is undone."""
    spans, start = [], 0
    for m in SENTENCE_END.finditer(text):
        piece = text[start:m.start()].rstrip("\"”’)")
        if "\n" not in m.group() and ABBREV.search(piece.split(" ")[-1] if piece else ""):
            continue
        spans.append((start, m.start()))
        start = m.end()
    if text[start:].strip():
        spans.append((start, len(text.rstrip())))
    return spans


# ------------------------------------------------------------------------------------------------- generators
def heading_queries(pid: str, doc: Doc, title_prefix: bool, min_words: int = 8) -> tuple[list[PseudoQuery], Counter]:
    """Numbered inline headings, headings on a line of their own, and defined terms of one passage."""
    out, dropped = [], Counter()
    text = doc.text
    found: list[tuple[int, int, str]] = []  # (start, end, heading) spans to cut out
    for m in INLINE_HEADING.finditer(text):
        heading = m.group(3).strip(" ,;")
        # Title Case marks a heading; after "Section 36 —" the dash does, and sentence case ("Pay slips") is common
        if 1 <= len(heading.split()) <= 10 and (title_like(heading.split()) or m.group(2)):
            found.append((m.start(1), m.end(1), heading))
    offset = 0
    for line in text.splitlines(keepends=True):
        bare = re.sub(rf"^\s*(?:#+\s*)?(?:{NUMBER}\s+)?", "", line).strip().rstrip(":.")
        words = bare.split()
        if (bare and 1 <= len(words) <= 10 and not re.search(r"[.;,]$", line.strip().rstrip(":"))
                and title_like(words) and len(text[offset + len(line):].split()) >= min_words):
            found.append((offset, offset + len(line), bare))
        offset += len(line)
    found.sort()
    for i, (start, end, heading) in enumerate(found):
        # the section is what follows the heading, up to the next one: a heading at the end of a passage heads the
        # next passage's text, and the text before it belongs to the section it closes
        section = squash(text[end:found[i + 1][0] if i + 1 < len(found) else len(text)])
        if len(section.split()) < min_words:
            dropped["heading_section_too_short"] += 1
            continue
        out.append(PseudoQuery("headings", pid, with_title(doc.title, heading, title_prefix), Doc(doc.title, section),
                               heading, "heading"))
    for term in dict.fromkeys(m.group(1).strip() for m in DEFINED.finditer(text)):
        if len(term.split()) <= 8:
            # the definition is the answer, so it stays in the positive; the quoted term marks passages that define
            # or explicitly cite the same term (likely relevant too), unlike passages that merely use the words
            out.append(PseudoQuery("headings", pid, with_title(doc.title, f"what does {term} mean", title_prefix),
                                   Doc(doc.title, squash(text)), f'"{term}"', "defined-term"))
    return out, dropped


def complete_sentence(sentence: str) -> bool:
    """6-50 words, mostly words (not a page footer or a table row), from a capital to a full stop: a passage cut in
    the middle of a sentence starts or ends with a fragment, which makes no query."""
    tokens = sentence.split()
    return (6 <= len(tokens) <= 50 and len(WORD.findall(sentence)) >= 0.8 * len(tokens)
            and bool(re.match(r"[\"“(]?[A-Z(]", sentence)) and bool(re.search(r"[.!?][\"”’)]*$", sentence)))


def cloze_query(pid: str, doc: Doc, seed: int, title_prefix: bool) -> tuple[PseudoQuery | None, str]:
    """One complete sentence, chosen by (seed, passage), cut out; the passage needs 3+ sentences so the rest still
    reads as context."""
    spans = split_sentences(doc.text)
    if len(spans) < 3:
        return None, "fewer_than_3_sentences"
    eligible = [(s, e) for s, e in spans if complete_sentence(doc.text[s:e])]
    if not eligible:
        return None, "no_complete_sentence_of_6_to_50_words"
    s, e = random.Random(f"{seed}:inverse-cloze:{pid}").choice(eligible)
    sentence = squash(doc.text[s:e])
    return PseudoQuery("inverse-cloze", pid, with_title(doc.title, sentence, title_prefix),
                       Doc(doc.title, cut(doc.text, s, e)), sentence, "inverse-cloze"), ""


def content_pairs(text: str, stop: frozenset[str]) -> tuple[list, list[tuple[int, int]]]:
    """Word matches of `text`, and the (i, i+1) index pairs of adjacent content words (3+ letters, not stop words,
    one space apart): the candidates of a key phrase."""
    words = list(WORD.finditer(text))
    content = [len(m.group()) >= 3 and m.group().lower() not in stop for m in words]
    pairs = [(i, i + 1) for i in range(len(words) - 1)
             if content[i] and content[i + 1] and text[words[i].end():words[i + 1].start()] == " "]
    return words, pairs


def document_frequency(corpus: Corpus, stop: frozenset[str]) -> Counter:
    """Passages holding each content word, and each adjacent pair of them ("bank transfer")."""
    df = Counter()
    for doc in corpus.values():
        words, pairs = content_pairs(doc.text, stop)
        df.update({m.group().lower() for m in words if len(m.group()) >= 3 and m.group().lower() not in stop}
                  | {f"{words[i].group()} {words[j].group()}".lower() for i, j in pairs})
    return df


def key_phrase(text: str, title: str, df: Counter, n_docs: int, stop: frozenset[str]) -> str:
    """The passage's rarest pair of adjacent words that is a term (other passages use it too, and its rarer word
    appears mostly in it: "weighted average", not two words that happen to meet), else its rarest word. Words of the title are
    skipped (the query has them already); so is anything found in no other passage (typos, OCR debris)."""
    skip = {w.lower() for w in WORD.findall(title)} | stop
    words, pairs = content_pairs(text, skip)
    best, best_score = "", 0.0
    candidates = [f"{words[i].group()} {words[j].group()}" for i, j in pairs] + [m.group() for m in words]
    for phrase in candidates:
        key = phrase.lower()
        if (" " not in key and (len(key) < 3 or key in skip)) or df[key] < 2:
            continue
        # a term's rarer word mostly comes with the other ("CVR Agreement"); words that met twice by chance
        # ("East provided") do not
        if " " in key and df[key] < 0.5 * min(df[w] for w in key.split()):
            continue
        score = math.log(n_docs / df[key]) + (100.0 if " " in key else 0.0)  # any recurring pair beats a word
        if score > best_score:
            best, best_score = phrase, score
    return best


def read_pseudo_file(path: str, corpus: Corpus) -> tuple[list[PseudoQuery], Counter]:
    """JSON lines {"query", "passage_id"} or `query<TAB>passage_id` lines; the positive is the passage as it is."""
    from .readers import pair_lines

    out, dropped, seen = [], Counter(), set()
    for n, query, pid in pair_lines(Path(path), "pseudo-query file", "check mining.pseudo_file",
                                    ("query", "passage_id"), last_tab=True):
        if pid is None:
            raise DataError(f"{path}:{n}: expected query<TAB>passage_id or a JSON object with query and passage_id")
        query = squash(query)
        if not query:
            raise DataError(f"{path}:{n}: the query is empty")
        if pid not in corpus:
            dropped["file_unknown_passage"] += 1
        elif (query, pid) in seen:
            dropped["file_repeated_pair"] += 1
        else:
            seen.add((query, pid))
            out.append(PseudoQuery("file", pid, query, corpus[pid], "", "file"))
    if not out:
        why = f" ({dropped['file_unknown_passage']} lines name passages not in the corpus)" if dropped else ""
        raise DataError(f"{path}: no usable (query, passage id) pair{why}; write query<TAB>passage_id lines or JSON "
                        "lines with query and passage_id, ids from the corpus")
    return out, dropped


def generate(corpus: Corpus, kinds: list[str], *, seed: int = 42, title_prefix: bool = True,
             file: str = "", skip: set[str] = frozenset()) -> tuple[list[PseudoQuery], dict[str, Counter]]:
    """Every pseudo-query of the asked kinds, in corpus order; passages in `skip` (held-out documents) make none."""
    from .bm25 import stopword_set

    out: list[PseudoQuery] = []
    dropped: dict[str, Counter] = {k: Counter() for k in kinds}
    if "title-phrase" in kinds:
        stop = stopword_set() | FUNCTION_WORDS
        df = document_frequency(corpus, stop)
    for pid, doc in corpus.items():
        if pid in skip:
            continue
        if "headings" in kinds:
            made, why = heading_queries(pid, doc, title_prefix)
            out += made
            dropped["headings"].update(why)
        if "inverse-cloze" in kinds:
            q, why = cloze_query(pid, doc, seed, title_prefix)
            out += [q] if q else []
            dropped["inverse-cloze"].update([why] if why else [])
        if "title-phrase" in kinds:
            phrase = key_phrase(doc.text, doc.title, df, len(corpus), stop) if doc.title else ""
            if phrase:
                out.append(PseudoQuery("title-phrase", pid, f"{doc.title}: {phrase}", doc, phrase, "title-phrase"))
            else:
                dropped["title-phrase"]["no_title" if not doc.title else "no_key_phrase"] += 1
    if "file" in kinds:
        made, why = read_pseudo_file(file, corpus)
        dropped["file"].update(why)
        for q in made:
            if q.passage_id in skip:
                dropped["file"]["file_passage_in_held_out_document"] += 1
            else:
                out.append(q)
    return out, dropped


def cap(queries: list[PseudoQuery], limit: int, seed: int) -> tuple[list[PseudoQuery], Counter]:
    """At most `limit` of each kind (0: no limit), a seeded sample kept in corpus order."""
    if limit <= 0:
        return queries, Counter()
    by_kind: dict[str, list[int]] = defaultdict(list)
    for i, q in enumerate(queries):
        by_kind[q.kind].append(i)
    keep, over = set(), Counter()
    for kind, idx in by_kind.items():
        chosen = idx if len(idx) <= limit else random.Random(f"{seed}:cap:{kind}").sample(idx, limit)
        keep.update(chosen)
        over[kind] = len(idx) - len(chosen)
    return [q for i, q in enumerate(queries) if i in keep], over
