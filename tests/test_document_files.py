"""A folder of document files as they come (PDF, DOCX, HTML, .txt, .md, mixed): real files written here with fpdf2,
pypdf and python-docx, read back for their text, pages and structure; the files that cannot be read are warned about,
counted and skipped while the rest are read."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import docx  # the dev extra installs crosstune[documents] and fpdf2: without them these tests fail, not skip
import fpdf
import pypdf
import pytest

from crosstune.data.documents import read_document
from crosstune.data.loading import DataConfig, detect_format, load_corpus
from crosstune.data.locations import locate
from crosstune.data.page_text import pages_text
from crosstune.data.readers import read_document_folder
from crosstune.data.types import DataError

HEADER = "ACME Corp - Master Lease Agreement - Confidential"
NAMES = ["alpha", "bravo", "charlie", "delta"]  # every line of page k holds NAMES[k]


def lease_pages() -> list[list[str]]:
    """Four pages of numbered clauses; the first clause of each is long enough to wrap on the page."""
    return [[f"ARTICLE {k + 1} {name.upper()}",
             f"{k + 1}.1 The {name} tenant shall pay the rent for the premises in advance on the first day of each "
             f"month, without any deduction or set-off whatsoever, into the {name} account the landlord names.",
             f"(a) the {name} deposit is held in trust;",
             f"(b) the {name} deposit is returned at the end of the term.",
             f"Section {k + 1}.2 The {name} clause survives termination."] for k, name in enumerate(NAMES)]


def write_pdf(path: Path, pages: list[list[str]], header: str = HEADER, footer: bool = True) -> Path:
    class Lease(fpdf.FPDF):
        def header(self):
            if header:
                self.set_font("Helvetica", size=9)
                self.cell(0, 8, header, new_x="LMARGIN", new_y="NEXT")

        def footer(self):
            if footer:
                self.set_y(-15)
                self.set_font("Helvetica", size=9)
                self.cell(0, 8, f"Page {self.page_no()} of {{nb}}", align="C")

    pdf = Lease()
    pdf.set_font("Helvetica", size=11)
    for lines in pages:
        pdf.add_page()
        pdf.multi_cell(0, 6, "\n".join(lines))
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(path))
    return path


def write_docx(path: Path) -> Path:
    document = docx.Document()
    document.add_heading("Non-Disclosure Agreement", level=1)
    document.add_paragraph("1. Confidential Information means all information disclosed by either party.")
    document.add_paragraph("")  # an empty paragraph is no line
    document.add_heading("Obligations", level=2)
    document.add_paragraph("2.1 The recipient shall keep the information secret.")
    document.add_paragraph("(a) it may tell its advisers;")
    table = document.add_table(rows=2, cols=2)
    for r, (left, right) in enumerate([("Term", "3 years"), ("Law", "England")]):
        table.cell(r, 0).text, table.cell(r, 1).text = left, right
    path.parent.mkdir(parents=True, exist_ok=True)
    document.save(str(path))
    return path


HTML = """<html><head><title>Privacy Policy</title><style>p {color: red}</style><script>var x = 1;</script></head>
<body><h1>Privacy Policy</h1><div>We keep <b>personal</b> data safe.</div><p>1. Retention. Data is kept for 18
months.</p><p>1.2 Deletion on request.<br>(a) by email</p><ul><li>(b) by post</li></ul>
<table><tr><td>Controller</td><td>ACME</td></tr><tr><td>Contact</td><td>privacy@acme.test</td></tr></table>
<h2>Section 3 Cookies</h2><p>We use cookies &amp; similar tools.</p></body></html>"""


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def lines_of(text: str) -> list[str]:
    return [line for line in text.split("\n") if line.strip()]


# ---------------------------------------------------------------- one file of each type


def test_pdf_pages_start_where_page_starts_say_and_headers_footers_are_gone(tmp_path):
    text, starts = read_document(write_pdf(tmp_path / "lease.pdf", lease_pages()))
    assert len(starts) == 4 and starts[0] == 0
    for k, start in enumerate(starts):
        assert text[start:].startswith(f"ARTICLE {k + 1} {NAMES[k].upper()}\n")
        end = starts[k + 1] if k + 1 < len(starts) else len(text)
        assert {n for n in NAMES if n in text[start:end].lower()} == {NAMES[k]}  # nothing of another page
    assert HEADER not in text and "ACME Corp" not in text and "Page " not in text and " of 4" not in text
    lines = lines_of(text)
    # each clause on its own line, the wrapped first clause joined back into one
    assert "(a) the bravo deposit is held in trust;" in lines and "(b) the bravo deposit is returned at the end of " \
           "the term." in lines and "Section 2.2 The bravo clause survives termination." in lines
    assert [line for line in lines if line.startswith("2.1 ")] == [
        "2.1 The bravo tenant shall pay the rent for the premises in advance on the first day of each month, without "
        "any deduction or set-off whatsoever, into the bravo account the landlord names."]
    assert len(lines) == 5 * 4


def test_running_lines_go_but_headings_that_change_stay():
    pages = [[f"ACME | {k}", f"SCHEDULE {k}", f"Body of schedule {k}.", f"- {k} -"] for k in range(1, 5)]
    text, starts = pages_text(["\n".join(p) for p in pages])
    assert lines_of(text) == [line for k in range(1, 5) for line in (f"SCHEDULE {k}", f"Body of schedule {k}.")]
    # alternating running heads (left and right pages) each stand on half of the pages
    pages = [["Left head" if k % 2 else "Right head", f"Clause {k} text."] for k in range(4)]
    assert lines_of(pages_text(["\n".join(p) for p in pages])[0]) == [f"Clause {k} text." for k in range(4)]
    # two pages are too few to tell a running line from text; a bare page number still goes
    two = pages_text(["Same first line\nOne.\n1", "Same first line\nTwo.\n2"])[0]
    assert lines_of(two) == ["Same first line", "One.", "Same first line", "Two."]


def test_docx_paragraphs_and_headings_are_lines(tmp_path):
    text, starts = read_document(write_docx(tmp_path / "nda.docx"))
    assert starts == ()
    assert text == ("Non-Disclosure Agreement\n1. Confidential Information means all information disclosed by either "
                    "party.\n\nObligations\n2.1 The recipient shall keep the information secret.\n(a) it may tell its "
                    "advisers;\nTerm | 3 years\nLaw | England")


def test_html_blocks_end_lines(tmp_path):
    text, starts = read_document(write(tmp_path / "privacy.html", HTML))
    assert starts == ()
    lines = [line.strip() for line in lines_of(text)]
    assert lines[:2] == ["Privacy Policy", "We keep personal data safe."]
    assert "1. Retention. Data is kept for 18 months." in lines and "1.2 Deletion on request." in lines
    assert "(a) by email" in lines and "* (b) by post" in lines and "Section 3 Cookies" in lines
    assert "We use cookies & similar tools." in lines and any(line.startswith("Controller") for line in lines)
    assert "var x" not in text and "color" not in text


# ---------------------------------------------------------------- a mixed folder


def mixed_folder(root: Path) -> Path:
    write_pdf(root / "leases" / "acme.pdf", lease_pages())
    write_docx(root / "nda.docx")
    write(root / "policies" / "privacy.htm", HTML)
    write(root / "notes.txt", "Line one.\r\nLine two.\r\n")
    good = write_pdf(root / "good.pdf", lease_pages()[:1]).read_bytes()
    write(root / "broken.pdf", good[: len(good) // 2])  # truncated in transfer
    locked = pypdf.PdfWriter(clone_from=str(root / "good.pdf"))
    locked.encrypt(user_password="secret", owner_password="owner", algorithm="RC4-128")
    with open(root / "locked.pdf", "wb") as f:
        locked.write(f)
    blank = pypdf.PdfWriter()
    blank.add_blank_page(612, 792)  # what a scan without OCR looks like: a page with no text on it
    with open(root / "scan.pdf", "wb") as f:
        blank.write(f)
    write(root / "old.doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100)
    write(root / "empty.txt", "")
    write(root / "README.md", "about this folder")  # the data folder's own README, queries and qrels: no documents
    write(root / ".DS_Store", b"\0\1")
    write(root / "queries.jsonl", '{"_id": "q1", "text": "when is the bravo deposit returned"}\n')
    write(root / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\nq1\tleases/acme\t1\n")
    return root


def test_a_mixed_folder_reads_what_it_can_and_warns_once_for_each_file_it_skips(tmp_path, caplog):
    folder = mixed_folder(tmp_path)
    with caplog.at_level(logging.WARNING, logger="crosstune.data.readers"):
        docs = read_document_folder(folder, data_root=True)
    assert sorted(docs) == ["good", "leases/acme", "nda", "notes", "policies/privacy"]
    acme = docs["leases/acme"]
    assert (acme.title, acme.source, len(acme.page_starts)) == ("acme", "leases/acme.pdf", 4)
    assert docs["nda"].source == "nda.docx" and docs["policies/privacy"].source == "policies/privacy.htm"
    assert docs["notes"].text == "Line one.\r\nLine two.\r\n"  # byte for byte, as .txt always was
    assert docs.reading == {"documents": 5, "read": {"pdf": 2, "docx": 1, "html": 1, "txt": 1},
                            "skipped": {"corrupt": ["broken.pdf"], "encrypted": ["locked.pdf"], "scanned": ["scan.pdf"],
                                        "unsupported": ["old.doc"], "empty": ["empty.txt"]}}
    messages = [r.getMessage() for r in caplog.records]
    for name, why in [("broken.pdf", "corrupt or truncated"), ("locked.pdf", "save an unencrypted copy"),
                      ("scan.pdf", "scanned PDF with no text layer: run OCR"), ("old.doc", "convert it to .docx"),
                      ("empty.txt", "empty file")]:
        mine = [m for m in messages if f"{name}: skipped" in m]
        assert len(mine) == 1 and why in mine[0], (name, mine)
        assert "\n" not in mine[0]
    assert any("read 5 documents" in m and "1 scanned (scan.pdf)" in m for m in messages)  # the summary line
    assert not any("README" in m or "queries" in m or "DS_Store" in m or "qrels" in m for m in messages)


def test_only_a_folder_with_no_readable_document_is_an_error(tmp_path):
    write(tmp_path / "scan.pdf", b"")
    write(tmp_path / "old.rtf", "{\\rtf1 text}")
    with pytest.raises(DataError, match=r"no document could be read \(read 0 documents; skipped 2: 1 empty "
                                        r"\(scan\.pdf\), 1 unsupported \(old\.rtf\)\)"):
        read_document_folder(tmp_path)


def test_two_files_that_would_be_one_document_name_both(tmp_path):
    write_pdf(tmp_path / "contract.pdf", lease_pages()[:1])
    write_docx(tmp_path / "contract.docx")
    with pytest.raises(DataError, match=r"contract\.pdf: document id 'contract' is also .*contract\.docx; rename"):
        read_document_folder(tmp_path)


def test_a_missing_library_says_which_extra_to_install(tmp_path, monkeypatch):
    write_pdf(tmp_path / "lease.pdf", lease_pages()[:1])
    monkeypatch.setitem(sys.modules, "pypdf", None)  # as if the extra were not installed
    with pytest.raises(DataError, match=r'lease\.pdf: reading \.pdf files needs pypdf, which is not installed; '
                                        r'pip install "crosstune\[documents\]"'):
        read_document_folder(tmp_path)


def test_detect_format_finds_documents_at_any_depth(tmp_path):
    write(tmp_path / "README.md", "about")
    write_docx(tmp_path / "contracts" / "2024" / "nda.docx")
    assert detect_format(DataConfig(path=str(tmp_path))) == "folder"
    readme_only = tmp_path / "hub"
    write(readme_only / "README.md", "---\n---\n")
    assert detect_format(DataConfig(path=str(readme_only))) == "hf"


def test_passages_of_a_mixed_folder_name_their_file_and_page(tmp_path):
    folder = mixed_folder(tmp_path)
    cfg = DataConfig(path=str(folder), chunking="paragraphs", chunk_size=48, chunk_tokenizer="words")
    passages = load_corpus(cfg)
    assert passages.reading["read"]["pdf"] == 2 and passages.reading["skipped"]["scanned"] == ["scan.pdf"]
    acme = [pid for pid in passages if pid.startswith("leases/acme@")]
    assert len(acme) >= 4
    pages_seen = set()
    for pid in acme:
        where = locate(pid, passages)
        assert where.source == "leases/acme.pdf" and where.label().startswith("leases/acme.pdf, page")
        text = passages[pid].text
        first = next(n for n in NAMES if n in lines_of(text)[0].lower())
        assert NAMES.index(first) + 1 == where.page  # the page its first line is on
        assert {n for n in NAMES if n in text.lower()} <= set(NAMES[where.page - 1:where.last_page])
        assert "Page " not in text and "ACME Corp" not in text
        pages_seen.add(where.page)
    assert pages_seen == {1, 2, 3, 4}
    nda = locate(next(pid for pid in passages if pid.startswith("nda@")), passages)
    assert nda.source == "nda.docx" and nda.page is None


def test_mine_writes_what_was_read_and_skipped_into_its_stats(tmp_path, tiny_model, capsys):
    import json

    from crosstune.train.cli import main

    folder = mixed_folder(tmp_path / "data")
    write(folder / "queries.jsonl", '{"_id": "q1", "text": "bravo deposit returned, confidential information"}\n'
                                    '{"_id": "q2", "text": "recipient keeps information secret, deposit in trust"}\n')
    write(folder / "qrels" / "train.tsv", "query-id\tcorpus-id\tscore\nq1\tleases/acme\t1\nq2\tnda\t1\n")
    tiny = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"
    argv = ["mine", "--config", str(tiny), f"model.name={tiny_model}", f"run.root={tmp_path / 'runs'}",
            "run.name=docs", f"data.path={folder}", "data.dev_split=", "data.chunking=paragraphs",
            "data.chunk_size=48", "data.chunk_tokenizer=words", "mining.depth=12", "mining.negative_range=[0,12]",
            "mining.num_negatives=1", "train.group_size=2"]
    assert main(argv) == 0, capsys.readouterr().err
    stats = json.loads((tmp_path / "runs" / "docs" / "mined" / "stats.json").read_text())
    assert stats["reading"]["read"] == {"pdf": 2, "docx": 1, "html": 1, "txt": 1}
    assert stats["reading"]["skipped"]["encrypted"] == ["locked.pdf"] and stats["reading"]["documents"] == 5
