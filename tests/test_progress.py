"""What reaches the terminal: progress on long steps, no library debug lines unless asked for."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from crosstune.data.bm25 import BM25Config, BM25Index
from crosstune.data.types import Doc
from crosstune.train.ranking.biencoder import BiEncoderScorer

ROOT = Path(__file__).resolve().parent.parent


def run_mine(tiny_model: str, root: Path, **env: str) -> str:
    """`crosstune mine` in its own process, as a user runs it: stdout and stderr together."""
    out = subprocess.run([sys.executable, "-m", "crosstune.train", "mine", "--config", str(ROOT / "configs" / "tiny.yaml"),
                          f"model.name={tiny_model}", f"run.root={root}", f"data.path={ROOT / 'data' / 'demo'}"],
                         capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", **env}, cwd=root.parent)
    assert out.returncode == 0, out.stderr
    return out.stdout + out.stderr


def test_mine_prints_no_bm25s_debug_lines_unless_asked(tiny_model, tmp_path):
    quiet = run_mine(tiny_model, tmp_path / "a")
    assert "mine | " in quiet and "DEBUG" not in quiet
    # the lines are there to hide: bm25s logs its index build at DEBUG, and CROSSTUNE_LOG=debug shows them
    loud = run_mine(tiny_model, tmp_path / "b", CROSSTUNE_LOG="debug")
    assert "DEBUG bm25s: Building index from" in loud


def test_long_steps_show_what_they_are_doing(tiny_model, tmp_path, capsys):
    corpus = {f"d{i}": Doc("Lease", f"The tenant pays rent number {i} monthly.") for i in range(40)}
    BM25Index.build(corpus, BM25Config(), progress=True)
    scorer = BiEncoderScorer(tiny_model, tmp_path / "cache", batch_size=4, progress=True)
    scorer.embed_passages([doc.text for doc in corpus.values()])
    err = capsys.readouterr().err
    assert "BM25: tokenizing passages" in err
    assert "bi-encoder: embedding passages" in err and "40/40" in err
