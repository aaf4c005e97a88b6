"""The dev check: the choosing split ranked by the model in training through evaluate's own code, best/ kept."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from crosstune.data.bm25 import load_or_build
from crosstune.data.judgments import load_judgments
from crosstune.data.types import Run, ranked
from crosstune.train.artifact.manifest import serving_config
from crosstune.train.artifact.outputs import atomic_dir
from crosstune.train.config import Config, mined_dir
from crosstune.train.evaluation.levels import first_stage_depth, level_report, rank_levels, rerank_candidates
from crosstune.train.evaluation.metrics import headline
from crosstune.train.evaluation.tuning import tune_weights
from crosstune.train.ranking.aggregation import document_ranking
from crosstune.train.ranking.biencoder import BiEncoderScorer
from crosstune.train.ranking.candidates import score_spread
from crosstune.train.ranking.fusion import Fusion
from crosstune.train.ranking.passages import load_passages
from crosstune.train.ranking.pipeline import RankingPipeline
from crosstune.train.ranking.scorers import CrossEncoderScorer
from crosstune.train.training.records import log_metrics


class ShardedScorer:
    """Each process scores its share of the pairs and every process gets all the scores back, in order: a dev
    check on N processes takes 1/N of the time, and no process idles in a collective while another scores."""

    def __init__(self, scorer, accelerator):
        self.scorer, self.accelerator = scorer, accelerator

    def score(self, pairs):
        from accelerate.utils import gather_object

        with self.accelerator.split_between_processes(list(pairs)) as share:
            part = [float(x) for x in self.scorer.score(share)] if share else []
        return np.asarray(gather_object(part), dtype=np.float32)


class OnceScorer:
    """Scores a list of pairs once: a dev check ranks its candidates twice (unfused, to tune the fusion weights on
    the logits, then with the tuned weights), and the second ranking reads the first one's scores. The first call
    scores the list exactly as given, so the batches, and the logits, are those `evaluate` computes."""

    def __init__(self, scorer):
        self.scorer, self.memo = scorer, {}

    def score(self, pairs):
        pairs = list(pairs)
        if not all(p in self.memo for p in pairs):
            self.memo.update(zip(pairs, self.scorer.score(pairs)))
        return np.asarray([self.memo[p] for p in pairs], dtype=np.float32)


class FixedCosines:
    """The bi-encoder's cosines, computed once before training (it does not train), served to the pipeline in the
    bi-encoder's place."""

    def __init__(self, run: Run):
        self.run = run

    def score_run(self, first_stage: Run, queries, corpus, depth: int, use_title: bool = True) -> Run:
        return {q: {d: self.run[q][d] for d in ranked(docs)[:depth]} for q, docs in first_stage.items()}


class DevSet:
    """The split that chooses (data.dev_split), retrieved once as `crosstune evaluate` retrieves it; each check ranks
    it with the current model through evaluate's own code (evaluation/levels.py: passages, or documents by their
    passages' scores), the fusion weights tuned on the check's logits at the depth evaluate and serving apply them."""

    def __init__(self, cfg: Config, accelerator):
        accelerator.print(f"train | dev checks on split {cfg.data.dev_split!r}: loading the corpus and BM25's "
                          f"candidates")
        self.split, self.corpus = cfg.data.dev_split, load_passages(cfg)
        self.queries, self.judged = load_judgments(cfg.data, self.split, self.corpus)
        index = load_or_build(self.corpus, cfg.bm25, mined_dir(cfg) / "index", cfg.data.use_title)
        self.bm25 = index.search(self.queries, first_stage_depth(cfg, self.judged))
        self.qrels = self.judged.passages or self.judged.documents
        self.bi = biencoder_run(cfg, accelerator, self) if cfg.eval.biencoder else None

    def pairs(self, cfg: Config) -> int:
        """(query, passage) pairs a check scores: eval.depth for each query (a time budget plans with it)."""
        return len(self.queries) * cfg.eval.depth

    def view(self, cfg: Config):
        """What the tuning scores: the passages, or (document judgments alone) documents by their passages."""
        if self.judged.passages:
            return None
        e = cfg.eval
        return lambda run: document_ranking(run, self.bm25, e.aggregate, e.aggregate_k, cfg.data.document_separator)

    def pipeline(self, scorer, cfg: Config, fusion: Fusion) -> RankingPipeline:
        return RankingPipeline(scorer, depth=cfg.eval.depth, use_title=cfg.data.use_title, fusion=fusion,
                               biencoder=FixedCosines(self.bi) if self.bi is not None else None, corpus=self.corpus,
                               bm25=cfg.bm25)

    def evaluate(self, model, tokenizer, cfg: Config, accelerator) -> dict:
        """Cross-encoder alone and fused (a weight set in eval.* stays fixed; the others are tuned here)."""
        e = cfg.eval
        scorer = OnceScorer(ShardedScorer(CrossEncoderScorer(
            model, tokenizer, cfg.model.max_length, e.batch_size, accelerator.mixed_precision,
            progress=accelerator.is_main_process, max_query_tokens=cfg.model.max_query_tokens), accelerator))
        _, alone = rank_levels(cfg, self.pipeline(scorer, cfg, Fusion(depth=e.depth)), self.bm25, self.queries,
                               self.judged)
        weight, bi_weight, _ = tune_weights(self.qrels, alone.first_stage, alone.cross_encoder,
                                            self.bi, e.fusion_weight, e.biencoder_weight, view=self.view(cfg))
        tuned = Fusion(weight, e.biencoder or None, bi_weight, e.depth, f"tuned on split {self.split!r}")
        levels, _ = rank_levels(cfg, self.pipeline(scorer, cfg, tuned), self.bm25, self.queries, self.judged)
        report = level_report(levels, list(e.recall_at))
        return {"split": self.split, "depth": e.depth, "fusion_weight": weight, "biencoder_weight": bi_weight,
                "spread": score_spread(alone.cross_encoder), **report}


def biencoder_run(cfg: Config, accelerator, dev: DevSet) -> Run:
    """The bi-encoder does not train: its cosines over the candidates the checks rerank are computed once, each
    process embedding its share of the queries (only the main process keeps the on-disk cache, so no two write it)."""
    from accelerate.utils import gather_object

    candidates = rerank_candidates(cfg, dev.bm25, dev.judged)
    cache = mined_dir(cfg) / "biencoder" if accelerator.is_main_process else None
    accelerator.print(f"train | bi-encoder {cfg.eval.biencoder}: scoring split {dev.split!r}'s {cfg.eval.depth} "
                      f"candidates a query ({len(candidates)} queries) once before training; passage embeddings "
                      f"cached in {mined_dir(cfg) / 'biencoder'}")
    scorer = BiEncoderScorer(cfg.eval.biencoder, cache, progress=accelerator.is_main_process)
    with accelerator.split_between_processes(sorted(candidates)) as qids:
        part = scorer.score_run({q: candidates[q] for q in qids}, dev.queries, dev.corpus, cfg.eval.depth,
                                cfg.data.use_title)
    return dict(gather_object(list(part.items())))


def dev_check(accelerator, model, tokenizer, cfg: Config, dev: DevSet | None, step: int, best: float, out: Path) -> float:
    """Rerank the dev candidates on every process; the main one keeps the best model (and its fusion) in best/."""
    if dev is None:
        return best
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.eval()
    result = dev.evaluate(unwrapped, tokenizer, cfg, accelerator)
    unwrapped.train()
    m = result["metrics"]
    ndcg = m["nDCG@10"]["reranked"]
    alone = m["nDCG@10"].get("cross-encoder", ndcg)  # unfused, the reranked row is the cross-encoder alone
    log_metrics(accelerator, out, {"step": step, "dev/nDCG@10": round(ndcg, 4),
                                   "dev/ce_nDCG@10": round(alone, 4),
                                   "dev/bm25_nDCG@10": round(m["nDCG@10"]["BM25"], 4),
                                   "dev/MRR@10": round(m["MRR@10"]["reranked"], 4),
                                   "dev/fusion_weight": result["fusion_weight"],
                                   "dev/biencoder_weight": result["biencoder_weight"]})
    accelerator.print(f"step {step} {dev.split} {headline(result, 'reranked')} | cross-encoder alone "
                      f"{alone:.3f}, BM25 weight {result['fusion_weight']}"
                      + (f", bi-encoder weight {result['biencoder_weight']}" if cfg.eval.biencoder else ""))
    if result["spread"] < 1e-6:
        accelerator.print("warning: every dev passage got the same score: the model has collapsed")
    # every process computed the same metrics, so `best` agrees everywhere without a broadcast
    if ndcg > best:
        best = ndcg
        if accelerator.is_main_process:
            with atomic_dir(out / "best") as tmp:
                unwrapped.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
                dev_metrics = {"step": step, **without_per_query(result)}
                (tmp / "dev_metrics.json").write_text(json.dumps(dev_metrics, indent=1))
                # the same manifest an export carries: evaluating best/ ranks with the fusion tuned here
                (tmp / "crosstune.json").write_text(json.dumps(serving_config(cfg, dev_metrics), indent=1))
    accelerator.wait_for_everyone()
    return best


def without_per_query(report: dict) -> dict:
    """The figures best/dev_metrics.json keeps: not the per-query values (at the document level neither)."""
    out = {k: v for k, v in report.items() if k != "per_query"}
    if isinstance(out.get("documents"), dict):
        out["documents"] = without_per_query(out["documents"])
    return out
