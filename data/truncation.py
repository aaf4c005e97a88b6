"""What the model does not read: (query, passage) pairs cut at model.max_length, and which side lost the tokens.

A cross-encoder reads `[CLS] query [SEP] passage [SEP]` up to max_length tokens. Whatever lies past that is
invisible to mining's rows, to training and to reranking, and nothing said so; these counts say so wherever a
model reads text (mine's stats.json, evaluate's report) and point at the fix.

The query budget (model.max_query_tokens) cuts a long query (a case's facts, hundreds of words) to its first
N tokens before the pair is built, so the passage keeps max_length - N - 3 tokens instead of sharing the room
longest-first.
"""
from __future__ import annotations

from typing import Sequence

WARN_PAIRS = 0.10  # warn when more than this share of pairs is cut...
WARN_TOKENS = 0.05  # ...or this share of all tokens is lost


def cut_query(tokenizer, query: str, budget: int) -> str:
    """The query's first `budget` tokens, as text (cut at a token's end, so re-tokenizing gives those tokens)."""
    return counted_cut(tokenizer, query, budget)[0]


def counted_cut(tokenizer, query: str, budget: int) -> tuple[str, int]:
    """cut_query, and the tokens of the whole query (0 without a budget: then the query is not tokenized)."""
    if budget <= 0:
        return query, 0
    enc = tokenizer(query, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False)
    offsets = enc["offset_mapping"]
    return (query if len(offsets) <= budget else query[:offsets[budget - 1][1]]), len(offsets)


def cut_queries(tokenizer, queries: Sequence[str], budget: int) -> list[str]:
    """cut_query for each query; each distinct query is tokenized once (a group repeats it)."""
    if budget <= 0:
        return list(queries)
    done: dict[str, str] = {}
    for q in queries:
        if q not in done:
            done[q] = cut_query(tokenizer, q, budget)
    return [done[q] for q in queries]


def token_counts(tokenizer, texts: Sequence[str]) -> dict[str, int]:
    """Tokens of each distinct text, without special tokens."""
    unique = list(dict.fromkeys(texts))
    if not unique:
        return {}
    enc = tokenizer(unique, add_special_tokens=False, truncation=False, verbose=False)
    return {t: len(ids) for t, ids in zip(unique, enc["input_ids"])}


def kept(q: int, p: int, room: int) -> tuple[int, int]:
    """Tokens of query and passage that `longest_first` keeps in `room` (max_length minus the special tokens), as the
    Hugging Face tokenizers (Rust) compute it: the longer side is cut to fit beside the shorter; when even that does
    not fit, each side keeps half the room (the longer side the odd token)."""
    if q + p <= room:
        return q, p
    short, long_ = sorted((q, p))
    long_ = short if short > room else max(short, room - short)
    if short + long_ > room:
        short, long_ = room // 2, room // 2 + room % 2
    return (long_, short) if q > p else (short, long_)


def losses(q: int, p: int, room: int, budget: int = 0) -> tuple[int, int]:
    """(query tokens lost, passage tokens lost) of one pair: the query budget first, then longest_first."""
    q_budget = min(q, budget) if budget > 0 else q
    kept_q, kept_p = kept(q_budget, p, room)
    return q - kept_q, p - kept_p


def report(tokenizer, pairs: Sequence[tuple[str, str]], max_length: int, max_query_tokens: int = 0) -> dict:
    """Pairs cut, by side, and the share of their tokens lost."""
    counts = token_counts(tokenizer, [q for q, _ in pairs] + [p for _, p in pairs])
    room = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    cut = query_cut = passage_cut = lost = total = 0
    for q, p in pairs:
        nq, np_ = counts[q], counts[p]
        lq, lp = losses(nq, np_, room, max_query_tokens)
        cut += bool(lq or lp)
        query_cut += bool(lq)
        passage_cut += bool(lp)
        lost += lq + lp
        total += nq + np_
    n = len(pairs)
    return {"pairs": n, "max_length": max_length, "max_query_tokens": max_query_tokens, "pairs_cut": cut,
            "pairs_cut_share": round(cut / n, 4) if n else 0.0, "query_cut": query_cut, "passage_cut": passage_cut,
            "tokens_lost_share": round(lost / total, 4) if total else 0.0}


def summary(stats: dict) -> str:
    """One line: '12.5% of 1,600 pairs cut at max_length 256 (passage 190, query 10), 8.1% of tokens lost'."""
    return (f"{stats['pairs_cut_share']:.1%} of {stats['pairs']:,} (query, passage) pairs cut at max_length "
            f"{stats['max_length']} (passage cut in {stats['passage_cut']:,}, query in {stats['query_cut']:,}), "
            f"{stats['tokens_lost_share']:.1%} of their tokens lost")


def warning(stats: dict) -> str | None:
    """A warning naming the fix when much is cut; None when little is."""
    if stats["pairs_cut_share"] <= WARN_PAIRS and stats["tokens_lost_share"] <= WARN_TOKENS:
        return None
    fixes = []
    if stats["passage_cut"]:
        fixes.append("cut documents into passages that fit (data.chunking: paragraphs or tokens, data.chunk_size "
                     "below model.max_length minus the query and title) or raise model.max_length")
    if stats["query_cut"] > stats["pairs"] * WARN_PAIRS and not stats["max_query_tokens"]:
        fixes.append("give long queries a budget (model.max_query_tokens) so they cannot crowd the passage out")
    fix = "; ".join(fixes or ["raise model.max_length"])
    return f"warning: {summary(stats)}: the model never reads the cut text; {fix}"
