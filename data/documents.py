"""The text of one document file, whatever it comes as: PDF, DOCX, HTML, or plain .txt/.md.

Each reader returns the text and `page_starts`, the character offset in that text where each page begins
(page_starts[0] == 0; () where the format has no pages), so that a passage cut from it names its file and page.
Legal text is read for its structure:

- PDF: the pages' texts joined by a blank line; `text[page_starts[k]:]` begins page k+1. Running headers and
  footers ("Page 3 of 12" at the foot of most pages) and bare page numbers are dropped, and lines the layout
  wrapped are joined back into their paragraphs, so each heading and numbered clause ("1.2", "(a)", "ARTICLE IV")
  starts its own line (page_text.py says how). A word hyphenated at a line's end keeps its hyphen.
- DOCX: each paragraph a line, a blank line before each heading, each table row a line (cells joined by " | ");
  the Word file's own headers, footers and footnotes are not body text and are left out. Numbers that Word adds
  itself (automatic list numbering) are not in the text: python-docx reads what the paragraphs hold.
- HTML: block elements (p, li, h1-h6, div, tr, br) end lines (inscriptis renders the layout); scripts, styles and
  the <title> are left out.
- .txt/.md: byte for byte (line endings too), so offsets mean what they mean in the file.

The libraries are the optional extra `crosstune[documents]` (pypdf, python-docx, inscriptis). A file that cannot be
read (scanned, encrypted, corrupt, empty, another type) raises `Unreadable` with the reason and what to do about
it; the folder reader (readers.py) warns about it and reads the rest.
"""
from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

from .page_text import pages_text
from .types import DataError

PLAIN = (".txt", ".md")
SUFFIXES = (".pdf", ".docx", ".html", ".htm", *PLAIN)
INSTALL = 'pip install "crosstune[documents]"'
CONVERT = "convert it to .docx or .pdf (e.g. libreoffice --headless --convert-to docx FILE)"
OCR = "run OCR (e.g. ocrmypdf) and put the resulting PDF here"
OTHER_TYPES = {**dict.fromkeys((".doc", ".rtf", ".odt", ".wpd", ".pages", ".xls", ".xlsx", ".ppt", ".pptx"), CONVERT),
               **dict.fromkeys((".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp"), OCR)}


class Unreadable(Exception):
    """A document file that is skipped: `reason` (scanned, encrypted, corrupt, empty, encoding, unsupported) and a
    message that says what to do."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def kind(path: Path) -> str:
    """The type a file is counted under: pdf, docx, html, txt or md (.htm counts as html)."""
    suffix = path.suffix.lower()
    return "html" if suffix == ".htm" else suffix[1:]


def read_document(path: Path) -> tuple[str, tuple[int, ...]]:
    """(text, page_starts) of one file; Unreadable when it is to be skipped, DataError when a library is missing."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        fix = OTHER_TYPES.get(suffix, CONVERT.replace(".docx or .pdf", ".pdf, .docx, .html or .txt"))
        raise Unreadable("unsupported", f"not a PDF, DOCX, HTML, TXT or MD file: {fix}")
    if path.stat().st_size == 0:
        raise Unreadable("empty", "empty file: nothing to read")
    if suffix in PLAIN:
        text, starts = read_plain(path), ()
    elif suffix == ".pdf":
        text, starts = read_pdf(path)
    elif suffix == ".docx":
        text, starts = read_docx(path), ()
    else:
        text, starts = read_html(path), ()
    if not text.strip():
        raise Unreadable("empty", "holds no text: nothing to read")
    return text, starts


def needs(module: str, package: str, path: Path):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"{path}: reading {path.suffix} files needs {package}, which is not installed; {INSTALL}"
                        ) from None


def read_plain(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start}); re-save the file "
                        "as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None


def corrupt(what: str, e: Exception) -> Unreadable:
    detail = str(e).splitlines()[0] if str(e) else ""
    return Unreadable("corrupt", f"cannot be read as {what} ({type(e).__name__}: {detail}); it may be corrupt or "
                                 "truncated: open and re-save it, or download it again")


# -- PDF -----------------------------------------------------------------------------------------------------------
def read_pdf(path: Path) -> tuple[str, tuple[int, ...]]:
    pypdf = needs("pypdf", "pypdf", path)
    if b"%PDF" not in path.read_bytes()[:1024]:
        raise Unreadable("corrupt", "not a PDF file (no %PDF header): give it its real suffix or convert it to PDF")
    # pypdf logs each repair it makes to a damaged file; the one line a skipped file gets is ours
    logger = logging.getLogger("pypdf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reader = pypdf.PdfReader(path)
            if reader.is_encrypted and not decrypted(reader, pypdf):
                raise Unreadable("encrypted", "encrypted PDF (needs a password to open): save an unencrypted copy")
            pages = [page.extract_text() or "" for page in reader.pages]
    except (Unreadable, DataError):
        raise
    except Exception as e:  # pypdf raises many types on damaged files; the file is skipped, the folder read on
        raise corrupt("a PDF", e) from None
    finally:
        logger.setLevel(level)
    if not pages:
        raise Unreadable("empty", "PDF without pages: nothing to read")
    text, starts = pages_text(pages)
    if not text.strip():
        raise Unreadable("scanned", "scanned PDF with no text layer: run OCR (e.g. ocrmypdf) and put the result here")
    return text, starts


def decrypted(reader, pypdf) -> bool:
    """Many PDFs are encrypted with an empty user password (only editing is locked): those open as they are."""
    try:
        return reader.decrypt("") != pypdf.PasswordType.NOT_DECRYPTED
    except Exception:  # e.g. AES without the cryptography package: the file stays closed to us
        return False


# -- DOCX ----------------------------------------------------------------------------------------------------------
def read_docx(path: Path) -> str:
    docx = needs("docx", "python-docx", path)
    head = path.read_bytes()[:8]
    if head.startswith(b"\xd0\xcf\x11\xe0"):  # an OLE container: Word keeps encrypted .docx (and old .doc) in one
        raise Unreadable("encrypted", "encrypted DOCX (or an old .doc renamed .docx): save an unencrypted .docx copy")
    if not head.startswith(b"PK"):
        raise Unreadable("corrupt", "not a DOCX file (not a zip archive): give it its real suffix or " + CONVERT)
    try:
        blocks = list(docx.Document(str(path)).iter_inner_content())
        return "\n".join(docx_lines(blocks))
    except Exception as e:  # python-docx raises zip, XML and KeyError alike on damaged files
        raise corrupt("a DOCX", e) from None


def docx_lines(blocks) -> list[str]:
    """A line per paragraph (a blank line before a heading) and per table row; empty paragraphs dropped."""
    lines: list[str] = []
    for block in blocks:
        if hasattr(block, "rows"):
            for row in block.rows:
                cells = [" ".join(c.text.split()) for c in row.cells]
                if any(cells):
                    lines.append(" | ".join(unique(cells)))
            continue
        text = block.text.strip()
        if not text:
            continue
        style = (block.style.name if block.style is not None else "") or ""
        if lines and (style.startswith("Heading") or style == "Title"):
            lines.append("")
        lines.append(text)
    return lines


def unique(cells: list[str]) -> list[str]:
    """Cells of a row once each: python-docx repeats a merged cell for every grid column it spans."""
    out: list[str] = []
    for cell in cells:
        if not out or cell != out[-1]:
            out.append(cell)
    return out


# -- HTML ----------------------------------------------------------------------------------------------------------
CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([\w-]+)""", re.I)


def read_html(path: Path) -> str:
    inscriptis = needs("inscriptis", "inscriptis", path)
    from inscriptis.css_profiles import CSS_PROFILES
    from inscriptis.model.config import ParserConfig

    raw = path.read_bytes()
    try:
        markup = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        declared = CHARSET.search(raw[:4096])
        try:
            markup = raw.decode(declared[1].decode("ascii")) if declared else None
        except (LookupError, UnicodeDecodeError):
            markup = None
        if markup is None:
            raise Unreadable("encoding", "HTML that is not UTF-8 and declares no charset it is written in: re-save "
                                         "it as UTF-8") from None
    try:
        text = inscriptis.get_text(markup, ParserConfig(css=CSS_PROFILES["strict"]))  # strict: no indentation
    except Exception as e:  # lxml's parser errors on broken markup
        raise corrupt("HTML", e) from None
    lines = [line.rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")
