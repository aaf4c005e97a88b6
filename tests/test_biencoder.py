"""The bi-encoder signal: cosine scores, and passage embeddings cached on disk by text."""
from __future__ import annotations

from crosstune.data.types import Doc
from crosstune.train.ranking.biencoder import BiEncoderScorer


def test_scores_are_cosines_and_passages_are_encoded_once(tiny_model, tmp_path):
    corpus = {"a": Doc("Lease", "The tenant pays rent monthly."), "b": Doc("", "Data is kept 18 months.")}
    queries = {"q": "when is rent due?"}
    run = {"q": {"a": 2.0, "b": 1.0}}
    first = BiEncoderScorer(tiny_model, tmp_path / "cache")
    scores = first.score_run(run, queries, corpus, depth=2)
    emb = first.model.encode(["when is rent due?", "Lease: The tenant pays rent monthly."], normalize_embeddings=True)
    assert abs(scores["q"]["a"] - float(emb[0] @ emb[1])) < 1e-5
    assert set(scores["q"]) == {"a", "b"}

    # a second scorer (a new process, say) reads the passages back: only the query is encoded
    second = BiEncoderScorer(tiny_model, tmp_path / "cache")
    encoded = []
    original = second.model.encode
    second.model.encode = lambda texts, **kw: encoded.append(list(texts)) or original(texts, **kw)
    assert second.score_run(run, queries, corpus, depth=2) == scores
    assert encoded == [["when is rent due?"]]
    # an edited passage is a new text: it is encoded again, the unchanged one is not
    corpus["b"] = Doc("", "Data is kept 12 months.")
    second.score_run(run, queries, corpus, depth=2)
    assert encoded[1] == ["Data is kept 12 months."]
