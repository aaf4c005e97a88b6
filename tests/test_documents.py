"""Whole documents: chunking with exact offsets, span/document/graded judgments, document ranking (MaxP, FirstP, SumP),
the legal BM25 analyzer, truncation counts and the query budget."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from crosstune.data.analyzers import legal_terms
from crosstune.data.batching import tokenize_pairs
from crosstune.data.bm25 import BM25Config, BM25Index, load_or_build, make_analyzer
from crosstune.data.chunking import (
    Chunking,
    chunk_corpus,
    chunk_text,
    parse_chunk_id,
    passage_origin,
    tokenizer_spans,
    word_spans,
)
from crosstune.data.judgments import load_judgments, mining_qrels
from crosstune.data.loading import DataConfig, load_corpus, load_split
from crosstune.data.mining import MiningConfig, mine
from crosstune.data.truncation import cut_query, losses, report
from crosstune.data.types import DataError, Doc, ranked
from crosstune.train.evaluation.metrics import per_query
from crosstune.train.ranking.aggregation import aggregate_run, budget_candidates, document_ranking
from crosstune.train.ranking.pipeline import RankingPipeline

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "tiny.yaml"
# a preamble of ~250 tokens: past a 64-token window, past any single passage of a 40-token chunking
PREAMBLE = "\n".join(f"Clause {i}. The parties agree to the general terms set out in schedule {i} of this agreement."
                     for i in range(1, 13))


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="")
    return path


# ---------------------------------------------------------------- chunking


@pytest.mark.parametrize("method, size, stride", [("tokens", 16, 0), ("tokens", 16, 8), ("paragraphs", 24, 0),
                                                  ("paragraphs", 24, 12), ("paragraphs", 8, 0)])
def test_offsets_map_back_exactly_and_every_token_is_in_a_passage(tokenizer, method, size, stride):
    text = PREAMBLE + "\r\n\r\n  The Tenant may sublet the premises with the Landlord's written consent.  \n"
    spans = tokenizer_spans(tokenizer)
    docs = {"lease@v2": Doc("Lease", text)}  # an id that itself holds '@'
    corpus = chunk_corpus(docs, Chunking(method, size, stride), spans)
    tokens = spans(text)
    covered = set()
    for pid, passage in corpus.items():
        doc, start, end = parse_chunk_id(pid)
        assert doc == "lease@v2" and passage.title == "Lease"
        assert text[start:end] == passage.text and passage.text == passage.text.strip()
        inside = [t for t in tokens if start <= t[0] and t[1] <= end]
        assert len(inside) <= size
        covered.update(inside)
    assert covered == set(tokens)  # nothing the document says is left out
    starts = sorted(parse_chunk_id(p)[1] for p in corpus)
    if method == "tokens":
        # windows start every `stride` tokens: consecutive passages share size - stride tokens
        assert starts == [tokens[i][0] for i in range(0, len(tokens), stride or size)][:len(starts)]
    else:
        # whole lines: every passage starts where a line (or, for size 8, a sentence or a window) starts
        assert all(s == 0 or text[s - 1] in "\n " for s in starts)
        if size >= 24:  # every line fits: passages start at line starts (after any indentation)
            assert all(s == 0 or text[:s].rstrip(" ").endswith("\n") for s in starts)
    assert corpus.doc_lengths == {"lease@v2": len(text)}


def test_paragraph_chunks_cut_at_sentence_ends_not_at_legal_abbreviations():
    text = ("Claims arise under 42 U.S.C. § 1983 and Art. 5 of the Convention. The Court held otherwise. "
            "Costs follow the event.")
    # 30 word tokens in one line: too many for 22, so it is cut at sentence ends, and the first sentence (20 tokens,
    # with "U.S.C." and "Art." inside it) stays whole
    ranges = chunk_text(text, Chunking("paragraphs", 22, 0), word_spans)
    assert [text[s:e] for s, e in ranges] == ["Claims arise under 42 U.S.C. § 1983 and Art. 5 of the Convention.",
                                              "The Court held otherwise. Costs follow the event."]


def test_passage_origin_reads_chunk_ids_and_separated_ids():
    assert passage_origin("nda/acme@120-480") == ("nda/acme", 120)
    assert passage_origin("privacy_qa/Fiverr#7") == ("privacy_qa/Fiverr", 7)
    assert passage_origin("whole-doc") == ("whole-doc", 0)
    assert parse_chunk_id("a@b@3-9") == ("a@b", 3, 9) and parse_chunk_id("plain") is None


# ---------------------------------------------------------------- a folder of documents


def test_a_folder_of_txt_and_md_documents_loads(tmp_path):
    write(tmp_path / "nda.txt", "Line one.\r\nLine two.\r\n")
    write(tmp_path / "policies" / "privacy.md", "# Privacy\n\nWe keep data for 18 months.\n")
    write(tmp_path / "README.md", "about this folder")  # the folder's own README is not a document
    write(tmp_path / ".hidden" / "x.txt", "not a document")
    write(tmp_path / "queries.jsonl", '{"_id": "q1", "text": "how long is data kept"}\n')
    write(tmp_path / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\nq1\tpolicies/privacy\t1\n")
    cfg = DataConfig(path=str(tmp_path))
    corpus = load_corpus(cfg)
    assert corpus == {"nda": Doc("nda", "Line one.\r\nLine two.\r\n"),  # line endings kept: offsets mean the file's
                      "policies/privacy": Doc("privacy", "# Privacy\n\nWe keep data for 18 months.\n")}
    chunked = load_corpus(DataConfig(path=str(tmp_path), chunking="paragraphs", chunk_size=8, chunk_tokenizer="words"))
    assert {passage_origin(p)[0] for p in chunked} == {"nda", "policies/privacy"}
    for pid, passage in chunked.items():
        doc, start, end = parse_chunk_id(pid)
        assert corpus[doc].text[start:end] == passage.text
    cfg = DataConfig(path=str(tmp_path), chunking="paragraphs", chunk_size=8, chunk_tokenizer="words")
    queries, judged = load_judgments(cfg, "test", chunked)
    assert judged.level == "document" and judged.documents == {"q1": {"policies/privacy": 1}}
    # a corpus/ subfolder holds the documents when there is one
    write(tmp_path / "corpus" / "only.txt", "the only document")
    assert list(load_corpus(DataConfig(path=str(tmp_path)))) == ["only"]


def test_folder_errors_name_the_file(tmp_path):
    write(tmp_path / "a.txt", "one")
    write(tmp_path / "a.md", "two")
    with pytest.raises(DataError, match=r"a\.txt: document id 'a' is also .*a\.md; rename one"):
        load_corpus(DataConfig(path=str(tmp_path)))
    (tmp_path / "a.md").unlink()
    (tmp_path / "b.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match=r"b\.txt: not UTF-8 \(byte 0xe9"):
        load_corpus(DataConfig(path=str(tmp_path)))


# ---------------------------------------------------------------- span, document and graded judgments

WORDS = " ".join(f"w{i:02d}" for i in range(60))  # word i is text[4i:4i+3]


def word_chars(first: int, last: int) -> tuple[int, int]:
    return 4 * first, 4 * last + 3


def span_folder(tmp_path: Path, rows: list[str]) -> Path:
    write(tmp_path / "corpus.jsonl", json.dumps({"_id": "doc", "title": "", "text": WORDS}) + "\n"
          + json.dumps({"_id": "other", "title": "", "text": WORDS}) + "\n")
    write(tmp_path / "queries.jsonl", '{"_id": "q1", "text": "w12 w13"}\n')
    write(tmp_path / "qrels" / "train.spans.tsv", "query-id\tcorpus-id\tstart\tend\tscore\n" + "".join(rows))
    return tmp_path


def test_span_judgments_label_the_right_passages(tmp_path):
    a, b = word_chars(12, 27)  # half in passage w10-w19, half in w20-w29: both hold 50%
    c, d = word_chars(29, 31)  # w20-w29 holds 3 of its 11 characters (27%: unsure), w30-w39 holds 7 (positive)
    e, f = word_chars(45, 47)  # judged not relevant: w40-w49 is a known negative
    folder = span_folder(tmp_path, [f"q1\tdoc\t{a}\t{b}\t2\n", f"q1\tdoc\t{c}\t{d}\t1\n", f"q1\tdoc\t{e}\t{f}\t0\n"])
    cfg = DataConfig(path=str(folder), chunking="tokens", chunk_size=10, chunk_tokenizer="words")
    corpus = load_corpus(cfg)
    passage = {i: f"doc@{4 * i}-{4 * (i + 9) + 3}" for i in range(0, 60, 10)}
    assert set(passage.values()) <= set(corpus)
    queries, judged = load_judgments(cfg, "train", corpus)
    assert judged.level == "span" and queries == {"q1": "w12 w13"}
    assert judged.passages == {"q1": {passage[10]: 2, passage[20]: 2, passage[30]: 1, passage[40]: 0}}
    assert judged.unsure == {"q1": set()}  # w20-w29 is partly in the short span but wholly positive by the long one
    assert judged.documents == {"q1": {"doc": 2}}
    # the short span alone: w20-w29 holds too little of it to be positive, and is no negative either
    only_short = span_folder(tmp_path / "short", [f"q1\tdoc\t{c}\t{d}\t1\n"])
    _, short = load_judgments(DataConfig(**{**cfg.__dict__, "path": str(only_short)}), "train", corpus)
    assert short.passages == {"q1": {passage[30]: 1}} and short.unsure == {"q1": {passage[20]}}
    # a higher threshold: the grade-1 span is a known negative, the grade-2 one stays positive
    _, strict = load_judgments(DataConfig(**{**cfg.__dict__, "relevance_threshold": 2}), "train", corpus)
    assert strict.passages["q1"] == {passage[10]: 2, passage[20]: 2, passage[30]: 0, passage[40]: 0}


def test_span_offsets_outside_the_document_name_the_line(tmp_path):
    folder = span_folder(tmp_path, ["q1\tdoc\t0\t12\t1\n", f"q1\tdoc\t200\t{len(WORDS) + 5}\t1\n"])
    cfg = DataConfig(path=str(folder), chunking="tokens", chunk_size=10, chunk_tokenizer="words")
    with pytest.raises(DataError, match=r"train\.spans\.tsv:3: span 200-244 does not lie inside document 'doc' "
                                        r"\(239 characters\)"):
        load_judgments(cfg, "train", load_corpus(cfg))


def test_document_judgments_mine_the_best_passage_and_keep_its_siblings_out(tmp_path):
    docs = {"lease": Doc("Lease", PREAMBLE + "\nThe Tenant may sublet the premises with written consent."),
            "nda": Doc("NDA", PREAMBLE + "\nConfidential Information excludes public information."),
            "policy": Doc("Policy", PREAMBLE + "\nWe retain location data for eighteen months.")}
    corpus = chunk_corpus(docs, Chunking("paragraphs", 40, 0), word_spans)
    index = BM25Index.build(corpus, BM25Config(), progress=False)
    queries = {"q1": "may the tenant sublet the premises under this agreement"}  # "agreement": every document
    from crosstune.data.judgments import Judgments

    judged = Judgments("document", {}, {"q1": {"lease": 1, "nda": 0}})
    qrels, unsure = mining_qrels(judged, corpus, index.scores_of, queries, "best")
    lease = [p for p in corpus if p.startswith("lease@")]
    best = [p for p, r in qrels["q1"].items() if r > 0]
    assert len(best) == 1 and "sublet" in corpus[best[0]].text
    assert unsure["q1"] == set(lease) - set(best)
    [nda_negative] = [p for p, r in qrels["q1"].items() if r == 0]
    assert nda_negative.startswith("nda@")
    each, _ = mining_qrels(judged, corpus, index.scores_of, queries, "each")
    assert {p for p, r in each["q1"].items() if r > 0} == set(lease)
    run = index.search(queries, 20)
    rows, stats = mine(corpus, queries, qrels, run, MiningConfig(depth=20, negative_range=[0, 20], num_negatives=3),
                       unsure=unsure)
    assert len(rows) == 1 and not set(rows[0]["negative_ids"]) & set(lease)
    assert nda_negative in rows[0]["negative_ids"]  # the judged document's passage comes before unjudged ones


def test_graded_threshold_and_explicit_zero_negatives_in_mining(tmp_path):
    corpus = {f"d{i:02d}": Doc("", f"passage {i}") for i in range(40)}
    queries = {"q1": "query"}
    run = {"q1": {f"d{i:02d}": float(40 - i) for i in range(30)}}
    write(tmp_path / "corpus.jsonl", "".join(json.dumps({"_id": d, "text": c.text}) + "\n" for d, c in corpus.items()))
    write(tmp_path / "queries.jsonl", '{"_id": "q1", "text": "query"}\n')
    # graded 0-4 as ACORD grades: 1 = same category, not relevant; d35 judged 0 but BM25 never retrieved it
    write(tmp_path / "qrels" / "train.tsv", "q1\td05\t4\nq1\td01\t1\nq1\td20\t2\nq1\td35\t0\n")
    _, everything = load_split(DataConfig(path=str(tmp_path)), "train", corpus)
    assert everything == {"q1": {"d05": 4, "d01": 1, "d20": 2, "d35": 0}}  # threshold 1: as before
    _, qrels = load_split(DataConfig(path=str(tmp_path), relevance_threshold=2), "train", corpus)
    assert qrels == {"q1": {"d05": 4, "d01": 0, "d20": 2, "d35": 0}}
    cfg = MiningConfig(depth=30, negative_range=[5, 30], num_negatives=4, seed=3)
    for seed in range(5):
        rows, stats = mine(corpus, queries, qrels, run, MiningConfig(**{**cfg.__dict__, "seed": seed}))
        assert [(r["positive_id"], r["positive_grade"]) for r in rows] == [("d05", 4), ("d20", 2)]
        for row in rows:
            negs = row["negative_ids"]
            # the judged non-relevant come first, from any rank (d01 is above the range, d35 was never retrieved)
            assert {"d01", "d35"} <= set(negs) and not {"d05", "d20"} & set(negs)
            assert row["negative_scores"][negs.index("d35")] is None
        assert stats["judged_negatives_used"] == 4
    # graded metrics: nDCG's gains are the grades that count (below the threshold: 0)
    ranking = {"q1": {"d01": 3.0, "d20": 2.0, "d05": 1.0}}
    ndcg = per_query(qrels, ranking, ["nDCG@10"])["nDCG@10"]["q1"]
    dcg = 2 / math.log2(3) + 4 / math.log2(4)
    ideal = 4 / math.log2(2) + 2 / math.log2(3)
    assert ndcg == pytest.approx(dcg / ideal)


# ---------------------------------------------------------------- documents ranked by their passages

RUN = {"q": {"d1@0-10": 0.2, "d1@10-20": 0.9, "d2@0-10": 0.5, "d2@10-20": 0.6, "d2@20-30": 0.0, "d3#0": 0.7,
             "d3#1": 0.1}}


@pytest.mark.parametrize("how, k, expected", [
    ("maxp", 3, {"d1": 0.9, "d2": 0.6, "d3": 0.7}),
    ("firstp", 3, {"d1": 0.2, "d2": 0.5, "d3": 0.7}),
    ("sump", 3, {"d1": 1.1, "d2": 1.1, "d3": 0.8}),
    ("mean-top-k", 2, {"d1": 0.55, "d2": 0.55, "d3": 0.4}),
    ("mean-top-k", 1, {"d1": 0.9, "d2": 0.6, "d3": 0.7}),
])
def test_aggregate_on_a_hand_made_run(how, k, expected):
    got = aggregate_run(RUN, how, k)["q"]
    assert got == pytest.approx(expected)


def test_passage_budget_takes_the_passages_of_the_top_documents():
    # maxp order: d1 (0.9), d3 (0.7), d2 (0.6); each document gives its passages best first
    assert list(budget_candidates(RUN, 3, "maxp")["q"]) == ["d1@10-20", "d1@0-10", "d3#0"]
    assert list(budget_candidates(RUN, 10, "firstp")["q"])[:2] == ["d3#0", "d3#1"]
    # documents of reranked passages first, then the others in first-stage document order
    head = {"q": {"d2@10-20": 5.0, "d2@0-10": 1.0}}
    assert ranked(document_ranking(head, RUN, "maxp")["q"]) == ["d2", "d1", "d3"]


class VisibleTermScorer:
    """A perfect model limited by what it reads: the score is how often `term` is among the passage tokens that survive
    truncation at max_length (the real tokenizer, the real tokenize_pairs)."""

    def __init__(self, tokenizer, term: str, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length
        self.term = tokenizer.convert_tokens_to_ids(term)

    def score(self, pairs):
        enc = tokenize_pairs(self.tokenizer, [q for q, _ in pairs], [p for _, p in pairs], self.max_length)
        passage = enc["token_type_ids"] == 1
        return ((enc["input_ids"] == self.term) & passage).sum(1).float().numpy()


def test_a_sentence_past_the_first_window_is_found_with_chunking_and_missed_without(tokenizer):
    docs = {"a-nda": Doc("NDA", PREAMBLE + "\nConfidential Information excludes public information."),
            "b-policy": Doc("Policy", PREAMBLE + "\nWe retain location data for eighteen months."),
            "c-lease": Doc("Lease", PREAMBLE + "\nThe Tenant may sublet the premises with written consent.")}
    queries = {"q": "may the tenant sublet under this agreement"}  # BM25 retrieves every document
    scorer = VisibleTermScorer(tokenizer, "sub", 64)  # WordPiece reads "sublet" as sub ##let
    assert tokenizer.tokenize("sublet")[0] == "sub"

    def rank(corpus):
        index = BM25Index.build(corpus, BM25Config(), progress=False)
        pipe = RankingPipeline(scorer, depth=20)
        return pipe.rank_documents(index.search(queries, 100), queries, corpus, "maxp").documents["q"]

    without = rank(docs)  # each document is one passage, cut at 64 tokens: "sublet" is never read
    assert ranked(without)[0] != "c-lease" and without["c-lease"] == 0.0
    with_chunks = rank(chunk_corpus(docs, Chunking("tokens", 40, 20), tokenizer_spans(tokenizer)))
    assert ranked(with_chunks)[0] == "c-lease" and with_chunks["c-lease"] >= 1


# ---------------------------------------------------------------- the legal analyzer


def test_legal_analyzer_keeps_citations_provisions_defined_terms_numbers_and_dates():
    text = ('Claims under 42 U.S.C. § 1983 and Section 2.3(b); see Art. 5(1)(a) GDPR and Rule 12(b)(6). '
            '"Confidential Information" means data disclosed before January 5, 2020 worth $1,000,000, and shall not '
            "be disclosed.")
    legal = make_analyzer(BM25Config(analyzer="legal"))(text)
    plain = make_analyzer(BM25Config())(text)
    for token in ("§1983", "42usc§1983", "usc", "§2.3(b)", "§2.3", "art5(1)(a)", "art5", "rule12(b)(6)", "rule12",
                  "confidential_information", "2020-01-05", "1000000", "5", "not"):
        assert token in legal, token
        assert token not in plain or token in ("1000000",)
    assert "information" in legal and "disclosed" in legal  # the plain words stay
    assert legal_terms("Article 5 and art. 5") == ["art5", "art5"]  # one provision, however it is written
    stemmed = make_analyzer(BM25Config(analyzer="legal", stemmer="english"))("disclosed § 1983")
    assert "disclos" in stemmed and "§1983" in stemmed


def test_legal_analyzer_ranks_the_citation_above_the_year_and_the_index_records_it(tmp_path, caplog):
    corpus = {"year": Doc("", "The company was founded in 1983 and grew."),
              "statute": Doc("", "The claim arises from 42 U.S.C. § 1983 and nothing else.")}
    query = {"q": "remedies under § 1983"}
    for analyzer, first in (("plain", "year"), ("legal", "statute")):
        run = BM25Index.build(corpus, BM25Config(analyzer=analyzer), progress=False).search(query, 2)
        assert ranked(run["q"])[0] == first, analyzer
    BM25Index.build(corpus, BM25Config(), progress=False).save(tmp_path / "index")
    assert json.loads((tmp_path / "index" / "crosstune_index.json").read_text())["config"]["analyzer"] == "plain"
    rebuilt = load_or_build(corpus, BM25Config(analyzer="legal"), tmp_path / "index", True)
    assert rebuilt.cfg.analyzer == "legal" and "rebuilding it" in caplog.text


# ---------------------------------------------------------------- truncation and the query budget


def words(n: int) -> str:
    return " ".join(["law"] * n)  # one WordPiece token each


@pytest.mark.parametrize("q, p", [(3, 5), (3, 20), (20, 5), (10, 10), (11, 10), (10, 11), (40, 40), (13, 0)])
@pytest.mark.parametrize("budget", [0, 4])
def test_truncation_losses_match_the_tokenizer(tokenizer, q, p, budget):
    enc = tokenize_pairs(tokenizer, [cut_query(tokenizer, words(q), budget)], [words(p)], 16)
    types = enc["token_type_ids"][0][enc["attention_mask"][0] == 1]
    kept_q, kept_p = int((types == 0).sum()) - 2, int((types == 1).sum()) - 1
    assert losses(q, p, 16 - 3, budget) == (q - kept_q, p - kept_p)


def test_truncation_report_counts(tokenizer):
    pairs = [(words(3), words(5)), (words(3), words(20)), (words(20), words(5)), (words(10), words(10))]
    stats = report(tokenizer, pairs, 16)
    assert stats == {"pairs": 4, "max_length": 16, "max_query_tokens": 0, "pairs_cut": 3, "pairs_cut_share": 0.75,
                     "query_cut": 2, "passage_cut": 2, "tokens_lost_share": round((10 + 12 + 7) / 76, 4)}
    from crosstune.data.truncation import warning

    line = warning(stats)
    assert line.startswith("warning: 75.0% of 4 (query, passage) pairs cut at max_length 16") and "data.chunking" in line
    assert warning(report(tokenizer, pairs[:1], 16)) is None


def test_the_query_budget_leaves_room_for_the_passage(tokenizer):
    query, passage = words(200), " ".join(["contract"] * 100)
    plain = tokenize_pairs(tokenizer, [query], [passage], 64)
    budgeted = tokenize_pairs(tokenizer, [query], [passage], 64, max_query_tokens=16)
    assert int(plain["token_type_ids"].sum()) == 30 + 1  # longest-first: the passage keeps half (and its [SEP])
    assert int(budgeted["token_type_ids"].sum()) == 64 - 16 - 3 + 1  # its tokens and its [SEP]
    assert cut_query(tokenizer, "a short query", 16) == "a short query"


# ---------------------------------------------------------------- through the CLI


def documents_folder(root: Path) -> Path:
    """12 long documents, each with one distinctive clause at its end; document judgments per split."""
    topics = ["sublet the premises", "terminate for convenience", "retain location data", "assign the contract",
              "disclose to affiliates", "pay late fees", "renew automatically", "audit the books",
              "indemnify the buyer", "arbitrate disputes", "insure the goods", "hire employees"]
    for i, topic in enumerate(topics):
        write(root / "corpus" / f"doc{i:02d}.txt", PREAMBLE + f"\nThe party may {topic} after notice {i}.\n")
    # "party" is in every document: BM25 retrieves them all, and mining finds negatives in the others
    write(root / "queries.jsonl", "".join(json.dumps({"_id": f"q{i}", "text": f"may the party {t}"}) + "\n"
                                          for i, t in enumerate(topics)))
    for split, ids in (("train", range(0, 8)), ("dev", range(8, 10)), ("test", range(10, 12))):
        write(root / "qrels" / f"{split}.tsv", "".join(f"q{i}\tdoc{i:02d}\t1\n" for i in ids))
    return root


def test_mine_train_evaluate_whole_documents_from_the_cli(tiny_model, tmp_path, capsys):
    from crosstune.train.cli import main

    data = documents_folder(tmp_path / "docs")
    args = ["--config", str(TINY), f"model.name={tiny_model}", f"run.root={tmp_path / 'runs'}", f"data.path={data}",
            "data.chunking=paragraphs", "data.chunk_size=32", "model.max_query_tokens=16", "mining.depth=20",
            "mining.negative_range=[0,20]", "mining.num_negatives=3", "eval.depth=10", "eval.first_stage_depth=50",
            "train.max_steps=2", "train.eval_every=2"]
    assert main(["mine", *args]) == 0
    out = capsys.readouterr().out
    stats = json.loads((tmp_path / "runs" / "tiny" / "mined" / "stats.json").read_text())
    assert stats["judgments"] == "document" and stats["rows"] == 8
    assert stats["chunking"]["documents"] == 12 and stats["chunking"]["documents_cut"] == 12
    assert stats["truncation"]["pairs"] == 8 * 4 and "pairs cut at max_length 64" in out
    assert main(["train", *args]) == 0
    dev = json.loads((tmp_path / "runs" / "tiny" / "best" / "dev_metrics.json").read_text())
    assert dev["queries"] == 2 and dev["level"] == "document"  # documents, ranked by their passages
    # the dev check ranked them as `evaluate` does (fp32 both: the check scores in train.precision)
    assert main(["evaluate", *args, "eval.precision=no", "--split", "dev", "--model",
                 str(tmp_path / "runs" / "tiny" / "best")]) == 0
    from test_settings import assert_dev_equals_evaluate

    report = json.loads((tmp_path / "runs" / "tiny" / "eval_dev" / "report.json").read_text())
    assert report["level"] == "document"
    assert_dev_equals_evaluate(tmp_path / "runs" / "tiny", report)
    assert main(["export", *args]) == 0
    manifest = json.loads((tmp_path / "runs" / "tiny" / "export" / "crosstune.json").read_text())
    assert manifest["max_query_tokens"] == 16 and manifest["chunking"]["method"] == "paragraphs"
    assert main(["evaluate", *args]) == 0
    result = json.loads((tmp_path / "runs" / "tiny" / "eval_test" / "report.json").read_text())
    assert result["level"] == "document" and result["aggregate"] == "maxp" and result["queries"] == 2
    assert result["truncation"]["pairs"] == 2 * 10
    assert (tmp_path / "runs" / "tiny" / "eval_test" / "reranked_documents.trec").exists()
    # every reranked passage the run names maps back into its document
    for line in (tmp_path / "runs" / "tiny" / "eval_test" / "reranked_documents.trec").read_text().splitlines():
        assert line.split()[2].startswith("doc")
    assert np.isfinite(result["metrics"]["nDCG@10"]["reranked"])
    # every aggregation from the same scores; the configured one equals the headline figures
    each = result["by_aggregate"]
    assert list(each) == ["maxp", "firstp", "sump", "mean-top-k k=3"]
    for system in ("BM25", "reranked"):
        assert each["maxp"][system] == pytest.approx(result["metrics"]["nDCG@10"][system], abs=1e-4)
    assert "under each `eval.aggregate`" in (tmp_path / "runs" / "tiny" / "eval_test" / "report.md").read_text()
    # span judgments (the clause's characters): passages first, the documents beside them, each aggregation too
    rows = []
    for i in range(10, 12):
        text = (data / "corpus" / f"doc{i:02d}.txt").read_text()
        start = text.index("The party may")
        rows.append(f"q{i}\tdoc{i:02d}\t{start}\t{start + 30}\t1\n")
    write(data / "qrels" / "test.spans.tsv", "query-id\tcorpus-id\tstart\tend\tscore\n" + "".join(rows))
    assert main(["evaluate", *args, "--output", str(tmp_path / "spans")]) == 0
    spans = json.loads((tmp_path / "spans" / "report.json").read_text())
    assert spans["level"] == "passage" and spans["documents"]["metrics"]["nDCG@10"]["reranked"] == pytest.approx(
        spans["documents"]["by_aggregate"]["maxp"]["reranked"], abs=1e-4)
