"""data/bm25.py: bm25s against the rank_bm25 reference, index persistence, analysis."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from crosstune.data.bm25 import BM25Config, BM25Index, load_or_build, make_analyzer
from crosstune.data.loading import DataConfig, load_corpus, load_queries
from crosstune.data.types import DataError, Doc, ranked

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"

# ~30 short hand-written passages of different lengths, so BM25's length normalisation matters
TEXTS = [
    "The tenant shall pay rent on the first day of each month to the landlord.",
    "Rent increases require sixty days written notice from the landlord to the tenant.",
    "The security deposit is returned within thirty days after the lease ends, minus unpaid rent.",
    "Either party may terminate this agreement with ninety days written notice.",
    "The employee must not disclose confidential information during or after employment.",
    "Confidential information excludes information that is already public or independently developed.",
    "The supplier warrants that the goods are free from defects for twelve months.",
    "Defective goods may be returned for a refund or replacement at the buyer's choice.",
    "Personal data is stored on servers located in the European Union.",
    "Users may request deletion of their personal data at any time by email.",
    "Cookies are used to remember preferences and to measure traffic on the website.",
    "We share personal data with payment processors only to complete purchases.",
    "The licensee may not sublicense the software without prior written consent.",
    "Source code is held in escrow and released if the licensor becomes insolvent.",
    "The licence fee is payable annually in advance and is non-refundable.",
    "Governing law is the law of England and Wales; courts of London have jurisdiction.",
    "Disputes shall first be referred to mediation before any court proceedings.",
    "Liability for indirect or consequential loss is excluded to the extent permitted by law.",
    "Total liability is capped at the fees paid in the twelve months before the claim.",
    "Force majeure excuses delay caused by events beyond a party's reasonable control.",
    "The contractor carries professional indemnity insurance of at least one million pounds.",
    "Invoices are payable within thirty days; late payment accrues interest at four percent.",
    "Employees accrue twenty five days of paid holiday per year plus public holidays.",
    "The probation period is six months, during which one week notice applies.",
    "Overtime is paid at one and a half times the hourly rate.",
    "A non-compete clause restricts working for competitors for six months after leaving.",
    "Children under thirteen may not create an account without parental consent.",
    "Location data is collected only while the app is open and location sharing is on.",
    "Backups of customer data are encrypted and kept for ninety days.",
    "Audit rights allow the customer to inspect the supplier's records once a year.",
    "Rent, rent and more rent: the landlord's favourite word in a rent review clause.",
]
CORPUS = {f"d{i:02d}": Doc(title="", text=t) for i, t in enumerate(TEXTS)}
QUERIES = {
    "q-rent": "when is the rent paid to the landlord",
    "q-deposit": "security deposit returned after lease",
    "q-notice": "written notice to terminate",
    "q-confidential": "confidential information public",
    "q-data": "delete my personal data",
    "q-liability": "liability cap twelve months fees",
    "q-escrow": "source code escrow insolvent licensor",
    "q-holiday": "paid holiday days per year",
    "q-law": "which court and law govern disputes",
    "q-payment": "payable within thirty days interest",
    "q-broad": "days months notice personal data paid written law",
}


@pytest.fixture(scope="module")
def both():
    fast = BM25Index.build(CORPUS, BM25Config(), progress=False)
    ref = BM25Index.build(CORPUS, BM25Config(backend="rank_bm25"))
    return fast, ref


def assert_backends_agree(fast: BM25Index, ref: BM25Index, queries: dict[str, str], n_docs: int) -> None:
    # full depth, so that which of several tied documents survives a top-k cut cannot differ
    run_fast, run_ref = fast.search(queries, n_docs), ref.search(queries, n_docs)
    assert set(run_fast) == set(run_ref) == set(queries)
    for qid in queries:
        assert set(run_fast[qid]) == set(run_ref[qid]), qid
        assert run_fast[qid], f"{qid} retrieved nothing"
        assert ranked(run_fast[qid])[:10] == ranked(run_ref[qid])[:10], qid
        ratios = np.array([run_ref[qid][d] / run_fast[qid][d] for d in run_fast[qid]])
        # rank_bm25 keeps (k1 + 1) in the numerator, bm25s' lucene variant drops it
        np.testing.assert_allclose(ratios, 1.5 + 1.0, rtol=1e-5)


def test_bm25s_matches_rank_bm25_on_handwritten_corpus(both):
    fast, ref = both
    assert_backends_agree(fast, ref, QUERIES, len(CORPUS))
    # this corpus has no score tie at the cut, so the k=10 lists themselves agree
    run_fast, run_ref = fast.search(QUERIES, 10), ref.search(QUERIES, 10)
    assert {q: ranked(d) for q, d in run_fast.items()} == {q: ranked(d) for q, d in run_ref.items()}
    assert len(run_fast["q-broad"]) == 10
    # concrete expectations, so a silently broken analyzer cannot pass
    top = fast.search(QUERIES, 10)
    assert ranked(top["q-escrow"])[0] == "d13"
    assert ranked(top["q-deposit"])[0] == "d02"
    assert ranked(top["q-holiday"])[0] == "d22"
    assert ranked(top["q-rent"])[0] == "d30"  # "rent" four times in a short passage


def test_top_k_cut_keeps_best_first(both):
    fast, ref = both
    for index in (fast, ref):
        run = index.search(QUERIES, 10)
        full = index.search(QUERIES, len(CORPUS))
        for qid, docs in run.items():
            assert 0 < len(docs) <= 10
            scores = list(docs.values())
            assert scores == sorted(scores, reverse=True)  # returned best first (ties in any order)
            assert min(docs.values()) >= sorted(full[qid].values(), reverse=True)[min(10, len(full[qid])) - 1]


def test_bm25s_matches_rank_bm25_on_demo_set():
    corpus = load_corpus(DataConfig(path=str(DEMO)))
    queries = load_queries(DataConfig(path=str(DEMO)), "train")
    fast = BM25Index.build(corpus, BM25Config(), progress=False)
    ref = BM25Index.build(corpus, BM25Config(backend="rank_bm25"))
    assert_backends_agree(fast, ref, queries, len(corpus))


def test_backends_agree_with_other_k1_b():
    cfg = dict(k1=0.9, b=0.4)
    fast = BM25Index.build(CORPUS, BM25Config(**cfg), progress=False)
    ref = BM25Index.build(CORPUS, BM25Config(backend="rank_bm25", **cfg))
    run_fast, run_ref = fast.search(QUERIES, len(CORPUS)), ref.search(QUERIES, len(CORPUS))
    for qid in QUERIES:
        assert ranked(run_fast[qid])[:10] == ranked(run_ref[qid])[:10]
        for d, s in run_fast[qid].items():
            assert run_ref[qid][d] == pytest.approx(s * 1.9, rel=1e-5)


def test_save_load_round_trip(tmp_path, both):
    fast, _ = both
    fast.save(tmp_path / "index")
    loaded = BM25Index.load(tmp_path / "index")
    assert loaded.doc_ids == fast.doc_ids
    assert loaded.meta() == fast.meta()
    assert loaded.search(QUERIES, 10) == fast.search(QUERIES, 10)
    assert loaded.search(QUERIES, len(CORPUS)) == fast.search(QUERIES, len(CORPUS))


def test_rank_bm25_backend_does_not_save(tmp_path, both):
    _, ref = both
    with pytest.raises(DataError, match="only the bm25s backend saves its index"):
        ref.save(tmp_path / "index")


def test_load_or_build_reuses_a_matching_index(tmp_path, both, monkeypatch, caplog):
    fast, _ = both
    fast.save(tmp_path / "index")

    def no_build(*a, **k):
        raise AssertionError("rebuilt an index that matched")

    monkeypatch.setattr(BM25Index, "build", classmethod(no_build))
    with caplog.at_level(logging.WARNING, logger="data.bm25"):
        index = load_or_build(CORPUS, BM25Config(), tmp_path / "index", use_title=True)
    assert index.search(QUERIES, 10) == fast.search(QUERIES, 10)
    assert "rebuilding" not in caplog.text


def test_load_or_build_rebuilds_when_corpus_or_settings_changed(tmp_path, both, caplog):
    fast, _ = both
    fast.save(tmp_path / "index")
    changed = dict(CORPUS)
    changed["d99"] = Doc("", "An escrow agent holds the source code deposit for the licensee.")
    with caplog.at_level(logging.WARNING, logger="data.bm25"):
        index = load_or_build(changed, BM25Config(), tmp_path / "index", use_title=True)
    assert "rebuilding it in memory" in caplog.text
    assert len(index.doc_ids) == len(changed)
    assert "d99" in index.search({"q": "escrow agent"}, 5)["q"]

    # same corpus, other k1: also rebuilt (and scores change accordingly)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="data.bm25"):
        other = load_or_build(CORPUS, BM25Config(k1=0.5), tmp_path / "index", use_title=True)
    assert "rebuilding it in memory" in caplog.text
    assert other.cfg.k1 == 0.5
    assert other.search(QUERIES, 10) != fast.search(QUERIES, 10)

    # same ids, but the index was saved with use_title=True and is now asked for use_title=False
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="data.bm25"):
        untitled = load_or_build(CORPUS, BM25Config(), tmp_path / "index", use_title=False)
    assert "rebuilding it in memory" in caplog.text and untitled.use_title is False


def test_load_or_build_without_folder_builds(tmp_path):
    index = load_or_build(CORPUS, BM25Config(), None, use_title=True)
    assert index.doc_ids == list(CORPUS)
    index = load_or_build(CORPUS, BM25Config(), tmp_path / "missing", use_title=True)
    assert index.doc_ids == list(CORPUS)


def test_stop_words_removed():
    analyze = make_analyzer(BM25Config())
    assert analyze("The Tenant and THE landlord: a deal is a deal, 2 parties!") == \
        ["tenant", "landlord", "deal", "deal", "parties"]
    keep = make_analyzer(BM25Config(stopwords=False))
    assert keep("The tenant and a landlord") == ["the", "tenant", "and", "landlord"]


def test_stemmer_option():
    pytest.importorskip("Stemmer")
    analyze = make_analyzer(BM25Config(stemmer="english"))
    assert analyze("The tenants were paying rents") == ["tenant", "were", "pay", "rent"]


def test_stop_word_only_match_is_not_retrieved():
    corpus = {"a": Doc("", "the and of to"), "b": Doc("", "landlord"), "c": Doc("", "tenant")}
    for backend in ("bm25s", "rank_bm25"):
        index = BM25Index.build(corpus, BM25Config(backend=backend), progress=False)
        run = index.search({"q": "the landlord", "only-stop": "the of"}, 3)
        assert list(run["q"]) == ["b"]
        assert run["q"]["b"] == index.search({"q": "landlord"}, 3)["q"]["b"]  # "the" adds nothing
        assert run["only-stop"] == {}


@pytest.mark.parametrize("backend", ["bm25s", "rank_bm25"])
def test_query_without_matching_word_returns_empty_ranking(both, backend):
    index = both[0] if backend == "bm25s" else both[1]
    run = index.search({"nothing": "zebra xylophone quux", "stop": "the and of", "empty": "", "hit": "escrow"}, 10)
    assert run["nothing"] == {} and run["stop"] == {} and run["empty"] == {}
    assert list(run["hit"]) == ["d13"]


def test_title_is_indexed_when_use_title():
    corpus = {"a": Doc("Escrow Agreement", "the agent holds it"), "b": Doc("", "nothing relevant here")}
    with_title = BM25Index.build(corpus, BM25Config(), use_title=True, progress=False)
    without = BM25Index.build(corpus, BM25Config(), use_title=False, progress=False)
    assert list(with_title.search({"q": "escrow"}, 2)["q"]) == ["a"]
    assert without.search({"q": "escrow"}, 2)["q"] == {}


def test_bad_backend_and_empty_corpus():
    with pytest.raises(DataError, match="bm25.backend='lucene'"):
        BM25Index.build(CORPUS, BM25Config(backend="lucene"))
    with pytest.raises(DataError, match="cannot index an empty corpus"):
        BM25Index.build({}, BM25Config())
    with pytest.raises(DataError, match="implements bm25.method lucene"):
        BM25Index.build(CORPUS, BM25Config(backend="rank_bm25", method="robertson"))


def test_load_or_build_rebuilds_when_a_text_changed(tmp_path, both):
    fast, _ = both
    fast.save(tmp_path / "index")
    edited = dict(CORPUS)
    edited["d00"] = Doc("", "A zebra crossing clause.")  # same ids, new text
    index = load_or_build(edited, BM25Config(), tmp_path / "index", use_title=True)
    assert list(index.search({"q": "zebra"}, 5)["q"]) == ["d00"]
