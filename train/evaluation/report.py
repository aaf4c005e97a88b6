"""report.md for `crosstune evaluate`: settings, the table with intervals, the plots beside it, and the queries behind
the means (the biggest wins and losses, a few drawn at random) with BM25's top 3 beside the reranker's.

Written to be read on its own: someone who opens report.md and nothing else should learn what was measured, how
it was chosen, how sure the figures are, and what the reranker does differently from BM25.
"""
from __future__ import annotations

from pathlib import Path

from crosstune.data.types import Corpus, Qrels, Queries, Run, ranked
from crosstune.train.evaluation.analysis import intervals, pick_examples, query_changes
from crosstune.train.evaluation.metrics import format_table, headline
from crosstune.train.evaluation.plots import change_figure, depth_figure, frontier_figure, metrics_figure, save
from crosstune.train.ranking.locations import place

TOP = 3  # passages shown a side in an example


WORDS = 14  # first words of a passage shown


def add_analysis(report: dict, examples: int) -> None:
    """Intervals, the per-query nDCG@10 change and the queries report.md shows, into report.json's dict."""
    report["intervals"] = intervals(report)
    deltas, counts = query_changes(report["per_query"]["BM25"]["nDCG@10"], report["per_query"]["reranked"]["nDCG@10"])
    report["per_query_change"] = {"metric": "nDCG@10", "counts": counts, "unchanged_means": "|change| < 1e-6",
                                  "deltas": [[q, round(d, 6)] for q, d in deltas]}
    report["examples"] = pick_examples(deltas, examples)


def write_plots(folder: Path, report: dict) -> dict[str, str]:
    """The evaluation's PNGs into `folder`; name -> file name, as report.md links them."""
    change = report["per_query_change"]
    files = {"metrics": "metrics.png", "per_query_change": "per_query_change.png"}
    save(metrics_figure(report["metrics"], report["intervals"]["mean"],
                        f"{report['split']}: BM25 top-{report['depth']} reranked, {report['queries']} queries"),
         folder / files["metrics"])
    save(change_figure([tuple(d) for d in change["deltas"]], change["counts"]), folder / files["per_query_change"])
    curve = report.get("depth_curve")
    if curve:
        fused = (report["depth"], report["metrics"]["nDCG@10"]["reranked"]) if "cross-encoder" in report["metrics"][
            "nDCG@10"] else None
        save(depth_figure(curve["points"], report["metrics"]["nDCG@10"]["BM25"], fused), folder / "depth_curve.png")
        files["depth_curve"] = "depth_curve.png"
    c = report.get("cascade")
    if c:
        save(frontier_figure(c["points"], c["chosen"]["label"], c.get("budget_ms"), c["split"]), folder / "frontier.png")
        files["frontier"] = "frontier.png"
    return files


def cascade_line(c: dict | None) -> str:
    """"BM25 top-100 -> stages/1 top-100 -> model top-20" for a cascade (its stages and the model's depth)."""
    if not c:
        return ""
    stages = c["chosen"]["stages"]
    return " -> ".join([f"BM25 top-{stages[0]['depth']}", *(f"{s['name']} top-{s['depth']}" for s in stages)])


def cascade_section(report: dict, files: dict[str, str]) -> str:
    """The configurations a latency budget chose from, on the split that chose (in-sample there), and the choice."""
    c = report.get("cascade")
    if not c:
        return ""
    budget = f"the most accurate whose p95 fits {c['budget_ms']:g} ms" if c.get("budget_ms") else "the most accurate"
    rows = "\n".join(f"| {p['label']}{' **(chosen)**' if p['label'] == c['chosen']['label'] else ''} | "
                     f"{p['nDCG@10']:.4f} | {p['p95_ms']:.0f} | {'yes' if p['fits'] else 'no'} |"
                     for p in sorted(c["points"], key=lambda p: p["p95_ms"]) if p.get("frontier")
                     or p["label"] == c["chosen"]["label"])
    return (f"## Cascade\n\n{cascade_line(c)}: {budget} of {len(c['points'])} configurations, chosen on split "
            f"`{c['split']}` (figures below are that split's, in-sample; the tables above are this split's). p95 a "
            f"query on {c['machine']}: {c['chosen']['p95_ms']:.0f} ms estimated, {c['measured_p95_ms']:.0f} ms end to "
            f"end. The frontier (no configuration both more accurate and faster):\n\n"
            f"| configuration | nDCG@10 ({c['split']}) | p95 ms | fits |\n|---|---|---|---|\n{rows}\n\n"
            f"![accuracy and latency of every configuration]({files['frontier']})\n")


def cell(text: str) -> str:
    """Text safe inside a markdown table cell: one line, no column breaks."""
    return " ".join(text.split()).replace("|", "\\|")


def passage(corpus: Corpus, did: str, relevant: bool) -> str:
    """✓ where judged relevant, the title, the first words and, where the corpus has documents, the place."""
    doc = corpus[did]
    words = doc.text.split()
    snippet = " ".join(words[:WORDS]) + (" ..." if len(words) > WORDS else "")
    title = f"**{cell(doc.title)}**: " if doc.title else ""
    return ("✓ " if relevant else "") + title + cell(snippet) + where(corpus, did, " <br>")


def where(corpus: Corpus, did: str, before: str, beside_id: bool = False) -> str:
    """The passage's place in its document ("acme.pdf, page 12") in italics after `before`; nothing for an entry
    with no place, or, `beside_id`, for one whose id already says it all (a chunk id's document and characters)."""
    location = place(did, corpus)
    if location is None or (beside_id and not location.source and location.page is None):
        return ""
    return f"{before}_{cell(location.label())}_"


def side_by_side(qid: str, query: str, judged: dict[str, int], corpus: Corpus, bm25: Run, reranked: Run,
                 before: float, after: float) -> str:
    """One query: its nDCG@10 both ways, BM25's top 3 beside the reranker's, and where the judged passages went."""
    left, right = ranked(bm25.get(qid, {})), ranked(reranked.get(qid, {}))
    rows = [f"**`{qid}`** {cell(query)}  \nnDCG@10 BM25 {before:.3f} -> reranked {after:.3f} ({after - before:+.3f})",
            "", "| # | BM25 | reranked |", "|---|---|---|"]
    for i in range(TOP):
        cells = [passage(corpus, r[i], judged.get(r[i], 0) > 0) if i < len(r) else "" for r in (left, right)]
        rows.append(f"| {i + 1} | {cells[0]} | {cells[1]} |")
    judged_at = []
    for did in sorted(d for d, rel in judged.items() if rel > 0):
        pos = [f"#{r.index(did) + 1}" if did in r else "not retrieved" for r in (left, right)]
        judged_at.append(f"`{did}`{where(corpus, did, ' ', beside_id=True)} BM25 {pos[0]} -> reranked {pos[1]}")
    return "\n".join(rows) + "\n\nJudged relevant: " + "; ".join(judged_at) + "\n"


def query_section(title: str, intro: str, qids: list[str], report: dict, queries: Queries, qrels: Qrels,
                  corpus: Corpus, bm25: Run, reranked: Run) -> str:
    values = report["per_query"]
    body = [side_by_side(q, queries[q], qrels[q], corpus, bm25, reranked, values["BM25"]["nDCG@10"][q],
                         values["reranked"]["nDCG@10"][q]) for q in qids]
    return f"## {title}\n\n{intro}\n\n" + ("\n".join(body) if body else "(none)\n")


def interval_table(report: dict) -> str:
    ci, base = report["intervals"], report["baseline"]
    systems = list(next(iter(report["metrics"].values())))
    others = [s for s in systems if s != base]
    lines = ["| metric | " + " | ".join(systems) + " | " + " | ".join(f"{s} - {base}" for s in others) + " |",
             "|---|" + "---|" * (len(systems) + len(others))]
    for m in report["metrics"]:
        means = [f"[{ci['mean'][m][s][0]:.3f}, {ci['mean'][m][s][1]:.3f}]" for s in systems]
        deltas = [f"[{ci['delta'][m][s][0]:+.3f}, {ci['delta'][m][s][1]:+.3f}]" for s in others]
        lines.append(f"| {m} | " + " | ".join(means + deltas) + " |")
    return "\n".join(lines)


def depth_section(report: dict, files: dict[str, str]) -> str:
    curve = report.get("depth_curve")
    if not curve:
        return "## Quality over rerank depth\n\nNot computed (`eval.depth_curve: []`).\n"
    rows = "\n".join(f"| {p['depth']} | {p['pairs_per_query']} | {p['nDCG@10']:.3f} | {p['MRR@10']:.3f} | "
                     f"{p['ms_per_query']} |" for p in curve["points"])
    star = (" The star in the plot is the fused ranking, at the depth its weights were tuned for."
            if "cross-encoder" in report["metrics"]["nDCG@10"] else "")
    return (f"## Quality over rerank depth\n\nRanked by {curve['ranked_by']}.{star} A depth past the candidates a "
            f"query has is capped there. "
            f"Latency is {curve['latency']} ({1000 * curve['seconds_per_pair']:.2f} ms a pair). The deeper depths "
            f"cost {curve['extra_pairs']} extra pairs ({curve['extra_seconds']} s).\n\n"
            f"| depth | pairs a query | nDCG@10 | MRR@10 | ms a query |\n|---|---|---|---|---|\n{rows}\n\n"
            f"![quality and latency over rerank depth]({files['depth_curve']})\n")


def render(report: dict, run_name: str, selection: dict, fusion, files: dict[str, str], queries: Queries,
           qrels: Qrels, corpus: Corpus, bm25: Run, reranked: Run, table: str | None = None) -> str:
    """report.md: settings, the tables (`table`: passages and documents when both were ranked), intervals, plots,
    and example queries with BM25's top 3 beside the reranker's."""
    change = report["per_query_change"]["counts"]
    seconds = report["seconds"]
    bi = f", bi-encoder `{fusion.biencoder}` weight {fusion.biencoder_weight}" if fusion.biencoder_weight else ""
    picks = report["examples"]
    sections = [
        f"# {run_name}: split `{report['split']}`, BM25 top-{report['depth']} reranked\n",
        (f"> **{selection['note']}**\n" if selection["in_sample"] else f"Selection: {selection['note']}.\n"),
        f"**{headline(report, 'reranked')}** on {report['queries']} queries.\n",
        "## Settings\n\n| | |\n|---|---|\n"
        f"| model | `{report['model']}` |\n| queries | {report['queries']} judged queries of split `{report['split']}` |\n"
        + (f"| cascade | {cascade_line(report['cascade'])}; the candidates past each stage keep the order before |\n"
           if report.get("cascade") else
           f"| first stage | BM25 top-{report['depth']} reranked; the candidates past it keep BM25 order |\n")
        + f"| fusion | BM25 fusion weight {fusion.weight}{bi} (from {fusion.source}) |\n"
        f"| precision | {report['precision']} |\n"
        f"| time | BM25 {seconds['bm25']} s, rerank {seconds['rerank']} s |\n",
        "## Metrics\n\nBaseline first; p from a paired t-test over queries against BM25.\n\n"
        + (table or format_table(report)) + "\n",
        f"95% intervals ({report['intervals']['method']}) of each mean, and of each difference to BM25 (paired):\n\n"
        + interval_table(report) + f"\n\n![BM25 vs reranked, 95% intervals]({files['metrics']})\n",
        f"## Per query: where reranking wins and loses\n\nnDCG@10 against BM25: **{change['improved']} queries improve, "
        f"{change['unchanged']} are unchanged, {change['worse']} get worse** (of {report['queries']}).\n\n"
        f"![per-query nDCG@10 change]({files['per_query_change']})\n",
        depth_section(report, files),
        cascade_section(report, files),
        "✓ marks a passage judged relevant; each passage shows its document's title and first words, and where the "
        "corpus holds documents, its place in its document (file and page, else characters).\n",
        query_section("Biggest wins", "The queries whose nDCG@10 the reranker raised most.", picks["wins"], report,
                      queries, qrels, corpus, bm25, reranked),
        query_section("Biggest losses", "The queries whose nDCG@10 the reranker lowered most.", picks["losses"], report,
                      queries, qrels, corpus, bm25, reranked),
        query_section("Example queries", "Drawn at random (seeded) from the rest: what a typical query looks like.",
                      picks["examples"], report, queries, qrels, corpus, bm25, reranked),
    ]
    return "\n".join(sections)


def plain_report(report: dict, run_name: str, selection: dict, fusion, files: dict[str, str], table: str) -> str:
    """report.md of a document-level evaluation: the tables and plots, without passage examples."""
    bi = f", bi-encoder `{fusion.biencoder}` weight {fusion.biencoder_weight}" if fusion.biencoder_weight else ""
    change = report["per_query_change"]["counts"]
    return "\n".join([
        f"# {run_name}: split `{report['split']}`, documents ranked from BM25's passages reranked\n",
        (f"> **{selection['note']}**\n" if selection["in_sample"] else f"Selection: {selection['note']}.\n"),
        f"Model: `{report['model']}`; {report['queries']} queries; BM25 fusion weight {fusion.weight}{bi} "
        f"(from {fusion.source}); p from a paired t-test over queries against BM25.\n",
        table + "\n", f"![BM25 vs reranked, 95% intervals]({files['metrics']})\n",
        f"nDCG@10 against BM25: **{change['improved']} queries improve, {change['unchanged']} are unchanged, "
        f"{change['worse']} get worse**.\n\n![per-query nDCG@10 change]({files['per_query_change']})\n"])
