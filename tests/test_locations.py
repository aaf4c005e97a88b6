"""Where each passage lies: `crosstune rerank`'s lines, /search's JSON and report.md's examples name the document,
the file, the character offsets (document.text[start:end] is the passage) and, where the source has pages, the page."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from crosstune.data.bm25 import BM25Config, load_or_build
from crosstune.data.chunking import Chunking, chunk_corpus, parse_chunk_id, word_spans
from crosstune.data.loading import DataConfig, load_corpus
from crosstune.data.types import Doc, ranked
from crosstune.train.config import load_config
from crosstune.train.evaluation.report import side_by_side
from crosstune.train.ranking.pipeline import RankingPipeline
from crosstune.train.recipes.rerank import hit_lines, rerank_command
from crosstune.train.serving.bodies import SearchRequest, search_body

ROOT = Path(__file__).resolve().parent.parent
CHUNKING = ["data.chunking=paragraphs", "data.chunk_size=16", "data.chunk_tokenizer=words"]
DOCUMENTS = {
    "lease": "Residential lease between Acme Properties and the Tenant.\n\nThe Tenant shall pay the rent monthly in "
             "advance.\nThe Landlord may increase the rent once in any twelve month period.\n\nThe Tenant may sublet "
             "the premises with the Landlord's written consent.\r\nPets are allowed with written consent.\n",
    "nda": "Mutual non-disclosure agreement.\nThe Recipient shall keep the Confidential Information secret for five "
           "years.\nThe Recipient may disclose it to its lawyers and auditors.\nThis agreement is governed by the laws "
           "of Delaware.\n",
    "policies/privacy": "Privacy policy.\n\nWe retain location data for eighteen months.\nYou may ask us to delete "
                        "your account and the data it holds at any time.\n",
}
QUERIES = {"q1": "may the tenant sublet the premises", "q2": "how long is location data kept",
           "q3": "how long is confidential information kept secret"}
CLAUSE = {"q1": ("lease", "The Tenant may sublet"), "q2": ("policies/privacy", "We retain location"),
          "q3": ("nda", "The Recipient shall keep")}


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A folder of .txt documents, their queries and span judgments (the clause each query asks about)."""
    root = tmp_path_factory.mktemp("documents")
    for doc, text in DOCUMENTS.items():
        write(root / "corpus" / f"{doc}.txt", text)
    write(root / "queries.jsonl", "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items()))
    rows = []
    for q, (doc, words) in CLAUSE.items():
        start = DOCUMENTS[doc].index(words)
        rows.append(f"{q}\t{doc}\t{start}\t{start + 40}\t1\n")
    write(root / "qrels" / "test.spans.tsv", "query-id\tcorpus-id\tstart\tend\tscore\n" + "".join(rows))
    return root


@pytest.fixture(scope="module")
def setup(tiny_model, folder, tmp_path_factory):
    """(export, config) of the tiny BERT with a fresh one-logit head over the folder, written by `crosstune export`."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from crosstune.train.recipes.export import export_command

    root = tmp_path_factory.mktemp("locations")
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [f"model.name={tiny_model}", f"run.root={root}",
                                                       f"data.path={folder}", "eval.depth_curve=[]", *CHUNKING])
    torch.manual_seed(0)
    source = root / "model"
    AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1).save_pretrained(source)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(source)
    return str(export_command(cfg, source=str(source))), cfg


@pytest.fixture(scope="module")
def documents(folder) -> dict[str, Doc]:
    """The documents as read (unchunked): their text is the file's, their source whatever the reader gives a .txt."""
    docs = load_corpus(DataConfig(path=str(folder)))
    assert {d: doc.text for d, doc in docs.items()} == DOCUMENTS  # offsets index the file's own characters
    return docs


def where(documents: dict[str, Doc], passage_id: str) -> tuple[str, str, int, int]:
    """(document, the name shown for it, start, end) of a chunk id, checked to map back to its passage."""
    doc, start, end = parse_chunk_id(passage_id)
    return doc, documents[doc].source or doc, start, end


# ---------------------------------------------------------------- crosstune rerank and /search over .txt files


def test_rerank_prints_each_passages_document_and_characters(setup, documents, folder, capsys):
    export, cfg = setup
    passages = load_corpus(DataConfig(path=str(folder), chunking="paragraphs", chunk_size=16, chunk_tokenizer="words"))
    run = rerank_command(cfg, {"q1": QUERIES["q1"]}, model=export, top_n=3)
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if re.match(r"\s+\d+\. ", line)]
    top = ranked(run["q1"])[:3]
    assert len(lines) == 3 and len(top) == 3
    for line, pid in zip(lines, top):
        doc, name, start, end = where(documents, pid)
        assert DOCUMENTS[doc][start:end] == passages[pid].text
        # a .txt has no pages: the place is its file (or document) and the characters
        assert f"  {name}, characters {start}-{end}  " in line and "page" not in line
        assert re.search(r"\(BM25 #\d+\s+-?\d+\.\d\d\)", line)


def test_search_json_names_the_document_and_offsets_and_no_page(setup, documents):
    from test_serve import call, running

    export, cfg = setup
    pipe = RankingPipeline.load(export, cfg, search=True)
    expected = pipe.search(QUERIES["q2"], 4)
    with running(pipe, searchable=True) as srv:
        status, out, _ = call(srv, "POST", "/search", {"query": QUERIES["q2"], "top_k": 4, "return_text": True})
        assert status == 200
        assert [r["id"] for r in out["results"]] == [h.doc_id for h in expected]
        for r in out["results"]:
            doc, _, start, end = where(documents, r["id"])
            assert (r["document"], r["start"], r["end"]) == (doc, start, end)
            assert DOCUMENTS[doc][r["start"]:r["end"]] == r["text"]
            assert r["source"] == (documents[doc].source or None)
            assert r["page"] is None and r["last_page"] is None
        # /rerank's texts come from the client: its answer keeps TEI's shape, no place in it
        status, tei, _ = call(srv, "POST", "/rerank", {"query": QUERIES["q2"], "texts": ["a text", "another"]})
        assert status == 200 and all(set(r) == {"index", "score"} for r in tei)
    assert all(h.location is None for h in pipe.rerank(QUERIES["q2"], ["a text", "another"]))


# ---------------------------------------------------------------- documents with pages


# pages of 2-3 lines, passages of up to 20 words: some passages hold lines of one page, some of two
PAGES = ["Lease of the premises at 4 Main Street.\nThe term is two years from the start date.\nParties: Acme and the "
         "Tenant.\n",
         "The Tenant shall pay the rent monthly.\nThe Tenant may sublet the premises with consent.\n",
         "Either party may end this lease on notice.\nNotices to the Tenant are given in writing.\n"]


def paged_corpus():
    text = "".join(PAGES)
    starts = tuple(sum(len(p) for p in PAGES[:i]) for i in range(len(PAGES)))
    docs = {"leases/acme": Doc("Acme lease", text, "leases/acme.pdf", starts)}
    return text, starts, chunk_corpus(docs, Chunking("paragraphs", 20, 0), word_spans)


def page_of(starts: tuple[int, ...], offset: int) -> int:
    return max(i for i, s in enumerate(starts) if s <= offset) + 1


def pages_label(starts: tuple[int, ...], passage_id: str) -> str:
    _, start, end = parse_chunk_id(passage_id)
    first, last = page_of(starts, start), page_of(starts, end - 1)
    return f"leases/acme.pdf, page {first}" if first == last else f"leases/acme.pdf, pages {first}-{last}"


def test_search_hits_over_paged_documents_give_the_page(setup):
    export, cfg = setup
    text, starts, passages = paged_corpus()
    base = RankingPipeline.load(export, cfg)
    pipe = RankingPipeline(base.scorer, depth=len(passages), corpus=passages,
                           index=load_or_build(passages, BM25Config(), None, True))
    hits = pipe.search("may the tenant sublet the premises", k=len(passages))
    assert {h.doc_id for h in hits} == set(passages)  # "the" is in every passage: all are ranked
    spans = set()
    for h in hits:
        _, start, end = parse_chunk_id(h.doc_id)
        loc = h.location
        assert (loc.document, loc.source, loc.start, loc.end) == ("leases/acme", "leases/acme.pdf", start, end)
        assert text[start:end] == h.text
        assert (loc.page, loc.last_page) == (page_of(starts, start), page_of(starts, end - 1))
        spans.add((loc.page, loc.last_page))
    assert any(a == b for a, b in spans) and any(a < b for a, b in spans)  # one page, and across a page break
    # the same place in rerank's line and in /search's JSON
    sublet = next(h for h in hits if "sublet" in h.text)
    _, start, end = parse_chunk_id(sublet.doc_id)
    assert f"  {pages_label(starts, sublet.doc_id)} (characters {start}-{end})  " in hit_lines(1, sublet, 1, 2.5)
    found = search_body(SearchRequest("q", 3, False), [sublet], "m")["results"][0]
    assert {k: found[k] for k in ("document", "source", "start", "end", "page", "last_page")} == {
        "document": "leases/acme", "source": "leases/acme.pdf", "start": start, "end": end,
        "page": page_of(starts, start), "last_page": page_of(starts, end - 1)}
    # a corpus entry read whole from a paged file is a document of its own: all of it, all its pages
    scan = {"scan": Doc("Scan", text, "scan.pdf", starts)}
    whole = RankingPipeline(base.scorer, corpus=scan, index=load_or_build(scan, BM25Config(), None, True))
    loc = whole.search("sublet the premises", 1)[0].location
    assert (loc.document, loc.source, loc.start, loc.end, loc.page, loc.last_page) == ("scan", "scan.pdf", 0,
                                                                                        len(text), 1, 3)
    assert loc.label() == "scan.pdf, pages 1-3"


def test_report_examples_label_each_passage_with_its_page():
    _, starts, passages = paged_corpus()
    sublet = next(p for p, doc in passages.items() if "sublet" in doc.text)
    other = next(p for p in passages if p != sublet)
    md = side_by_side("q", "may the tenant sublet", {sublet: 1}, passages, {"q": {other: 2.0, sublet: 1.0}},
                      {"q": {sublet: 2.0, other: 1.0}}, 0.6, 1.0)
    label = pages_label(starts, sublet)
    assert f"<br>_{label}_" in md and f"<br>_{pages_label(starts, other)}_" in md  # in the table's cells
    assert f"`{sublet}` _{label}_ BM25 #2 -> reranked #1" in md  # and beside the judged passage's id


# ---------------------------------------------------------------- report.md


def test_report_examples_show_each_passages_place(setup, documents, tmp_path):
    from crosstune.train.recipes.evaluate import evaluate_command

    export, cfg = setup
    report = evaluate_command(cfg, model=export, split="test", output=str(tmp_path / "eval"))
    assert report["level"] == "passage" and report["queries"] == 3
    md = (tmp_path / "eval" / "report.md").read_text()
    shown = {q for picks in report["examples"].values() for q in picks}
    assert shown  # every query is a win, a loss or drawn at random: 3 queries, eval.examples 3
    bm25 = {}
    for line in (tmp_path / "eval" / "bm25.trec").read_text().splitlines():
        q, _, pid, rank, _, _ = line.split()
        bm25.setdefault(q, {})[int(rank)] = pid
    for q in shown:
        for rank in (1, 2, 3):
            if rank in bm25[q]:
                _, name, start, end = where(documents, bm25[q][rank])
                assert f"<br>_{name}, characters {start}-{end}_" in md
