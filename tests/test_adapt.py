"""`crosstune adapt`: a folder of documents to an exported, evaluated reranker; steps on a written config; resumable."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from crosstune.train.cli import main

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "data" / "demo"


def write_pdf(path: Path, title: str, text: str) -> None:
    """A two-page PDF with a running header, as exported contracts have (fpdf2's core font: latin-1 text)."""
    import fpdf

    class Contract(fpdf.FPDF):
        def header(self):
            self.set_font("Helvetica", size=8)
            self.cell(0, 8, "CONFIDENTIAL", align="C")
            self.ln(10)

    pdf = Contract()
    pdf.set_font("Helvetica", size=11)
    safe = text.encode("latin-1", "replace").decode("latin-1")
    half = len(safe) // 2
    for part in (f"{title}\n{safe[:half]}", safe[half:]):
        pdf.add_page()
        pdf.multi_cell(0, 6, part)
    pdf.output(str(path))


def write_docx(path: Path, title: str, text: str) -> None:
    import docx

    document = docx.Document()
    document.add_heading(title, level=1)
    document.add_paragraph(text)
    document.save(str(path))


@pytest.fixture(scope="module")
def documents(tmp_path_factory) -> Path:
    """The demo's legal passages written out as one document each, in turn a PDF, a DOCX and a .txt file, in two
    folders (ids: contracts/<id>, other/<id>)."""
    folder = tmp_path_factory.mktemp("docs")
    for i, line in enumerate((DEMO / "corpus.jsonl").read_text().splitlines()):
        row = json.loads(line)
        kind = "contracts" if row["_id"].startswith("contract") else "other"
        (folder / kind).mkdir(exist_ok=True)
        stem = folder / kind / row["_id"]
        if i % 3 == 0:
            write_pdf(stem.with_suffix(".pdf"), row["title"], row["text"])
        elif i % 3 == 1:
            write_docx(stem.with_suffix(".docx"), row["title"], row["text"])
        else:
            stem.with_suffix(".txt").write_text(f"{row['title']}\n\n{row['text']}\n", encoding="utf-8")
    return folder


def qrels_as_documents(split: str, out: Path) -> Path:
    """The demo's judgments with the documents' ids (the file's path below the folder, without .txt)."""
    lines = []
    for line in (DEMO / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]:
        q, d, s = line.split("\t")
        lines.append(f"{q}\t{'contracts' if d.startswith('contract') else 'other'}/{d}\t{s}")
    out.write_text("query-id\tcorpus-id\tscore\n" + "\n".join(lines) + "\n")
    return out


def adapt(documents: Path, tmp_path: Path, tiny_model: str, *extra: str) -> list[str]:
    return ["adapt", str(documents), "--queries", str(DEMO / "queries.jsonl"),
            "--qrels", str(qrels_as_documents("train", tmp_path / "train.tsv")),
            "--test-qrels", str(qrels_as_documents("test", tmp_path / "test.tsv")),
            "--budget", "10m", "--root", str(tmp_path / "runs"), "--name", "firm",
            f"model.name={tiny_model}", "data.chunk_tokenizer=words", "eval.biencoder=''", "train.max_steps=3",
            "model.max_length=96", "model.max_query_tokens=16", "data.chunk_size=64", "train.batch_size=2", "eval.batch_size=16", "train.precision=no",
            *extra]


def test_adapt_runs_every_step_on_its_written_config_and_resumes_where_it_stopped(documents, tmp_path, tiny_model,
                                                                                  capsys):
    args = adapt(documents, tmp_path, tiny_model)
    assert main(args) == 0
    out = capsys.readouterr().out
    run = tmp_path / "runs" / "firm"
    state = json.loads((run / "adapt.json").read_text())
    assert state["mode"] == "pseudo+judged" and len(state["done"]) == 8 and state["spent_s"] < 600
    # each step is an existing command on adapt.yaml, listed in commands.sh
    commands = (run / "commands.sh").read_text().splitlines()[3:]
    assert all(c.startswith("crosstune ") and f"--config {run / 'adapt.yaml'}" in c for c in commands)
    assert [c.split()[1] for c in commands] == ["mine", "train", "export", "mine", "train", "export", "export",
                                                "evaluate"]
    # every file was read: PDF, DOCX and text alike
    reading = json.loads((run / "pseudo" / "mined" / "stats.json").read_text())["reading"]
    assert reading == {"documents": 229, "read": {"pdf": 77, "docx": 76, "txt": 76}, "skipped": {}}
    # the warm-up trained on pseudo-queries; the judged phase started from its export; both planned in the budget
    assert json.loads((run / "pseudo" / "mined" / "stats.json").read_text())["judgments"] == "pseudo-queries"
    judged_cfg = (run / "judged" / "config.yaml").read_text()
    assert str(run / "pseudo" / "export") in judged_cfg
    for phase in ("pseudo", "judged"):
        plan = json.loads((run / phase / "plan.json").read_text())
        assert plan["steps"] == 3 and plan["capped_by"] == "train.max_steps" and plan["ended_by"] == "plan"
    # hf and onnx-int8 exports; the test split, which chose nothing, evaluated; the serve line printed
    for folder in ("export", "export-onnx-int8"):
        assert (run / "judged" / folder / "crosstune.json").is_file()
    report = json.loads((run / "judged" / "eval_test" / "report.json").read_text())
    assert report["queries"] == 30
    assert f"crosstune serve {run / 'judged' / 'export-onnx-int8'} --config {run / 'adapt.yaml'}" in out
    # adapt.yaml alone is the recipe (the overrides written in): rerank with it names a PDF hit's file and page
    assert main(["rerank", "--config", str(run / "adapt.yaml"), "--model", str(run / "judged" / "export"),
                 "--top", "100", "can the landlord raise the rent"]) == 0
    assert ".pdf, page " in capsys.readouterr().out
    # the onnx-int8 export serves: /search over real HTTP, a PDF hit carrying its file and page
    from test_serve import call, running

    from crosstune.train.config import load_config
    from crosstune.train.ranking.pipeline import RankingPipeline

    pipe = RankingPipeline.load(str(run / "judged" / "export-onnx-int8"), load_config(run / "adapt.yaml"), search=True)
    with running(pipe, searchable=True) as srv:
        status, body, _ = call(srv, "POST", "/search", {"query": "can the landlord raise the rent", "top_k": 20})
    assert status == 200 and body["results"]
    pdf_hits = [r for r in body["results"] if (r["source"] or "").endswith(".pdf")]
    assert pdf_hits and all(r["page"] >= 1 and r["last_page"] >= r["page"] for r in pdf_hits)
    # interrupted after training: the rerun does only what is left
    for name in ("export-onnx-int8", "eval_test"):
        import shutil

        shutil.rmtree(run / "judged" / name)
    state["done"] = state["done"][:6]
    (run / "adapt.json").write_text(json.dumps(state))
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and out.count("== adapt |") == 2
    assert (run / "judged" / "eval_test" / "report.json").is_file()


def test_adapt_refuses_bad_inputs_in_one_line(documents, tmp_path, tiny_model, capsys):
    assert main(["adapt", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["adapt", str(documents), "--queries", str(DEMO / "queries.jsonl")]) == 2
    assert "--queries and --qrels go together" in capsys.readouterr().err
    assert main(["adapt", str(documents), "--budget", "30", "--root", str(tmp_path)]) == 2
    assert "--budget '30'" in capsys.readouterr().err
    # other inputs under an existing run's name are refused, not mixed in
    args = adapt(documents, tmp_path, tiny_model)
    (tmp_path / "runs" / "firm").mkdir(parents=True)
    (tmp_path / "runs" / "firm" / "adapt.json").write_text(json.dumps({"inputs": {"path": "elsewhere"}}))
    assert main(args) == 2
    assert "was adapted from other inputs" in capsys.readouterr().err


def test_adapt_without_a_test_split_skips_the_evaluation_and_says_the_holdout_is_in_sample(documents, tmp_path,
                                                                                          tiny_model, capsys):
    args = adapt(documents, tmp_path, tiny_model)
    cut = args.index("--test-qrels")
    assert main(args[:cut] + args[cut + 2:]) == 0
    state = json.loads((tmp_path / "runs" / "firm" / "adapt.json").read_text())
    assert state["mode"] == "pseudo+judged" and len(state["done"]) == 7 and not any("evaluate" in d for d in state["done"])
    assert "its figures are in-sample" in capsys.readouterr().out
