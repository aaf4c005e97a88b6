"""BM25 first stage: bm25s by default, rank_bm25 as the reference backend; both read the same tokens."""
from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import analyzers
from .types import Corpus, DataError, Queries, Run, doc_text

log = logging.getLogger(__name__)
TOKEN = analyzers.PLAIN


@dataclass
class BM25Config:
    backend: str = "bm25s"  # bm25s (fast, sparse matrices) | rank_bm25 (reference, slow)
    method: str = "lucene"  # BM25 variant; rank_bm25 implements lucene here
    k1: float = 1.5
    b: float = 0.75
    stopwords: bool = True  # English stop words carry no evidence of relevance
    stemmer: str = ""  # "" (none) or a PyStemmer language such as "english"
    # plain: words of 2+ letters/digits; legal: also sections, citations, provisions, defined terms, numbers and
    # dates as tokens (data/analyzers.py). A saved index records it, so changing it rebuilds the index
    analyzer: str = "plain"


def stopword_set() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


def make_analyzer(cfg: BM25Config):
    """text -> tokens: lower-case words of 2+ characters (legal: and citations, numbers, dates), optional stop words
    and stemming."""
    if cfg.analyzer not in analyzers.ANALYZERS:
        raise DataError(f"bm25.analyzer={cfg.analyzer!r}; choose one of {', '.join(analyzers.ANALYZERS)}")
    stop = stopword_set() if cfg.stopwords else frozenset()
    stem = None
    if cfg.stemmer:
        try:
            import Stemmer
        except ImportError:
            raise DataError(f"bm25.stemmer={cfg.stemmer!r} needs PyStemmer: pip install PyStemmer") from None
        try:
            stem = Stemmer.Stemmer(cfg.stemmer).stemWords
        except KeyError:
            raise DataError(f"bm25.stemmer={cfg.stemmer!r} is not a Snowball language; use e.g. english, or \"\" "
                            "for no stemming") from None
    return analyzers.make(cfg.analyzer, stop, stem)


def corpus_fingerprint(corpus: Corpus) -> str:
    """Ids and texts, in order: an edited passage must invalidate a saved index too."""
    h = hashlib.sha1()
    for doc_id, doc in corpus.items():
        h.update(f"{doc_id}\x1f{doc.title}\x1f{doc.text}\x1e".encode())
    return h.hexdigest()[:16]


class BM25Index:
    """A BM25 index over a corpus; `search` returns a Run (query id -> doc id -> score)."""

    def __init__(self, cfg: BM25Config, doc_ids: list[str], engine, use_title: bool, fingerprint: str = ""):
        self.cfg, self.doc_ids, self.engine, self.use_title = cfg, doc_ids, engine, use_title
        self.fingerprint = fingerprint
        self.analyze = make_analyzer(cfg)
        self._position: dict[str, int] | None = None  # doc id -> row, built on the first scores_of

    @classmethod
    def build(cls, corpus: Corpus, cfg: BM25Config, use_title: bool = True, progress: bool = True) -> "BM25Index":
        if not corpus:
            raise DataError("cannot index an empty corpus")
        from tqdm.auto import tqdm

        analyze = make_analyzer(cfg)
        doc_ids = list(corpus)
        # tokenizing is most of an index build (tens of seconds for a large collection): bm25s's bars come after it
        tokens = [analyze(doc_text(corpus[d], use_title))
                  for d in tqdm(doc_ids, desc="BM25: tokenizing passages", unit="passage", disable=not progress,
                                leave=False)]
        if cfg.backend == "bm25s":
            import bm25s

            engine = bm25s.BM25(method=cfg.method, k1=cfg.k1, b=cfg.b)
            engine.index(tokens, show_progress=progress)
        elif cfg.backend == "rank_bm25":
            engine = LuceneBM25(tokens, cfg)
        else:
            raise DataError(f"bm25.backend={cfg.backend!r}; use bm25s or rank_bm25")
        return cls(cfg, doc_ids, engine, use_title, corpus_fingerprint(corpus))

    def meta(self) -> dict:
        return {"config": asdict(self.cfg), "use_title": self.use_title,
                "num_docs": len(self.doc_ids), "fingerprint": self.fingerprint}

    def save(self, folder: Path) -> None:
        if self.cfg.backend != "bm25s":
            raise DataError("only the bm25s backend saves its index; set bm25.backend: bm25s")
        folder.mkdir(parents=True, exist_ok=True)
        self.engine.save(str(folder), show_progress=False)
        (folder / "doc_ids.json").write_text(json.dumps(self.doc_ids))
        (folder / "crosstune_index.json").write_text(json.dumps(self.meta(), indent=1))

    @classmethod
    def load(cls, folder: Path) -> "BM25Index":
        import bm25s

        meta = json.loads((folder / "crosstune_index.json").read_text())
        engine = bm25s.BM25.load(str(folder), show_progress=False)
        doc_ids = json.loads((folder / "doc_ids.json").read_text())
        return cls(BM25Config(**meta["config"]), doc_ids, engine, meta["use_title"], meta.get("fingerprint", ""))

    def search(self, queries: Queries, k: int, progress: bool = False) -> Run:
        qids = list(queries)
        q_tokens = [self.analyze(queries[q]) for q in qids]
        k = min(k, len(self.doc_ids))
        if self.cfg.backend == "bm25s":
            # the numba backend needs a JIT warm-up that costs more than it saves on one call
            docs, scores = self.engine.retrieve(q_tokens, k=k, show_progress=progress, backend_selection="numpy")
        else:
            docs, scores = self.engine.top_k(q_tokens, k)
        run: Run = {}
        for qi, qid in enumerate(qids):
            # a zero score means no query term matched: not a candidate at all
            run[qid] = {self.doc_ids[d]: float(s) for d, s in zip(docs[qi], scores[qi]) if s > 0}
        return run


    def scores_of(self, query: str, doc_ids: list[str]) -> list[float]:
        """BM25 of one query against the passages named, wherever they rank (the best passage of a judged document
        need not be in the top-k)."""
        tokens = self.analyze(query)
        if not tokens:
            return [0.0] * len(doc_ids)
        if self._position is None:
            self._position = {d: i for i, d in enumerate(self.doc_ids)}
        engine = self.engine.bm25 if self.cfg.backend == "rank_bm25" else self.engine
        scores = engine.get_scores(tokens)
        return [float(scores[self._position[d]]) for d in doc_ids]


def score_texts(query: str, texts: list[str], cfg: BM25Config) -> list[float]:
    """BM25 of one query against texts a caller brings rather than an indexed corpus. The statistics (idf, average
    length) are those texts' own: the scores order these texts and mean nothing across calls."""
    analyze = make_analyzer(cfg)
    q_tokens, tokens = analyze(query), [analyze(t) for t in texts]
    if not q_tokens or not any(tokens):
        return [0.0] * len(texts)
    if cfg.backend == "rank_bm25":
        return [float(s) for s in LuceneBM25(tokens, cfg).bm25.get_scores(q_tokens)]
    import bm25s

    engine = bm25s.BM25(method=cfg.method, k1=cfg.k1, b=cfg.b)
    engine.index(tokens, show_progress=False)
    return [float(s) for s in engine.get_scores(q_tokens)]


def load_or_build(corpus: Corpus, cfg: BM25Config, folder: Path | None, use_title: bool) -> BM25Index:
    """Reuse a saved index when it was built from this corpus with these settings."""
    if folder is not None and (folder / "crosstune_index.json").exists() and cfg.backend == "bm25s":
        index = BM25Index.load(folder)
        want = {"config": asdict(cfg), "use_title": use_title, "num_docs": len(corpus),
                "fingerprint": corpus_fingerprint(corpus)}
        if index.meta() == want:
            return index
        log.warning("%s was built from another corpus or other settings; rebuilding it in memory", folder)
    return BM25Index.build(corpus, cfg, use_title)


class LuceneBM25:
    """rank_bm25's Okapi BM25 with Lucene's idf, log(1 + (N - n + .5) / (n + .5)).

    rank_bm25 floors negative idf with an epsilon that no other engine uses; Lucene's idf is never
    negative, so this matches bm25s(method="lucene") up to the constant (k1 + 1) in the numerator.
    """

    def __init__(self, tokens: list[list[str]], cfg: BM25Config):
        from rank_bm25 import BM25Okapi

        if cfg.method != "lucene":
            raise DataError(f"the rank_bm25 backend implements bm25.method lucene, not {cfg.method!r}")

        class _Lucene(BM25Okapi):
            def _calc_idf(self, nd):
                self.idf = {w: math.log(1 + (self.corpus_size - n + 0.5) / (n + 0.5)) for w, n in nd.items()}

        self.bm25 = _Lucene(tokens, k1=cfg.k1, b=cfg.b)

    def top_k(self, q_tokens: list[list[str]], k: int):
        docs, scores = [], []
        for toks in q_tokens:
            s = self.bm25.get_scores(toks)
            order = np.lexsort((np.arange(len(s)), -s))[:k]  # exact ties by position (bm25s may differ)
            docs.append(order)
            scores.append(s[order])
        return docs, scores
