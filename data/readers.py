"""Readers of the files a collection comes in: JSON lines, BEIR/TREC qrels and id<TAB>text TSV, plain or gzipped
(each error names the file and the line), and folders of document files (PDF, DOCX, HTML, .txt, .md; one
file is read by documents.py), where a file that cannot be read is warned about and skipped."""
from __future__ import annotations

import gzip
import json
import logging
import re
import zlib
from pathlib import Path
from typing import Iterator

from .documents import PLAIN, SUFFIXES, Unreadable, kind, read_document
from .types import Corpus, DataError, Doc, Qrels, Queries

log = logging.getLogger(__name__)


def iter_lines(path: Path, what: str = "file", hint: str = "check data.path") -> Iterator[tuple[int, str]]:
    """Yield (line number, text) of a UTF-8 file, gzipped when it ends in .gz.

    Bytes are decoded a line at a time so that bad UTF-8 or a truncated .gz names its line; every
    reader goes through here, so no input file can end in a bare UnicodeDecodeError or EOFError.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: {what} not found; {hint}")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a {what}")
    line_no = 0
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            for line_no, raw in enumerate(f, 1):
                try:
                    yield line_no, raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{line_no}: not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                                    "re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        where = f"after line {line_no}" if line_no else "from its first byte"
        raise DataError(f"{path}: truncated or corrupt gzip file {where} ({e}); download or compress it again") from None


def pair_lines(path: Path, what: str, hint: str, keys: tuple[str, str],
               last_tab: bool = False) -> Iterator[tuple[int, str, str | None]]:
    """(line number, first, second) of each non-blank line that is a JSON object with `keys`, or two TAB-separated
    fields (split at the first TAB, or at the last with last_tab); second is None on a line with neither."""
    for n, line in iter_lines(path, what, hint):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                obj = json.loads(line)
                pair = str(obj[keys[0]]), str(obj[keys[1]])
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise DataError(f"{path}:{n}: expected a JSON object with {keys[0]} and {keys[1]} ({e})") from None
            yield n, *pair
        elif "\t" in line:
            yield n, *(line.rsplit("\t", 1) if last_tab else line.split("\t", 1))
        else:
            yield n, line, None


def first_existing(folder: Path, names: list[str]) -> Path:
    for name in names:
        if (folder / name).exists():
            return folder / name
    raise DataError(f"{folder}: none of {', '.join(names)} found; point data.path at a folder that has one")


def duplicate_id(path: Path, line_no: int, kind: str, key: str) -> DataError:
    return DataError(f"{path}:{line_no}: {kind} id {key!r} appears a second time; ids must be unique "
                     "(remove or rename one of the two)")


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object); a malformed line stops with the file and line named."""
    for line_no, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{line_no}: malformed JSON ({e.msg}); fix or delete that line") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{line_no}: expected a JSON object per line")
        yield line_no, obj


def field(obj: dict, key: str, path: Path, line_no: int) -> str:
    if key not in obj:
        raise DataError(f"{path}:{line_no}: missing key '{key}' (BEIR rows need '_id' and 'text')")
    return str(obj[key])


# a file this large takes seconds to parse (legalbench-rag's 14 MB corpus.jsonl.gz: ~2 s): show a counter
PROGRESS_BYTES = 5_000_000


def read_beir_rows(path: Path, kind: str, value) -> dict:
    """`_id` -> value(row, line number) for each row of a BEIR JSON-lines file; a repeated id is an error."""
    from tqdm.auto import tqdm

    out = {}
    large = path.exists() and path.stat().st_size > PROGRESS_BYTES
    for line_no, obj in tqdm(read_jsonl(path), desc=f"reading {path.name}", unit=" rows", disable=not large,
                             leave=False):
        key = field(obj, "_id", path, line_no)
        if key in out:
            raise duplicate_id(path, line_no, kind, key)
        out[key] = value(obj, line_no)
    return out


def read_beir_corpus(path: Path) -> Corpus:
    return read_beir_rows(path, "doc", lambda o, n: Doc(title=str(o.get("title") or ""),
                                                         text=field(o, "text", path, n)))


def read_beir_queries(path: Path) -> Queries:
    return read_beir_rows(path, "query", lambda o, n: field(o, "text", path, n))


INTEGER = re.compile(r"^-?\d+$")


def qrels_columns(line: str) -> list[str] | None:
    """BEIR rows are TAB-separated (`query-id<TAB>corpus-id<TAB>score`), so an id may hold spaces; TREC rows
    (`qid 0 docid rel`) may use spaces. Returns [query, doc, score], or None when the shape is wrong."""
    text = line.rstrip("\r\n")
    parts = [p.strip() for p in text.split("\t")] if "\t" in text else text.split()
    if len(parts) == 4:
        parts = [parts[0], parts[2], parts[3]]
    return parts if len(parts) == 3 and all(parts) else None


def add_judgment(qrels: Qrels, qid: str, did: str, score: int, where: str) -> None:
    """Refuse a second, different judgment of one (query, doc) pair: one would silently overwrite the other."""
    if did in qrels.get(qid, {}):
        if qrels[qid][did] != score:
            raise DataError(f"{where}: query {qid!r} and doc {did!r} are judged again, now with score {score} "
                            f"(earlier: {qrels[qid][did]}); keep one judgment per pair")
        # the same judgment repeated (often from concatenated qrels files) means the same thing: warn, keep one
        log.warning("%s: repeats an earlier judgment of query %r and doc %r; kept once", where, qid, did)
        return
    qrels.setdefault(qid, {})[did] = score


def read_qrels_tsv(path: Path) -> Qrels:
    """BEIR qrels: `query-id<TAB>corpus-id<TAB>score` with an optional header; TREC qrels: `qid 0 docid rel`."""
    qrels: Qrels = {}
    first = True
    for line_no, line in iter_lines(path, "qrels file", "check data.path and the split name"):
        if not line.strip():
            continue
        parts = qrels_columns(line)
        if first and not INTEGER.match(line.split()[-1]):
            first = False
            continue  # header row: only the first line may be one
        first = False
        if parts is None or not INTEGER.match(parts[2]):
            raise DataError(f"{path}:{line_no}: expected 'query-id<TAB>doc-id<TAB>integer score' "
                            f"(or TREC 'qid 0 doc-id score'), got {line.strip()!r}")
        add_judgment(qrels, parts[0], parts[1], int(parts[2]), f"{path}:{line_no}")
    if not qrels:
        raise DataError(f"{path}: no judgments (the file is empty or holds only a header); "
                        "add 'query-id<TAB>doc-id<TAB>score' rows or pick another split")
    return qrels


def read_tsv_pairs(path: Path, kind: str) -> dict[str, str]:
    out = {}
    for line_no, line in iter_lines(path):
        row = line.rstrip("\r\n").split("\t")
        if len(row) < 2:
            raise DataError(f"{path}:{line_no}: expected 'id<TAB>text'")
        if row[0] in out:
            raise duplicate_id(path, line_no, kind, row[0])
        out[row[0]] = "\t".join(row[1:])
    return out


def text_folder(folder: Path) -> Path:
    """Where a folder keeps its documents: corpus/ when it has one, else the folder itself."""
    return folder / "corpus" if (folder / "corpus").is_dir() else folder


# beside the documents in a data folder (no corpus/): BEIR's queries and qrels, and the folder's own README
SIDECARS = ("readme.md", "queries.jsonl", "queries.jsonl.gz")


class Documents(dict):
    """A corpus read from document files, with `reading`: files read per type, files skipped per reason."""

    def __init__(self, docs: dict, reading: dict):
        super().__init__(docs)
        self.reading = reading


def document_files(folder: Path, data_root: bool = False) -> Iterator[Path]:
    """Every file a folder of documents offers, below it and sorted: hidden files and folders and Word's "~$" lock
    files left out, and in a data folder itself (`data_root`) its README.md, queries and qrels/."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or rel.name.startswith("~$"):
            continue
        if data_root and (rel.as_posix().lower() in SIDECARS or rel.parts[0] == "qrels"):
            continue
        yield path


def has_documents(folder: Path) -> bool:
    """Whether a folder holds a document file of a type that is read (below it, at any depth)."""
    return any(p.suffix.lower() in SUFFIXES for p in document_files(folder, data_root=True))


def read_document_folder(folder: Path, data_root: bool = False) -> Documents:
    """One document per PDF, DOCX, HTML, .txt or .md file under `folder` (documents.py reads each): id the path below
    it without the suffix (`nda/acme`), title the file's name without it, source the path with it and the page
    starts of a PDF. A file that cannot be read (scanned, encrypted, corrupt, empty, another type) gets one warning
    and the rest are read; only a folder where no document can be read is an error."""
    origin: dict[str, Path] = {}
    files = list(document_files(folder, data_root))
    for path in (p for p in files if p.suffix.lower() in SUFFIXES):  # ids first: two files that would be one
        doc_id = path.relative_to(folder).with_suffix("").as_posix()  # document stop before anything is read
        if doc_id in origin:
            raise DataError(f"{path}: document id {doc_id!r} is also {origin[doc_id]}; rename one of the two")
        origin[doc_id] = path
    docs: dict[str, Doc] = {}
    read: dict[str, int] = {}
    skipped: dict[str, list[str]] = {}
    for path in files:
        rel = path.relative_to(folder)
        try:
            text, starts = read_document(path)
        except Unreadable as e:
            log.warning("%s: skipped, %s", path, e)
            skipped.setdefault(e.reason, []).append(rel.as_posix())
            continue
        plain = path.suffix.lower() in PLAIN  # read byte for byte, as they always were: no source to name
        docs[rel.with_suffix("").as_posix()] = Doc(path.stem, text, "" if plain else rel.as_posix(), starts)
        read[kind(path)] = read.get(kind(path), 0) + 1
    reading = {"documents": len(docs), "read": read, "skipped": skipped}
    if not docs:
        raise DataError(f"{folder}: no document could be read ({reading_line(reading)}); put PDF, DOCX, HTML, .txt or "
                        ".md files there, one document a file")
    (log.warning if skipped else log.info)("%s: %s", folder, reading_line(reading))
    return Documents(docs, reading)


def reading_line(reading: dict) -> str:
    """"read 5 documents (3 pdf, 2 docx); skipped 2: 1 scanned (scan.pdf), 1 unsupported (old.doc)"."""
    read = ", ".join(f"{n} {k}" for k, n in sorted(reading["read"].items()))
    line = f"read {reading['documents']} documents" + (f" ({read})" if read else "")
    skipped = reading["skipped"]
    if skipped:
        line += f"; skipped {sum(map(len, skipped.values()))}: " + ", ".join(
            f"{len(names)} {why} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
            for why, names in sorted(skipped.items()))
    return line
