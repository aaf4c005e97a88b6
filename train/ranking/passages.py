"""The corpus as every command reads it: documents cut into passages in the tokens of the model's base."""
from __future__ import annotations

from crosstune.data.loading import load_corpus
from crosstune.data.types import Corpus
from crosstune.train.artifact.model import load_tokenizer
from crosstune.train.config import Config


def model_tokenizer(cfg: Config):
    return load_tokenizer(cfg.model.name, cfg.model.max_length)


def load_passages(cfg: Config, tokenizer=None) -> Corpus:
    """The corpus every command reads: with data.chunking, documents cut into passages counted in the tokens of
    model.name (the base the model was trained from: mine, train, evaluate and rerank cut alike)."""
    if cfg.data.chunking == "none" or cfg.data.chunk_tokenizer not in ("model", ""):
        return load_corpus(cfg.data)
    return load_corpus(cfg.data, tokenizer or model_tokenizer(cfg))
