"""TODO docstring."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from crosstune.data.bm25 import load_or_build
from crosstune.data.judgments import load_judgments
from crosstune.train.artifact.manifest import serving_config
from crosstune.train.artifact.outputs import atomic_dir
from crosstune.train.config import Config, mined_dir
from crosstune.train.evaluation.metrics import compare, headline
from crosstune.train.evaluation.tuning import tune_weights
from crosstune.train.ranking.aggregation import aggregate_run, budget_candidates, document_ranking
from crosstune.train.ranking.biencoder import BiEncoderScorer
from crosstune.train.ranking.candidates import score_spread, with_tail
from crosstune.train.ranking.fusion import Fusion
from crosstune.train.ranking.passages import load_passages
from crosstune.train.ranking.pipeline import RankingPipeline
from crosstune.train.ranking.scorers import CrossEncoderScorer
from crosstune.train.training.loop import log_metrics


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


class DevSet:
    """BM25 top-`eval.depth` of the split that chooses (data.dev_split), fixed once; each check reranks them with
    the current model and tunes the fusion weights at the depth `evaluate` and serving apply them. With document
    judgments the candidates are the passages of BM25's top documents (the passage budget `evaluate` spends) and the
    checks rank documents by eval.aggregate, as `evaluate` does."""

    def __init__(self, cfg: Config, accelerator):
        accelerator.print(f"train | dev checks on split {cfg.data.dev_split!r}: loading the corpus and BM25's "
                          f"top-{cfg.eval.depth} candidates")
        corpus = load_passages(cfg)
        self.split = cfg.data.dev_split
        self.queries, judged = load_judgments(cfg.data, self.split, corpus)
        index = load_or_build(corpus, cfg.bm25, mined_dir(cfg) / "index", cfg.data.use_title)
        self.documents = judged.level == "document"
        self.qrels = judged.documents if self.documents else judged.passages
        e = cfg.eval
        self.how = (e.aggregate, e.aggregate_k, cfg.data.document_separator)
        if self.documents:
            self.first_stage = index.search(self.queries, max(e.depth, e.first_stage_depth))
            self.run = budget_candidates(self.first_stage, e.depth, *self.how)
        else:
            self.first_stage = self.run = index.search(self.queries, e.depth)
        self.corpus = corpus
        self.bi = biencoder_run(cfg, accelerator, self) if cfg.eval.biencoder else None

    def view(self, run):
        """What the judgments rank: the passages, or documents by their passages' scores."""
        return document_ranking(run, self.first_stage, *self.how) if self.documents else run

    def evaluate(self, model, tokenizer, cfg: Config, accelerator) -> dict:
        """Cross-encoder alone and fused (a weight set in eval.* stays fixed; the others are tuned here), ranked by
        the same pipeline `evaluate` and serving use."""
        scorer = CrossEncoderScorer(model, tokenizer, cfg.model.max_length, cfg.eval.batch_size, accelerator.mixed_precision,
                                    progress=accelerator.is_main_process, max_query_tokens=cfg.model.max_query_tokens)
        pipe = RankingPipeline(ShardedScorer(scorer, accelerator), depth=cfg.eval.depth, use_title=cfg.data.use_title)
        ce, _ = pipe.signals(self.run, self.queries, self.corpus)
        weight, bi_weight, _ = tune_weights(self.qrels, self.run, ce, self.bi, cfg.eval.fusion_weight,
                                            cfg.eval.biencoder_weight, view=self.view if self.documents else None)
        tuned = Fusion(weight, cfg.eval.biencoder or None, bi_weight, cfg.eval.depth, f"tuned on split {self.split!r}")
        bm25 = aggregate_run(self.first_stage, *self.how) if self.documents else self.run
        runs = {"BM25": bm25, "reranked": self.view(pipe.with_fusion(tuned).fuse(self.run, ce, self.bi)),
                "cross-encoder": self.view(with_tail(ce, self.run))}
        if self.bi is not None:
            runs["bi-encoder"] = self.view(with_tail(self.bi, self.run))
        report = compare(self.qrels, runs, [10])
        return {"split": self.split, "depth": cfg.eval.depth, "fusion_weight": weight, "biencoder_weight": bi_weight,
                "spread": score_spread(ce), **report}


def biencoder_run(cfg: Config, accelerator, dev: DevSet):
    """The bi-encoder does not train: its scores are computed once, each process embedding its share of the queries
    (only the main process keeps the on-disk cache, so no two write it)."""
    from accelerate.utils import gather_object

    cache = mined_dir(cfg) / "biencoder" if accelerator.is_main_process else None
    accelerator.print(f"train | bi-encoder {cfg.eval.biencoder}: scoring split {dev.split!r}'s BM25 top-{cfg.eval.depth} "
                      f"({len(dev.run)} queries) once before training; passage embeddings cached in "
                      f"{mined_dir(cfg) / 'biencoder'}")
    scorer = BiEncoderScorer(cfg.eval.biencoder, cache, progress=accelerator.is_main_process)
    with accelerator.split_between_processes(sorted(dev.run)) as qids:
        part = scorer.score_run({q: dev.run[q] for q in qids}, dev.queries, dev.corpus, cfg.eval.depth,
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
    log_metrics(accelerator, out, {"step": step, "dev/nDCG@10": round(ndcg, 4),
                                   "dev/ce_nDCG@10": round(m["nDCG@10"]["cross-encoder"], 4),
                                   "dev/bm25_nDCG@10": round(m["nDCG@10"]["BM25"], 4),
                                   "dev/MRR@10": round(m["MRR@10"]["reranked"], 4),
                                   "dev/fusion_weight": result["fusion_weight"],
                                   "dev/biencoder_weight": result["biencoder_weight"]})
    accelerator.print(f"step {step} {dev.split} {headline(result, 'reranked')} | cross-encoder alone "
                      f"{m['nDCG@10']['cross-encoder']:.3f}, BM25 weight {result['fusion_weight']}"
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
                dev_metrics = {"step": step, **{k: v for k, v in result.items() if k != "per_query"}}
                (tmp / "dev_metrics.json").write_text(json.dumps(dev_metrics, indent=1))
                # the same manifest an export carries: evaluating best/ ranks with the fusion tuned here
                (tmp / "crosstune.json").write_text(json.dumps(serving_config(cfg, dev_metrics), indent=1))
    accelerator.wait_for_everyone()
    return best
