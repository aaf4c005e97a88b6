"""Where `crosstune mine` gets its (query, positive) pairs: the train split's judgments, or pseudo-queries built from
the corpus alone (data/pseudo.py) when `mining.pseudo_queries` names kinds."""
from __future__ import annotations

from collections import Counter

from crosstune.data.judgments import load_judgments, span_file
from crosstune.data.loading import detect_format, split_qrels_file
from crosstune.data.pseudo import cap, generate, parse_kinds
from crosstune.data.pseudo_set import PseudoSet, pseudo_set
from crosstune.data.readers import iter_lines
from crosstune.data.splits import HOLDOUT, held_out_passages
from crosstune.data.types import Corpus, DataError
from crosstune.train.config import Config


def check_pseudo_file(cfg: Config) -> None:
    """A named pseudo-query file exists and is readable, checked before the corpus is loaded."""
    if cfg.mining.pseudo_file:
        from pathlib import Path

        next(iter_lines(Path(cfg.mining.pseudo_file), "pseudo-query file", "check mining.pseudo_file"), None)


def judged_documents(cfg: Config, corpus: Corpus) -> tuple[set[str], list[str], dict[str, str]]:
    """Passages of every document data.dev_split and data.test_split judge: pseudo-queries stay away from the splits
    that choose and report. A split with no qrels file (a collection without judgments) is skipped and said so."""
    passages, used, skipped = set(), [], {}
    for split in dict.fromkeys(s for s in (cfg.data.dev_split, cfg.data.test_split) if s and s != HOLDOUT):
        fmt = detect_format(cfg.data)
        has_file = split_qrels_file(cfg.data, fmt, split).exists() or span_file(cfg.data, split).exists()
        if fmt != "hf" and not has_file:
            skipped[split] = "no qrels file"
            continue
        try:
            _, judged = load_judgments(cfg.data, split, corpus)  # passage, document or span judgments alike
        except DataError as e:
            if fmt != "hf":
                raise
            skipped[split] = str(e)  # a Hugging Face dataset without that split
            continue
        qrels = judged.documents or judged.passages
        passages |= held_out_passages(set(qrels), qrels, corpus, cfg.data.document_separator)
        used.append(split)
    return passages, used, skipped


def pseudo_queries(cfg: Config, corpus: Corpus, held: set[str]) -> tuple[PseudoSet, set[str]]:
    """The pseudo-query set and the passages no row may contain (the holdout's documents, and unless
    mining.pseudo_all_documents the documents the dev and test splits judge)."""
    m = cfg.mining
    kinds = parse_kinds(m.pseudo_queries, m.pseudo_file)
    keep_out, used, skipped = (set(), [], {}) if m.pseudo_all_documents else judged_documents(cfg, corpus)
    keep_out |= held
    made, dropped = generate(corpus, kinds, seed=m.seed, title_prefix=m.pseudo_title, file=m.pseudo_file,
                             skip=keep_out)
    made, over = cap(made, m.pseudo_max_per_kind, m.seed)
    for kind, n in over.items():
        if n:
            dropped[kind]["over_max_per_kind"] += n
    if not made:
        raise DataError(f"mining.pseudo_queries={m.pseudo_queries!r} made no query from {len(corpus) - len(keep_out)} "
                        f"passages (dropped: {dict(sum(dropped.values(), Counter())) or 'none'}); try another kind")
    pseudo = pseudo_set(made, corpus, m.pseudo_neighbours, cfg.data.document_separator)
    pseudo.stats = {"kinds": {k: {"made": sum(q.kind == k for q in made), "dropped": dict(dropped[k])} for k in kinds},
                    "subkinds": dict(Counter(q.subkind for q in made)),
                    "passages_kept_out": len(keep_out), "kept_out_splits": used + (["holdout"] if held else []),
                    "splits_without_qrels": skipped, "all_documents": m.pseudo_all_documents,
                    "title_prefix": m.pseudo_title, "neighbours": m.pseudo_neighbours,
                    "mean_avoided_per_query": round(sum(map(len, pseudo.avoid.values())) / len(made), 2)}
    return pseudo, keep_out


def tag_rows(pseudo: PseudoSet, rows: list[dict]) -> dict:
    """Mark each row with its kind; per kind: queries made, rows mined, queries mining dropped (too few candidates)."""
    stats = pseudo.stats
    used = Counter(pseudo.kind[q] for q in {r["query_id"] for r in rows})
    for kind, s in stats["kinds"].items():
        s["rows"] = sum(pseudo.kind[r["query_id"]] == kind for r in rows)
        if s["made"] - used[kind]:
            s["dropped"]["fewer_candidates_than_negatives"] = s["made"] - used[kind]
    for r in rows:
        r["kind"] = pseudo.kind[r["query_id"]]
    return stats


def describe(stats: dict) -> str:
    kinds = ", ".join(f"{k} {s['made']}" for k, s in stats["kinds"].items())
    out = stats["passages_kept_out"]
    return (f"mine | pseudo-queries from the corpus: {kinds}"
            + (f"; {out} passages of documents judged by {', '.join(stats['kept_out_splits'])} kept out" if out else ""))
