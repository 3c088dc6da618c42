"""The evaluation harness on hand-made spans and docs: exact vs relaxed, label mapping, report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import spacy
from spacy.language import Language
from spacy.tokens import Doc, Span

from spacy_kogner.data.labels import LabelInfo
from spacy_kogner.data.readers import Sentence
from spacy_kogner.data.readers import Span as GoldSpan
from spacy_kogner.evaluation.harness import corpus_labels, evaluate_nlp, gold_spans, predict
from spacy_kogner.evaluation.metrics import exact_scores, relaxed_scores
from spacy_kogner.evaluation.report import write_report

REPO = Path(__file__).resolve().parents[2]


def test_exact_counts_boundaries_and_labels() -> None:
    gold = [(0, 0, 2, "Disease"), (0, 5, 6, "Chemical"), (1, 3, 4, "Disease")]
    pred = [
        (0, 0, 2, "Disease"),  # exact hit
        (0, 5, 6, "Disease"),  # right boundaries, wrong label
        (1, 2, 4, "Disease"),  # overlaps gold, wrong boundary
    ]
    scores = exact_scores(gold, pred).as_dict()
    assert (scores["tp"], scores["fp"], scores["fn"]) == (1, 2, 2)
    assert scores["p"] == pytest.approx(100 / 3)
    assert scores["r"] == pytest.approx(100 / 3)
    assert scores["f"] == pytest.approx(100 / 3)
    per = scores["per_label"]
    assert (per["Disease"]["tp"], per["Disease"]["fp"], per["Disease"]["fn"]) == (1, 2, 1)
    assert (per["Chemical"]["tp"], per["Chemical"]["fp"], per["Chemical"]["fn"]) == (0, 0, 1)
    assert per["Chemical"]["f"] == 0.0


def test_relaxed_counts_overlaps_of_the_same_label_only() -> None:
    gold = [(0, 0, 2, "Disease"), (0, 5, 6, "Chemical"), (1, 3, 4, "Disease")]
    pred = [(0, 0, 2, "Disease"), (0, 5, 6, "Disease"), (1, 2, 4, "Disease")]
    relaxed = relaxed_scores(gold, pred)
    # Predictions: 2 of 3 overlap a Disease gold span; gold: both Disease spans are touched,
    # the Chemical one is not (only a Disease prediction covers it).
    assert relaxed["matched_pred"] == 2 and relaxed["fp"] == 1
    assert relaxed["matched_gold"] == 2 and relaxed["fn"] == 1
    assert relaxed["p"] == pytest.approx(200 / 3)
    assert relaxed["r"] == pytest.approx(200 / 3)
    assert relaxed["per_label"]["Chemical"]["r"] == 0.0
    # Relaxed is never below exact on the same spans.
    assert relaxed["f"] >= exact_scores(gold, pred).as_dict()["f"]


def test_relaxed_one_long_prediction_covering_two_gold_spans() -> None:
    gold = [(0, 0, 1, "GENE"), (0, 2, 3, "GENE")]
    pred = [(0, 0, 3, "GENE")]
    relaxed = relaxed_scores(gold, pred)
    assert relaxed["p"] == 100.0 and relaxed["r"] == 100.0
    assert exact_scores(gold, pred).as_dict()["f"] == 0.0


def test_empty_predictions_and_spans_in_other_sentences_do_not_match() -> None:
    gold = [(0, 0, 1, "Disease")]
    assert exact_scores(gold, []).as_dict()["f"] == 0.0
    assert relaxed_scores(gold, [(1, 0, 1, "Disease")])["f"] == 0.0


SENTENCES = [
    Sentence(["BRCA1", "causes", "breast", "cancer", "."], [GoldSpan(2, 4, "Disease"), GoldSpan(0, 1, "GENE")]),
    Sentence(["Tamoxifen", "helps", "."], [GoldSpan(0, 1, "Chemical")]),
]
TABLE = {
    "Disease": LabelInfo("disease"),
    "Chemical": LabelInfo("chemical"),
    "GENE": LabelInfo("gene or gene product"),
}
# What a fixed-label pipeline "predicts" for each sentence: a lookup by first token.
CANNED = {
    "BRCA1": [(2, 4, "disease"), (0, 1, "Other")],  # silver-style prompt label + an unknown label
    "Tamoxifen": [(0, 2, "Chemical")],  # right label, boundary one token too long
}


@Language.component("canned_ents")
def canned_ents(doc: Doc) -> Doc:
    """A stand-in fixed-label NER: the harness must map its labels and keep the gold tokens."""
    doc.ents = [Span(doc, s, e, label=lab) for s, e, lab in CANNED.get(doc[0].text, [])]
    return doc


def _canned_nlp() -> Language:
    nlp = spacy.blank("en")
    nlp.add_pipe("canned_ents")
    return nlp


def test_predict_maps_prompt_labels_and_drops_labels_the_corpus_lacks() -> None:
    labels = corpus_labels(SENTENCES)
    assert labels == ["Chemical", "Disease", "GENE"]
    pred, dropped = predict(_canned_nlp(), SENTENCES, labels, TABLE, batch_size=2)
    assert sorted(pred) == [(0, 2, 4, "Disease"), (1, 0, 2, "Chemical")]
    assert dropped == 1
    gold = gold_spans(SENTENCES, labels)
    exact = exact_scores(gold, pred, labels).as_dict()
    assert (exact["tp"], exact["fp"], exact["fn"]) == (1, 1, 2)
    assert relaxed_scores(gold, pred, labels)["matched_gold"] == 2


def test_evaluate_nlp_on_a_corpus_file_and_report(tmp_path: Path) -> None:
    corpus = tmp_path / "toy" / "test.tsv"
    corpus.parent.mkdir()
    corpus.write_text(
        "BRCA1\tB-GENE\ncauses\tO\nbreast\tB-Disease\ncancer\tI-Disease\n.\tO\n\n"
        "Tamoxifen\tB-Chemical\nhelps\tO\n.\tO\n",
        encoding="utf8",
    )
    row = evaluate_nlp(_canned_nlp(), corpus, TABLE, batch_size=8)
    assert row["test"] == "toy" and row["n_sentences"] == 2 and row["n_gold"] == 3
    assert row["exact"]["per_label"]["Disease"]["f"] == 100.0
    assert row["exact"]["per_label"]["Chemical"]["f"] == 0.0
    assert row["relaxed"]["per_label"]["Chemical"]["f"] == 100.0
    row.update({"system": "canned", "protocol": "paper", "train": "none", "profile": "test", "steps": 0})
    evals = tmp_path / "eval"
    evals.mkdir()
    (evals / "canned__toy.json").write_text(json.dumps(row), encoding="utf8")
    paths = write_report([evals], tmp_path / "results", REPO / "configs" / "evaluate.cfg")
    md = paths["md"].read_text(encoding="utf8")
    assert "| canned | paper | none | toy |" in md
    assert "paper KoGNER" in md and "BioBERT (supervised)" in md
    assert paths["png"].stat().st_size > 0
    assert json.loads(paths["json"].read_text(encoding="utf8"))["rows"][0]["system"] == "canned"


def test_report_summarises_seeds_with_their_spread(tmp_path: Path) -> None:
    def row(system: str, seed: int, f: float) -> dict:
        counts = {"p": f, "r": f, "f": f, "tp": 1, "fp": 0, "fn": 0, "per_label": {}}
        relaxed = {"p": f, "r": f, "f": f, "matched_pred": 1, "fp": 0, "matched_gold": 1, "fn": 0, "per_label": {}}
        return {"system": system, "protocol": "in-domain", "train": "NCBI-disease", "test": "NCBI-disease",
                "seed": seed, "steps": 10, "train_wall_s": 120.0 * seed, "linked_share": 0.25,
                "exact": counts, "relaxed": relaxed}  # fmt: skip

    evals = tmp_path / "eval"
    evals.mkdir()
    for name, r in {"b0_1": row("b0", 1, 70.0), "b0_2": row("b0", 2, 72.0), "mse_1": row("mse", 1, 71.0)}.items():
        (evals / f"{name}.json").write_text(json.dumps(r), encoding="utf8")
    md = write_report([evals], tmp_path / "results", REPO / "configs" / "evaluate.cfg")["md"].read_text()
    assert "## Over seeds" in md
    assert "| b0 | in-domain | NCBI-disease | NCBI-disease | 1,2 | 71.0 | 70.0–72.0 | 3.0 | 0.250 |" in md
    assert "| mse | in-domain | NCBI-disease | NCBI-disease | 1 | 71.0 | 71.0–71.0 | 2.0 | 0.250 |" in md


def test_evaluate_pipeline_runs_the_kogner_pipe_at_the_precision_asked(tmp_path: Path, make_nlp) -> None:
    from spacy_kogner.evaluation.harness import evaluate_pipeline

    make_nlp(labels=["Disease", "Chemical"]).to_disk(tmp_path / "pipe")
    corpus = tmp_path / "toy" / "test.tsv"
    corpus.parent.mkdir()
    corpus.write_text("Tamoxifen\tB-Chemical\nhelps\tO\n.\tO\n", encoding="utf8")
    row = evaluate_pipeline(tmp_path / "pipe", corpus, precision="bf16")
    assert row["precision"] == "bf16" and row["n_sentences"] == 1
    with pytest.raises(Exception, match="precision"):  # the override reaches the component
        evaluate_pipeline(tmp_path / "pipe", corpus, precision="fp16")
