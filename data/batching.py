"""Training groups (1 positive + k negatives), a seeded epoch order and the collate that tokenizes."""
from __future__ import annotations

import random
from typing import Sequence

import torch

from .truncation import counted_cut, cut_queries, kept
from .types import DataError


class GroupDataset(torch.utils.data.Dataset):
    """Mined rows -> (query, [positive, k negatives]).

    When a row holds more negatives than the group needs, each epoch draws a different subset,
    seeded by (seed, epoch, row) so a resumed run sees exactly the groups a straight run would.
    """

    def __init__(self, rows, group_size: int, seed: int = 0):
        if group_size < 2:
            raise DataError("train.group_size must be >= 2 (one positive and at least one negative)")
        # plain lists: row access on an Arrow table costs more than the whole collate
        self.rows = rows if isinstance(rows, list) else rows.to_list()
        self.group_size, self.seed, self.epoch = group_size, seed, 0
        have = min((len(r["negatives"]) for r in self.rows), default=0)
        if have < group_size - 1:
            raise DataError(f"train.group_size={group_size} needs {group_size - 1} negatives per row but the mined "
                             f"rows have {have}; lower train.group_size or raise mining.num_negatives")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple:
        """(query, [positive, *negatives]), plus the teacher's scores in that order when the rows have them."""
        row = self.rows[int(i)]
        negs = row["negatives"]
        k = self.group_size - 1
        # indices, not texts, are drawn so the teacher's scores follow; sampling range(n) picks the same positions
        # sampling the texts did, so groups (and resumed runs) are unchanged
        picked = random.Random(f"{self.seed}:{self.epoch}:{i}").sample(range(len(negs)), k) if len(negs) > k \
            else range(len(negs))
        group = [row["positive"], *(negs[j] for j in picked)]
        if "teacher_scores" not in row:
            return row["query"], group
        t = row["teacher_scores"]
        return row["query"], group, [t[0], *(t[1 + j] for j in picked)]


class EpochSampler(torch.utils.data.Sampler):
    """A permutation that depends only on (seed, epoch): the data order survives a resume."""

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())


class GroupCollator:
    """Tokenize (query, passage) pairs once per batch; labels mark the positive at position 0.

    With `chunk` > 0 the pairs are sorted by length and padded in chunks of that many sequences:
    on a CPU padding is real work, and a batch padded to its longest passage wastes much of it.
    The model then runs once per chunk and `order` puts the logits back in group order.
    """

    def __init__(self, tokenizer, max_length: int, chunk: int = 0, max_query_tokens: int = 0):
        self.tokenizer, self.max_length, self.chunk = tokenizer, max_length, chunk
        self.max_query_tokens = max_query_tokens

    def __call__(self, batch: Sequence[tuple[str, list[str]]]) -> dict:
        queries = cut_queries(self.tokenizer, [item[0] for item in batch for _ in item[1]], self.max_query_tokens)
        passages = [d for item in batch for d in item[1]]
        group = len(batch[0][1])
        labels = torch.zeros(len(batch), group)
        labels[:, 0] = 1.0
        # the teacher's scores ride along in group order, so a loss sees them beside the logits of the same pairs
        extra = {"teacher": torch.tensor([item[2] for item in batch], dtype=torch.float32)} if len(batch[0]) > 2 else {}
        if self.chunk <= 0 or self.chunk >= len(queries):
            return {"chunks": [tokenize_pairs(self.tokenizer, queries, passages, self.max_length)], "labels": labels,
                    **extra}
        enc = self.tokenizer(queries, passages, truncation="longest_first", max_length=self.max_length)
        by_length = sorted(range(len(queries)), key=lambda i: len(enc["input_ids"][i]))
        chunks = []
        for start in range(0, len(by_length), self.chunk):
            rows = [{k: enc[k][i] for k in enc} for i in by_length[start:start + self.chunk]]
            chunks.append(dict(self.tokenizer.pad(rows, return_tensors="pt")))
        order = torch.empty(len(by_length), dtype=torch.long)
        order[torch.tensor(by_length)] = torch.arange(len(by_length))
        return {"chunks": chunks, "order": order, "labels": labels, **extra}


def group_logits(model, batch: dict, group: int) -> torch.Tensor:
    """Logits [batch, group] from one forward pass per chunk, back in the collator's pair order."""
    logits = torch.cat([model(**chunk).logits.view(-1) for chunk in batch["chunks"]])
    if "order" in batch:
        logits = logits[batch["order"]]
    return logits.view(-1, group)


def tokenize_pairs(tokenizer, queries: list[str], passages: list[str], max_length: int,
                   max_query_tokens: int = 0) -> dict:
    # a query budget first (data/truncation.py), so a long query cannot crowd the passage out; then longest_first
    # trims the longer side and never fails on a long query, unlike only_second
    queries = cut_queries(tokenizer, queries, max_query_tokens)
    return dict(tokenizer(queries, passages, truncation="longest_first", max_length=max_length,
                          padding=True, return_tensors="pt"))


def encode_pairs(tokenizer, queries: list[str], passages: list[str], max_length: int,
                 max_query_tokens: int = 0) -> tuple[dict, list[int]]:
    """tokenize_pairs' features and each pair's tokens before any cut (the whole query, the passage and the special
    tokens: what a server reports as usage and checks for truncate=false), from one tokenizer call per pair: the
    pairs are tokenized uncut, then cut as tokenize_pairs cuts them (the query budget on the text first, then
    longest_first on the ids, as data/truncation.py's `kept` computes it)."""
    if not getattr(tokenizer, "is_fast", False) or getattr(tokenizer, "truncation_side", "right") != "right":
        # where each side starts needs a Rust tokenizer's sequence ids, and a left cut is not the one done below
        uncut = tokenizer(queries, passages, truncation=False, verbose=False)
        return tokenize_pairs(tokenizer, queries, passages, max_length, max_query_tokens), [
            len(ids) for ids in uncut["input_ids"]]
    done: dict[str, tuple[str, int]] = {}  # each distinct query cut once (a request repeats it for every text)
    for q in queries:
        if q not in done:
            done[q] = counted_cut(tokenizer, q, max_query_tokens)
    enc = tokenizer([done[q][0] for q in queries], passages, truncation=False, verbose=False)
    room = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    rows: dict[str, list] = {key: [] for key in enc.keys()}
    lengths = []
    for i, q in enumerate(queries):
        sides = enc.sequence_ids(i)  # 0: a query token, 1: a passage token, None: a special token
        n_query, n_passage = sides.count(0), sides.count(1)
        spans = dropped(sides, (n_query, n_passage), kept(n_query, n_passage, room))
        for key, values in enc.items():
            rows[key].append(without(values[i], spans))
        # a budget cut the query's text before the call: count the whole query, as an uncut pair has it
        lengths.append(len(sides) - n_query + (done[q][1] or n_query))
    return dict(tokenizer.pad(rows, padding=True, return_tensors="pt")), lengths


def dropped(sides: list, lengths: tuple[int, int], keep: tuple[int, int]) -> list[tuple[int, int]]:
    """The [start, stop) positions longest_first removes: each side's tokens past those it keeps (a side's tokens
    are contiguous in a pair, between the special tokens)."""
    spans = []
    for side, (n, k) in enumerate(zip(lengths, keep)):
        if k < n:
            start = sides.index(side) + k
            spans.append((start, start + n - k))
    return sorted(spans)


def without(values: list, spans: list[tuple[int, int]]) -> list:
    if not spans:
        return values
    out, at = [], 0
    for start, stop in spans:
        out += values[at:start]
        at = stop
    return out + values[at:]
