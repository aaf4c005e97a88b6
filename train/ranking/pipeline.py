"""The ranking path, built in one place: BM25 -> earlier stages (a cascade) -> the cross-encoder -> fusion.

The dev check in training, `crosstune evaluate`, `crosstune rerank` and `crosstune serve` all rank through a
`RankingPipeline`, so no two of them can order the same candidates differently. Loaded from an export, it reads
the export's manifest (crosstune.json: passage format, max length, fusion weights and the depth they were tuned
at) and never imports the training loop:

    from crosstune.train.ranking.pipeline import RankingPipeline
    pipe = RankingPipeline.load("checkpoints/legal/export")
    hits = pipe.rerank("who may terminate the lease?", passages, top_n=5)   # [Hit(index, score, ...)], best first
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from crosstune.data.bm25 import BM25Config, BM25Index, load_or_build, score_texts
from crosstune.data.locations import Location, locate
from crosstune.data.types import Corpus, DataError, Doc, Queries, Run, ranked
from crosstune.train.artifact.manifest import read_manifest
from crosstune.train.config import Config, mined_dir
from crosstune.train.ranking.aggregation import budget_candidates, document_ranking
from crosstune.train.ranking.biencoder import BiEncoderScorer
from crosstune.train.ranking.candidates import score_candidates
from crosstune.train.ranking.cascade import (
    Stage,
    biencoder_name,
    check_depths,
    load_stages,
    stage_order,
    stage_scores,
)
from crosstune.train.ranking.fusion import Fusion
from crosstune.train.ranking.passages import load_passages
from crosstune.train.ranking.scorers import Scorer, load_scorer
from crosstune.train.ranking.settings import Settings, check_biencoder, resolve


@dataclass(frozen=True)
class Hit:
    doc_id: str  # the passage id (search), or the text's position as a string (rerank)
    index: Optional[int]  # position in the texts given (rerank); None for search
    score: float  # the ranking score: fused when the pipeline fuses, else the cross-encoder's logit
    logit: Optional[float]  # the cross-encoder's logit; None for a candidate past the rerank depth
    title: str
    text: str
    # where a search hit lies in its document (file, character offsets, pages); None for texts a caller brought
    location: Optional[Location] = None


@dataclass
class Ranking:
    """One ranking of a Run's queries: the final order and the signals it was fused from."""

    final: Run
    cross_encoder: Run  # logits of each query's top-`depth`
    biencoder: Optional[Run] = None
    first_stage: Optional[Run] = None  # the candidates ranked (the tuning of fusion weights reads them)
    stages: tuple[Run, ...] = ()  # the order each earlier stage of a cascade left, first to last


@dataclass
class DocumentRanking:
    """Documents ranked by their passages: the passages reranked (a passage budget's worth) and the documents."""

    ranking: Ranking  # over the candidate passages
    documents: Run  # by their passages' final scores, then the first stage's other documents in its document order


class RankingPipeline:
    """A scorer plus everything that decides how it ranks: passage format, rerank depth, fusion, and (for search) a
    corpus with its BM25 index. Not safe to call from two threads at once: a server calls it from one worker."""

    def __init__(self, scorer: Scorer, *, depth: int = 100, use_title: bool = True, fusion: Fusion = Fusion(),
                 biencoder=None, corpus: Optional[Corpus] = None, index: Optional[BM25Index] = None,
                 bm25: Optional[BM25Config] = None, model: str = "", manifest: Optional[dict] = None,
                 settings: Optional[Settings] = None, stages: tuple[Stage, ...] = ()):
        for f in (fusion, *(s.fusion for s in stages)):
            if f.biencoder_weight and biencoder is None:
                raise DataError(f"the fusion gives the bi-encoder weight {f.biencoder_weight} but none is loaded")
        check_depths(stages, depth, model or "the pipeline")
        self.stages = tuple(stages)  # earlier stages of a cascade, cheapest first; () ranks with the model alone
        self.scorer, self.depth, self.use_title, self.fusion = scorer, depth, use_title, fusion
        self.biencoder, self.corpus, self.index = biencoder, corpus, index
        self.bm25 = bm25 or (index.cfg if index is not None else BM25Config())
        self.model, self.manifest = model, manifest or {}
        self.settings = settings  # where each setting came from, when loaded from a model folder

    @classmethod
    def load(cls, model: str, cfg=None, *, search: bool = False, key: str = "--model",
             progress: bool = False) -> "RankingPipeline":
        """From an export (or best/, a checkpoint, a cross-encoder folder). How it ranks (passage format, max length,
        depth, fusion, BM25) is settled by ranking/settings.py: overrides, then the model's manifest, then `cfg`.
        `cfg` also supplies eval.batch_size / eval.precision and, with search=True, the corpus (data.*) and its saved
        BM25 index (under the run's mined/ folder, which holds the bi-encoder's embedding cache too)."""
        run_folder = mined_dir(cfg) if cfg is not None else None
        manifest = read_manifest(model) if Path(model).is_dir() else {}
        settings = resolve(manifest, cfg, model)
        cfg = cfg or Config()
        # the model before the corpus: a bad path or a file changed since export stops here, before the slow steps
        # (load_scorer checks the folder and the manifest's hashes, once); torch or onnxruntime as the manifest says
        scorer = load_scorer(model, max_length=settings.max_length, key=key, progress=progress,
                             batch_size=cfg.eval.batch_size, precision=cfg.eval.precision,
                             max_query_tokens=settings.max_query_tokens)
        biencoder = None
        name = biencoder_name(settings.fusion, settings.stages)
        if name:
            source = check_biencoder(name, model)
            biencoder = BiEncoderScorer(name, run_folder / "biencoder" if run_folder else None,
                                        progress=progress, folder=source)
        stages = load_stages(list(settings.stages), model, lambda folder: load_scorer(
            folder, key=f"{model} stage", batch_size=cfg.eval.batch_size, precision=cfg.eval.precision), biencoder)
        corpus = index = None
        if search:
            corpus = load_passages(cfg)
            # indexed in the format the reranker reads, so BM25 and the model agree on every passage
            index = load_or_build(corpus, settings.bm25, run_folder / "index" if run_folder else None,
                                  settings.use_title)
        return cls(scorer, depth=settings.depth, use_title=settings.use_title, fusion=settings.fusion,
                   biencoder=biencoder, corpus=corpus, index=index, bm25=settings.bm25, model=model,
                   manifest=manifest, settings=settings, stages=stages)

    def with_fusion(self, fusion: Fusion, biencoder=None) -> "RankingPipeline":
        """The same scorer and candidates under other weights (the dev check tunes them, then ranks with them)."""
        new = RankingPipeline.__new__(RankingPipeline)
        new.__dict__.update(self.__dict__, fusion=fusion, biencoder=biencoder or self.biencoder)
        return new

    # -- the one ranking path ---------------------------------------------------------------------------------------
    def cascade(self, first_stage: Run, queries: Queries, corpus: Corpus,
                first_depth: Optional[int] = None) -> tuple[Run, ...]:
        """The order each earlier stage leaves (none without a cascade); `first_depth` replaces the first stage's."""
        before, orders = first_stage, []
        for i, stage in enumerate(self.stages):
            depth = (first_depth or stage.depth) if i == 0 else stage.depth
            scores = stage_scores(stage, before, queries, corpus, self.use_title, depth)
            bi = self.cosines(stage.fusion, before, queries, corpus, depth)
            before = stage_order(first_stage, before, scores, stage.fusion, bi)
            orders.append(before)
        return tuple(orders)

    def cosines(self, fusion: Fusion, before: Run, queries: Queries, corpus: Corpus, depth: int) -> Optional[Run]:
        """The bi-encoder's cosines of `before`'s top-`depth` when `fusion` weighs them."""
        if not fusion.biencoder_weight:
            return None
        return self.biencoder.score_run(before, queries, corpus, depth, self.use_title)

    def signals(self, before: Run, queries: Queries, corpus: Corpus,
                depth: Optional[int] = None) -> tuple[Run, Optional[Run]]:
        """Cross-encoder logits of each query's top-`depth` of `before` (one scorer call, batched across queries),
        and the bi-encoder's cosines when the fusion uses them."""
        depth = depth or self.depth
        ce = score_candidates(before, queries, corpus, self.scorer, depth, self.use_title)
        return ce, self.cosines(self.fusion, before, queries, corpus, depth)

    def fuse(self, first_stage: Run, ce: Run, bi: Optional[Run] = None, before: Optional[Run] = None) -> Run:
        """The final order: the fused top-`depth`, then the remaining candidates in the order before (the last
        earlier stage's, else the first stage's)."""
        return stage_order(first_stage, before or first_stage, ce, self.fusion, bi)

    def rank(self, first_stage: Run, queries: Queries, corpus: Corpus, depth: Optional[int] = None,
             first_depth: Optional[int] = None) -> Ranking:
        orders = self.cascade(first_stage, queries, corpus, first_depth)
        before = orders[-1] if orders else first_stage
        ce, bi = self.signals(before, queries, corpus, depth)
        return Ranking(self.fuse(first_stage, ce, bi, before), ce, bi, first_stage, orders)

    def rank_documents(self, first_stage: Run, queries: Queries, corpus: Corpus, how: str = "maxp", k: int = 3,
                       budget: Optional[int] = None, separator: str = "#") -> DocumentRanking:
        """Documents from a (deep) first-stage passage run: the passages of its top documents are reranked, up to
        `budget` passages (default: the depth), and documents ranked by `how` (maxp, firstp, sump, mean-top-k) over
        their passages' final scores; the first stage's other documents follow in its document order."""
        budget = budget or self.deepest
        candidates = budget_candidates(first_stage, budget, how, k, separator)
        # a cascade's first stage reads the budget, its later stages keep their depths
        ranking = (self.rank(candidates, queries, corpus, first_depth=budget) if self.stages
                   else self.rank(candidates, queries, corpus, budget))
        return DocumentRanking(ranking, document_ranking(ranking.final, first_stage, how, k, separator))

    # -- texts a caller brings ---------------------------------------------------------------------------------------
    def rerank(self, query: str, texts: list[str], top_n: Optional[int] = None) -> list[Hit]:
        return self.rerank_many([(query, texts)], top_n)[0]

    def rerank_many(self, requests: list[tuple[str, list[str]]], top_n: Optional[int] = None) -> list[list[Hit]]:
        """Rerank every text of each (query, texts) request, all pairs in one scorer call. The BM25 term of the fusion
        is scored over each request's own texts (their own statistics: the caller has no index to give)."""
        queries: Queries = {}
        corpus: Corpus = {}
        first_stage: Run = {}
        for r, (query, texts) in enumerate(requests):
            qid = f"r{r}"
            queries[qid] = query
            # zero-padded ids: the tie rule (score, then id) then keeps the caller's order among equal scores
            ids = [f"{qid}:{i:07d}" for i in range(len(texts))]
            corpus.update((d, Doc("", t)) for d, t in zip(ids, texts))
            bm25 = score_texts(query, texts, self.bm25) if self.weighs_bm25 else [0.0] * len(texts)
            first_stage[qid] = dict(zip(ids, bm25))
        # every text a caller brings is reranked: the depth is the longest request (tuned weights are applied as
        # they are, whatever the number of texts; the caller chose the candidates). A cascade's first stage reads
        # them all and the later stages keep their depths, as in search
        depth = max((len(t) for _, t in requests), default=1) or 1
        if self.stages:
            ranking = self.rank(first_stage, queries, corpus, first_depth=depth)
        else:
            ranking = self.rank(first_stage, queries, corpus, depth)
        return [self.hits(ranking, f"r{r}", corpus, top_n, rerank=True) for r in range(len(requests))]

    def rerank_counted(self, requests: list[tuple[str, list[str]]],
                       top_n: Optional[int] = None) -> tuple[list[list[Hit]], list[list[int]]]:
        """rerank_many, and the tokens of each (query, text) pair before truncation (pair_lengths' numbers) as the
        scorer counted them in the tokenizer call it scored with: a server's usage and its truncate=false check
        tokenize no pair a second time. A scorer that cannot count (no `pair_tokens`) leaves them to pair_lengths."""
        counting = hasattr(self.scorer, "pair_tokens")
        counts: dict[tuple[str, str], int] = {}
        if counting:
            self.scorer.pair_tokens = counts  # filled while the scorer tokenizes, then switched off again
        try:
            hits = self.rerank_many(requests, top_n)
        finally:
            if counting:
                self.scorer.pair_tokens = None
        lengths = [[counts.get((query, text)) for text in texts] for query, texts in requests]
        return hits, [n if None not in n else self.pair_lengths(query, texts)
                      for n, (query, texts) in zip(lengths, requests)]

    # -- search over the configured corpus ---------------------------------------------------------------------------
    def search(self, query: str, k: int = 10) -> list[Hit]:
        return self.search_many([query], k)[0]

    def search_many(self, queries: list[str], k: int = 10) -> list[list[Hit]]:
        """BM25 top-`depth` from the corpus, reranked and fused exactly as `crosstune evaluate` does; the top k."""
        if self.index is None or self.corpus is None:
            raise DataError("search needs a corpus: load the pipeline with a config (data.path) and search=True")
        qs = {f"q{i}": q for i, q in enumerate(queries)}
        first_stage = self.index.search(qs, max(self.deepest, k))
        ranking = self.rank(first_stage, qs, self.corpus)
        return [self.hits(ranking, q, self.corpus, k) for q in qs]

    def hits(self, ranking: Ranking, qid: str, corpus: Corpus, top_n: Optional[int], rerank: bool = False) -> list[Hit]:
        """A query's top `top_n` (all with None), best first; a search hit carries its place in its document."""
        order = ranked(ranking.final.get(qid, {}))
        out = []
        for did in order[:top_n] if top_n else order:
            doc, logit = corpus[did], ranking.cross_encoder.get(qid, {}).get(did)
            score = ranking.final[qid][did]
            if rerank:
                index = int(did.rsplit(":", 1)[1])
                out.append(Hit(str(index), index, score, logit, doc.title, doc.text))
            else:
                out.append(Hit(did, None, score, logit, doc.title, doc.text, locate(did, corpus)))
        return out

    # -- what a client or a report needs to know ----------------------------------------------------------------------
    @property
    def weighs_bm25(self) -> bool:
        return bool(self.fusion.weight or any(s.fusion.weight for s in self.stages))

    @property
    def deepest(self) -> int:
        """The most first-stage candidates any stage reads."""
        return max([self.depth, *(s.depth for s in self.stages)])

    @property
    def max_length(self) -> int:
        return self.scorer.max_length

    @property
    def format(self) -> str:
        return self.manifest.get("format", "hf")

    def pair_lengths(self, query: str, texts: list[str]) -> list[int]:
        """Tokens in each (query, text) pair before truncation, special tokens included."""
        enc = self.scorer.tokenizer([query] * len(texts), list(texts), truncation=False, verbose=False)
        return [len(ids) for ids in enc["input_ids"]]

    def info(self) -> dict:
        return {"model": self.model, "format": self.format, "max_length": self.max_length, "depth": self.depth,
                "max_query_tokens": getattr(self.scorer, "max_query_tokens", 0),
                "use_title": self.use_title, "precision": getattr(self.scorer, "precision", None),
                "scores": "fused (in [0, 1])" if self.fusion.fused else "logits",
                "fusion": dataclasses.asdict(self.fusion), "selection": self.manifest.get("selection"),
                "stages": [{"name": s.name, "depth": s.depth, "fusion": dataclasses.asdict(s.fusion)} for s in self.stages],
                "corpus": len(self.corpus) if self.corpus is not None else None}
