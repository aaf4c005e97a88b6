"""Whole documents through the commands: passages cut with the model's tokenizer, rankings at the level the
judgments hold (passages, documents, or both), and what the model did not read (truncation)."""
from __future__ import annotations

from dataclasses import dataclass, field

from crosstune.data.judgments import Judgments
from crosstune.data.types import Queries, Run, top_k
from crosstune.train.config import Config
from crosstune.train.evaluation.metrics import aggregate, compare, format_table, per_query
from crosstune.train.ranking.aggregation import AGGREGATES, aggregate_run, budget_candidates, document_ranking
from crosstune.train.ranking.candidates import with_tail
from crosstune.train.ranking.pipeline import Ranking


# -- rankings at each level --------------------------------------------------------------------------------------
@dataclass
class LevelRuns:
    """Runs to evaluate at one level, BM25 first."""

    qrels: dict
    runs: dict[str, Run]
    extra: dict = field(default_factory=dict)


def first_stage_depth(cfg: Config, judged: Judgments) -> int:
    """Passages BM25 retrieves: enough for the passage metrics, and with a document view enough to rank documents."""
    depth = max(cfg.eval.depth, *cfg.eval.recall_at)
    return max(depth, cfg.eval.first_stage_depth) if judged.documents else depth


def rerank_candidates(cfg: Config, bm25: Run, judged: Judgments) -> Run:
    """The passages `rank_levels` reranks: the passages of BM25's top documents up to eval.depth passages (document
    judgments), else BM25's top eval.depth passages."""
    e = cfg.eval
    if judged.level == "document":
        return budget_candidates(bm25, e.depth, e.aggregate, e.aggregate_k, cfg.data.document_separator)
    return top_k(bm25, e.depth)


def rank_levels(cfg: Config, pipe, bm25: Run, queries: Queries, judged: Judgments) -> tuple[dict[str, LevelRuns], Ranking]:
    """Rank through the pipeline and lay the runs out by level: what `crosstune evaluate` reports and what the dev
    check chooses by. Document judgments rerank the passages of BM25's top documents up to eval.depth passages;
    passage and span judgments rerank BM25's top eval.depth passages (and rank documents from them too, when
    passages name their documents). Also returns the ranking of the candidates (its logits, its bi-encoder)."""
    e, sep = cfg.eval, cfg.data.document_separator
    passage_depth = max(e.depth, *e.recall_at, getattr(pipe, "deepest", 0))  # a cascade's first stage may read more
    if judged.level == "document":
        ranking = pipe.rank_documents(bm25, queries, pipe.corpus, e.aggregate, e.aggregate_k, separator=sep).ranking
        head = ranking.final
    else:
        ranking = pipe.rank(top_k(bm25, passage_depth), queries, pipe.corpus)
        head = top_k(ranking.final, e.depth)
    out: dict[str, LevelRuns] = {}
    if judged.passages:
        shallow = top_k(bm25, passage_depth)  # the passage figures read the depth they always did
        runs = {"BM25": shallow, "reranked": with_tail(ranking.final, shallow)}
        if pipe.fusion.fused:
            runs["cross-encoder"] = with_tail(ranking.cross_encoder, shallow)
        if ranking.biencoder is not None:
            runs["bi-encoder"] = with_tail(ranking.biencoder, shallow)
        out["passage"] = LevelRuns(judged.passages, runs)
    if judged.documents:
        runs = {"BM25": aggregate_run(bm25, e.aggregate, e.aggregate_k, sep),
                "reranked": document_ranking(head, bm25, e.aggregate, e.aggregate_k, sep)}
        if pipe.fusion.fused:
            runs["cross-encoder"] = document_ranking(ranking.cross_encoder, bm25, e.aggregate, e.aggregate_k, sep)
        out["document"] = LevelRuns(judged.documents, runs, {"aggregate": e.aggregate, "aggregate_k": e.aggregate_k,
                                                             "bm25_passages": first_stage_depth(cfg, judged),
                                                             "by_aggregate": by_aggregate(
                                                                 judged.documents, bm25, head, ranking, pipe.fusion.fused,
                                                                 e.aggregate_k, sep)})
    return out, ranking


def by_aggregate(qrels: dict, bm25: Run, head: Run, ranking, fused: bool, k: int, separator: str) -> dict:
    """Document nDCG@10 under every eval.aggregate, from the same passage scores: what the setting changes, shown
    beside the one configured (choose it on a split that reports nothing)."""
    def ndcg(run: Run) -> float:
        return round(aggregate(per_query(qrels, run, ["nDCG@10"]))["nDCG@10"], 4)

    out = {}
    for how in AGGREGATES:
        label = f"{how} k={k}" if how == "mean-top-k" else how
        out[label] = {"BM25": ndcg(aggregate_run(bm25, how, k, separator)),
                      "reranked": ndcg(document_ranking(head, bm25, how, k, separator))}
        if fused:
            out[label]["cross-encoder"] = ndcg(document_ranking(ranking.cross_encoder, bm25, how, k, separator))
    return out


def aggregate_table(rows: dict) -> str:
    systems = list(next(iter(rows.values())))
    return "\n".join([f"| eval.aggregate | {' | '.join(systems)} |", "|---|" + "---|" * len(systems),
                      *(f"| {how} | {' | '.join(f'{v[s]:.3f}' for s in systems)} |" for how, v in rows.items())])


def level_report(levels: dict[str, LevelRuns], recall_at: list[int]) -> dict:
    """compare() at the first level the judgments hold; the document level beside it under "documents"."""
    primary = "passage" if "passage" in levels else "document"
    report = compare(levels[primary].qrels, levels[primary].runs, recall_at)
    report["level"] = primary
    if primary == "passage" and "document" in levels:
        doc = levels["document"]
        report["documents"] = {**compare(doc.qrels, doc.runs, recall_at), **doc.extra}
    elif primary == "document":
        report.update(levels["document"].extra)
    return report


def level_tables(report: dict, cfg: Config) -> str:
    """report.md's tables: passages, then documents (or documents alone)."""
    how = f"{cfg.eval.aggregate}" + (f" k={cfg.eval.aggregate_k}" if cfg.eval.aggregate == "mean-top-k" else "")
    each = ("\n\nDocument nDCG@10 under each `eval.aggregate`, from the same passage scores (the configured one is "
            "above; choose on a split that reports nothing):\n\n")
    if report.get("level") == "document":
        return (f"Documents ranked by their passages' scores ({how}); the passages of BM25's top documents reranked, "
                f"{cfg.eval.depth} passages a query.\n\n{format_table(report)}"
                + (each + aggregate_table(report["by_aggregate"]) if report.get("by_aggregate") else ""))
    table = format_table(report)
    if "documents" in report:
        docs = report["documents"]
        table = (f"### Passages\n\n{table}\n\n### Documents ({how} over the passages' scores)\n\n"
                 f"{format_table(docs)}" + (each + aggregate_table(docs["by_aggregate"]) if docs.get("by_aggregate") else ""))
    return table
