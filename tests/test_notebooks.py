"""The notebooks run from top to bottom in their small configuration (CROSSTUNE_NOTEBOOK_SMOKE=1: a few steps, a
shallow rerank, the demo set), in a fresh kernel, and are stored without outputs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_notebooks_are_there_and_stored_without_outputs():
    assert [p.name for p in NOTEBOOKS] == ["legal_adaptation.ipynb", "quickstart.ipynb"]
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code), path.name
        assert "parameters" in code[0]["metadata"].get("tags", []), f"{path.name}: the first code cell sets the size"
        assert any("import crosstune" in "".join(c["source"]) or "from crosstune" in "".join(c["source"])
                   for c in code), path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_green(path, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("CROSSTUNE_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("CROSSTUNE_NOTEBOOK_ROOT", str(tmp_path / "runs"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # everything the notebooks load is local; never wait on a network
    book = nbformat.read(path, as_version=4)
    NotebookClient(book, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    # it really ran the pipeline: the evaluation it drew is on disk
    reports = list((tmp_path / "runs").glob("*/eval_test/report.md"))
    assert len(reports) == 1 and "## Biggest wins" in reports[0].read_text()
