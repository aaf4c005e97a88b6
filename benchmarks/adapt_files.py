"""`crosstune adapt` on legalbench-rag's documents written out as PDF and DOCX files, under 10- and 30-minute budgets.

    python benchmarks/adapt_files.py                   # write the files (once), adapt at 10m and 30m, write the table
    python benchmarks/adapt_files.py --budgets 10m     # one budget
    python benchmarks/adapt_files.py --table-only      # the table from the runs there are

The files: legalbench-rag's ContractNLI and PrivacyQA documents (102 NDAs and privacy policies, 1.2 M characters),
rebuilt whole (benchmarks/documents.py's view), every other one a PDF (fpdf2, DejaVu Serif, a running header with the
document's name and a "Page N of M" footer, as exported contracts have) and the rest DOCX (python-docx, one paragraph a
line). MAUD's 150 merger agreements are left out: 52 M characters, ~17,000 pages, which no reader turns back into text
inside a 10-minute budget on 2 cores. The queries are those subsets' train queries (--qrels: a holdout of them
chooses) and dev queries (--test-qrels: reported, chose nothing), their judgments lifted to the documents.
Each budget is one `crosstune adapt` command; its wall time is measured around it.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, machine, write_section  # noqa: E402
from benchmarks.documents import VIEW, build_view  # noqa: E402
from crosstune.data.readers import read_beir_corpus, read_qrels_tsv  # noqa: E402

FILES = ROOT / "checkpoints" / "legalbench-files"
SUBSETS = ("contractnli", "privacy_qa")
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf"


def write_pdf(path: Path, title: str, text: str) -> None:
    from fpdf import FPDF

    class Page(FPDF):
        def header(self):
            self.set_font("serif", size=8)
            self.cell(0, 8, title[:90], align="C")
            self.ln(10)

        def footer(self):
            self.set_y(-12)
            self.set_font("serif", size=8)
            self.cell(0, 8, f"Page {self.page_no()} of {{nb}}", align="C")

    pdf = Page()
    pdf.add_font("serif", fname=FONT)
    pdf.set_font("serif", size=10)
    pdf.add_page()
    for line in text.split("\n"):
        pdf.multi_cell(0, 5, line or " ", new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))


def write_docx(path: Path, title: str, text: str) -> None:
    import docx

    document = docx.Document()
    document.add_heading(title, level=1)
    for line in text.split("\n"):
        document.add_paragraph(line)
    document.save(str(path))


def file_id(doc: str) -> str:
    return doc.replace(" ", "_")


def write_files() -> Path:
    """FILES/docs/<subset>/<document>.pdf|.docx, queries.jsonl, train.tsv and dev.tsv (document judgments)."""
    build_view(VIEW)
    documents = {d: doc for d, doc in read_beir_corpus(VIEW / "corpus.jsonl").items() if d.split("/")[0] in SUBSETS}
    folder = FILES / "docs"
    for i, (doc_id, doc) in enumerate(sorted(documents.items())):
        stem = folder / file_id(doc_id)
        stem.parent.mkdir(parents=True, exist_ok=True)
        path = stem.with_name(stem.name + (".pdf" if i % 2 == 0 else ".docx"))
        if not path.exists():
            (write_pdf if path.suffix == ".pdf" else write_docx)(path, doc.title, doc.text)
    for split in ("train", "dev"):
        rows = [f"{q}\t{file_id(d)}\t{s}" for q, docs in read_qrels_tsv(VIEW / "qrels" / f"{split}.tsv").items()
                for d, s in docs.items() if d in documents]
        (FILES / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    (FILES / "queries.jsonl").write_bytes((VIEW / "queries.jsonl").read_bytes())
    pdfs, docxs = len(list(folder.rglob("*.pdf"))), len(list(folder.rglob("*.docx")))
    print(f"adapt_files | {pdfs} PDF and {docxs} DOCX files under {folder}")
    return folder


def adapt(budget: str) -> dict:
    name = f"legalbench-files-{budget}"
    args = [sys.executable, "-m", "crosstune.train", "adapt", str(FILES / "docs"), "--queries",
            str(FILES / "queries.jsonl"), "--qrels", str(FILES / "train.tsv"), "--test-qrels", str(FILES / "dev.tsv"),
            "--budget", budget, "--name", name]
    print("adapt_files | " + " ".join(args[2:]), flush=True)
    t0 = time.time()
    subprocess.run(args, check=True, cwd=ROOT)
    wall = time.time() - t0
    run = ROOT / "checkpoints" / name
    result = {"budget": budget, "wall_s": round(wall, 1), "state": json.loads((run / "adapt.json").read_text())}
    (run / "wall.json").write_text(json.dumps(result, indent=2))
    return result


def biencoder_alone(budget: str) -> dict:
    """The zero-shot bi-encoder's ranking of the same test split: `crosstune evaluate` of the adapted export with the
    bi-encoder's weight at 0.99 (the cross-encoder's 0.01 only breaks its ties), into eval_test_biencoder/."""
    run = ROOT / "checkpoints" / f"legalbench-files-{budget}"
    out = run / "judged" / "eval_test_biencoder"
    if not (out / "report.json").is_file():
        subprocess.run([sys.executable, "-m", "crosstune.train", "evaluate", "--config", str(run / "adapt.yaml"),
                        "--model", str(run / "judged" / "export"), "--split", "test", "--output", str(out),
                        "--overwrite", "eval.fusion_weight=0", "eval.biencoder_weight=0.99"], check=True, cwd=ROOT)
    return json.loads((out / "report.json").read_text())


def row(budget: str) -> str | None:
    run = ROOT / "checkpoints" / f"legalbench-files-{budget}"
    if not (run / "wall.json").is_file():
        return None
    wall = json.loads((run / "wall.json").read_text())
    report = json.loads((run / "judged" / "eval_test" / "report.json").read_text())
    plans = [json.loads((run / p / "plan.json").read_text()) for p in ("pseudo", "judged")]
    ndcg = report["metrics"]["nDCG@10"]
    # the holdout may tune both fusion weights to 0: "reranked" is then the cross-encoder alone
    alone = ndcg.get("cross-encoder", ndcg["reranked"] if not report["fusion_weight"] and not report["biencoder_weight"]
                     else None)
    bi = biencoder_alone(budget)["metrics"]["nDCG@10"]["reranked"]
    cells = [f"{v:.3f}" if v is not None else "-" for v in (ndcg["BM25"], bi, alone, ndcg["reranked"])]
    cells[-1] += f" (weights BM25 {report['fusion_weight']}, bi-encoder {report['biencoder_weight']})"
    p = report["p_values"]["reranked"]["nDCG@10"]
    return (f"| {budget} | {wall['wall_s'] / 60:.1f} min | {plans[0]['ran_steps']} + {plans[1]['ran_steps']} | "
            + " | ".join(cells) + f" | {p:.2g} | {report['level']} |")


def table(budgets: list[str]) -> str:
    rows = [r for b in budgets if (r := row(b))]
    return "\n".join([
        f"Ran on: {machine()}, {time.strftime('%Y-%m-%d')}. legalbench-rag's ContractNLI and PrivacyQA documents as "
        "PDF and DOCX files (benchmarks/adapt_files.py: 51 PDF + 51 DOCX, running headers and page footers), "
        "`crosstune adapt` with the subsets' train queries (--qrels; a holdout of them chose) and dev queries "
        "(--test-qrels: reported here, out-of-sample). nDCG@10 on dev.", "",
        "| budget | wall (the whole command) | steps: pseudo-queries + judged | BM25 | bi-encoder zero-shot | "
        "cross-encoder alone | fused | p fused vs BM25 | level |",
        "|---|---|---|---|---|---|---|---|---|", *rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", default="10m,30m")
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    budgets = args.budgets.split(",")
    if not args.table_only:
        write_files()
        for b in budgets:
            if row(b) is None:
                adapt(b)
    text = table(budgets)
    print(text)
    write_section("Your own files: `crosstune adapt` (`python benchmarks/adapt_files.py`)", text)


if __name__ == "__main__":
    main()
