"""One ranking pipeline: search equals `evaluate`, rerank_many equals rerank, loading checks what it loads."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from crosstune.data.bm25 import BM25Config, score_texts
from crosstune.data.loading import load_corpus, load_split
from crosstune.data.types import DataError
from crosstune.train.config import load_config
from crosstune.train.ranking.pipeline import RankingPipeline
from crosstune.train.ranking.scorers import CrossEncoderScorer
from crosstune.train.recipes.evaluate import evaluate_command
from crosstune.train.recipes.export import export_command
from crosstune.train.recipes.train import train

ROOT = Path(__file__).resolve().parent.parent
TEXTS = ["The tenant may terminate the lease with one month's notice.",
         "We retain location data for 18 months.",
         "The Buyer shall pay all invoices within thirty days.",
         "Either party may terminate this agreement for material breach."]


def assert_same_order(ours: list, theirs: list, score: dict) -> None:
    """Equal orders, except that scores within float noise (other batch-mates, other padding) may swap places."""
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a == b or abs(score[a] - score[b]) < 1e-4, (a, b)


@pytest.fixture(scope="module")
def fused(tiny_model, mined_tiny, tmp_path_factory):
    """A tiny run trained with BM25 and a bi-encoder fused at fixed weights, and its export."""
    root = tmp_path_factory.mktemp("pipeline")

    def cfg(*extra):
        return load_config(ROOT / "configs" / "tiny.yaml",
                           [f"model.name={tiny_model}", f"run.root={root}", f"data.path={ROOT / 'data' / 'demo'}",
                            f"train.dataset={mined_tiny / 'dataset'}", "train.max_steps=2", *extra])

    trained = cfg(f"eval.biencoder={tiny_model}", "eval.fusion_weight=0.2", "eval.biencoder_weight=0.3")
    train(trained)
    export = export_command(trained)
    return cfg, trained, export


def test_search_ranks_exactly_as_evaluate(fused, tmp_path):
    cfg, _, export = fused
    plain = cfg("run.name=plain")  # no eval.* weights: both read the export's manifest
    evaluate_command(plain, model=str(export), output=str(tmp_path / "eval"))
    trec: dict[str, list[str]] = {}  # the TREC file's order (its scores are rank-based, the tie rule applied)
    for line in (tmp_path / "eval" / "reranked.trec").read_text().splitlines():
        qid, _, did, *_ = line.split()
        trec.setdefault(qid, []).append(did)
    pipe = RankingPipeline.load(str(export), plain, search=True)
    assert pipe.fusion.fused and pipe.fusion.biencoder_weight == 0.3 and "crosstune.json" in pipe.fusion.source
    queries, _ = load_split(plain.data, plain.data.test_split, load_corpus(plain.data))
    qids = sorted(queries)[:5]
    for qid, hits in zip(qids, pipe.search_many([queries[q] for q in qids], k=plain.eval.depth)):
        assert_same_order([h.doc_id for h in hits][:10], trec[qid][:10], {h.doc_id: h.score for h in hits})
        assert all(h.index is None and h.logit is not None for h in hits)
    assert pipe.search(queries[qids[0]], k=3) == pipe.search_many([queries[qids[0]]], k=3)[0]


def test_rerank_many_equals_rerank_and_scores_every_text(fused):
    cfg, _, export = fused
    pipe = RankingPipeline.load(str(export), cfg("run.name=plain"))
    requests = [("who may terminate the lease?", TEXTS), ("how long is location data kept?", TEXTS[:2]),
                ("when are invoices paid?", TEXTS[::-1])]
    together = pipe.rerank_many(requests)
    for (query, texts), hits in zip(requests, together):
        alone = pipe.rerank(query, texts)
        assert_same_order([h.index for h in hits], [h.index for h in alone], {h.index: h.score for h in hits})
        np.testing.assert_allclose([h.score for h in hits], [h.score for h in alone], atol=1e-4)
        assert sorted(h.index for h in hits) == list(range(len(texts)))  # every text, once
        assert all(texts[h.index] == h.text for h in hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert all(0 <= h.score <= 1 for h in hits)  # fused: min-max normalised signals mixed
    assert len(pipe.rerank(*requests[0], top_n=2)) == 2


def test_unfused_rerank_returns_the_cross_encoders_logits(fused, tiny_model):
    cfg, _, export = fused
    alone = cfg("run.name=plain", "eval.fusion_weight=0", "eval.biencoder_weight=0", "eval.precision=no")
    pipe = RankingPipeline.load(str(export), alone)
    assert not pipe.fusion.fused and pipe.biencoder is None
    hits = pipe.rerank("who may terminate the lease?", TEXTS)
    logits = CrossEncoderScorer.from_pretrained(str(export), device="cpu", precision="no").score(
        [("who may terminate the lease?", t) for t in TEXTS])
    np.testing.assert_allclose([h.score for h in sorted(hits, key=lambda h: h.index)], logits, atol=1e-5)
    assert all(h.score == h.logit for h in hits)
    assert pipe.info()["scores"] == "logits" and pipe.info()["format"] == "hf"


def test_a_fused_export_needs_its_bi_encoder(fused, tmp_path, monkeypatch):
    cfg, _, export = fused
    for name in (str(tmp_path / "gone"), "someone/missing-bi-encoder"):
        copy = tmp_path / f"export_{len(name)}"
        shutil.copytree(export, copy)
        manifest = json.loads((copy / "crosstune.json").read_text())
        manifest["fusion"]["biencoder"] = name
        (copy / "crosstune.json").write_text(json.dumps(manifest))
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        with pytest.raises(DataError, match="fuses with the bi-encoder"):
            RankingPipeline.load(str(copy), cfg("run.name=plain"))
        # weight 0 asked for explicitly: the bi-encoder is not needed
        RankingPipeline.load(str(copy), cfg("run.name=plain", "eval.biencoder_weight=0"))


def test_search_without_a_corpus_says_how_to_get_one(fused):
    cfg, _, export = fused
    with pytest.raises(DataError, match="search needs a corpus"):
        RankingPipeline.load(str(export), cfg("run.name=plain")).search("lease")


def test_bm25_over_texts_a_caller_brings():
    scores = score_texts("terminate the lease", TEXTS, BM25Config())
    assert int(np.argmax(scores)) == 0 and scores[1] == 0.0 and scores[3] > 0
    assert score_texts("zzz", TEXTS, BM25Config()) == [0.0] * 4
    assert score_texts("lease", ["", "the lease"], BM25Config(backend="rank_bm25"))[1] > 0


def test_pair_lengths_count_before_truncation(fused):
    cfg, _, export = fused
    pipe = RankingPipeline.load(str(export), cfg("run.name=plain"))
    short, long = pipe.pair_lengths("lease", ["a short text", "word " * 200])
    assert short < pipe.max_length < long


def test_tokenizing_ahead_in_a_thread_gives_the_same_scores(fused):
    export = str(fused[2])
    pairs = [(f"query {i}", TEXTS[i % 4] * (1 + i % 3)) for i in range(37)]
    inline = CrossEncoderScorer.from_pretrained(export, device="cpu", precision="no", batch_size=4)
    ahead = CrossEncoderScorer.from_pretrained(export, device="cpu", precision="no", batch_size=4, prefetch=2)
    assert inline.prefetch is None and ahead.prefetch == 2
    np.testing.assert_array_equal(inline.score(pairs), ahead.score(pairs))


def test_an_export_loaded_without_a_config_ranks_as_its_manifest_says(fused):
    cfg, trained, export = fused
    manifest = json.loads((export / "crosstune.json").read_text())
    pipe = RankingPipeline.load(str(export))  # no config: depth and max length from the manifest
    assert pipe.depth == manifest["fusion"]["depth"] == trained.eval.depth
    assert pipe.max_length == manifest["max_length"] == trained.model.max_length
    assert pipe.fusion.weight == 0.2 and pipe.fusion.biencoder_weight == 0.3
    hits = pipe.rerank("who may terminate the lease?", TEXTS, top_n=2)
    assert len(hits) == 2 and hits[0].score >= hits[1].score


def test_a_memory_only_embedding_cache_starts_over_when_full(tiny_model, monkeypatch):
    from crosstune.train.ranking.biencoder import BiEncoderScorer, EmbeddingCache

    monkeypatch.setattr(EmbeddingCache, "MEMORY_LIMIT", 3)
    bi = BiEncoderScorer(tiny_model)  # no cache folder: a server's case
    first = bi.embed_passages(TEXTS[:2])
    both = bi.embed_passages(TEXTS[2:])  # 2 + 2 > 3: the cache starts over, and still returns every vector
    assert first.shape == both.shape == (2, first.shape[1]) and len(bi.cache.vectors) == 2
