"""kg-names: the KG's node names of a label's kinds as linked training sentences."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from spacy_kogner.cli import app

NODES = (
    "id\tname\tkind\nDisease::D1\tbreast cancer\tDisease\nSide Effect::C1\tHypotension\tSide Effect\n"
    "Side Effect::C2\tAspirin\tSide Effect\nCompound::DB1\tAspirin\tCompound\nSymptom::S1\tpain\tSymptom\n"
    "Symptom::S2\tchronic cough\tSymptom\nGene::1\tBRCA1\tGene\n"
)


def _names(tmp: Path, *args: str) -> tuple[int, str]:
    (tmp / "nodes.tsv").write_text(NODES, encoding="utf8")
    result = CliRunner().invoke(app, ["kg-names", *args, "--kg-nodes", str(tmp / "nodes.tsv")])
    return result.exit_code, result.output


def test_names_of_the_labels_kinds_become_linked_sentences(tmp_path: Path) -> None:
    out = tmp_path / "names" / "Disease.json"
    code, output = _names(tmp_path, "Disease", str(out), "--per-sentence", "2")
    assert code == 0, output
    records = json.loads(out.read_text(encoding="utf8"))
    listed = sorted(
        (" ".join(r["tokenized_text"][s : e + 1]), lbl, k)
        for r in records
        for (s, e, lbl), k in zip(r["ner"], r["kge"], strict=True)
    )
    # "Aspirin" is a Compound name too (a blocking kind), "pain" a stop name, BRCA1 a gene: left out
    assert listed == [
        ("Hypotension", "Disease", "Side Effect::C1"),
        ("breast cancer", "Disease", "Disease::D1"),
        ("chronic cough", "Disease", "Symptom::S2"),
    ]
    assert all(r["labels"] == ["Disease"] and r["corpus"] == "kg-names" for r in records)
    assert all(r["tokenized_text"][-1] == "." for r in records)
    stats = json.loads(out.with_suffix(".stats.json").read_text(encoding="utf8"))
    assert stats["by_kind"] == {"Disease": 1, "Symptom": 1, "Side Effect": 1}
    assert stats["sentences"] == 3  # a sentence lists names of one kind


def test_a_label_without_kg_kinds_or_unknown_is_a_clear_error(tmp_path: Path) -> None:
    code, output = _names(tmp_path, "cell_type", str(tmp_path / "x.json"))
    assert code != 0 and "links to no KG kind" in output
    code, output = _names(tmp_path, "Species", str(tmp_path / "y.json"))
    assert code != 0 and "unknown label 'Species'" in output
    assert not (tmp_path / "x.json").exists()


def test_holdout_leaves_out_a_seeded_fraction_of_each_kinds_nodes(tmp_path: Path) -> None:
    words = ["Alport", "Bartter", "Cushing", "Dravet", "Ehlers", "Fabry", "Gaucher", "Hunter", "Krabbe", "Leigh"]
    nodes = "id\tname\tkind\n" + "".join(f"Disease::D{i}\t{w} syndrome\tDisease\n" for i, w in enumerate(words))
    (tmp_path / "nodes.tsv").write_text(nodes, encoding="utf8")

    def listed(*args: str) -> set[str]:
        out = tmp_path / "names.json"
        result = CliRunner().invoke(
            app, ["kg-names", "Disease", str(out), "--kg-nodes", str(tmp_path / "nodes.tsv"), *args]
        )
        assert result.exit_code == 0, result.output
        return {k for r in json.loads(out.read_text(encoding="utf8")) for k in r["kge"]}

    every = listed()
    assert len(every) == 10
    kept = listed("--holdout", "0.3", "--seed", "1")
    assert len(kept) == 7 and kept < every
    assert listed("--holdout", "0.3", "--seed", "1") == kept  # the seed draws the held-out nodes
    assert json.loads((tmp_path / "names.stats.json").read_text(encoding="utf8"))["holdout"] == 0.3
    # drawn among the nodes a corpus links to: half of its two nodes, the others all kept
    dev = tmp_path / "dev.json"
    record = {"tokenized_text": ["Fabry", "syndrome", "and", "Leigh", "syndrome"],
              "ner": [[0, 1, "Disease"], [3, 4, "Disease"]], "kge": ["Disease::D5", "Disease::D9"]}  # fmt: skip
    dev.write_text(json.dumps([record]))
    kept = listed("--holdout", "0.5", "--holdout-from", str(dev))
    assert len(kept) == 9 and len(kept & {"Disease::D5", "Disease::D9"}) == 1
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    nodes = str(tmp_path / "nodes.tsv")
    args = ["kg-names", "Disease", str(tmp_path / "y.json"), "--holdout", "0.5", "--holdout-from", str(bad)]
    result = CliRunner().invoke(app, [*args, "--kg-nodes", nodes])
    assert result.exit_code != 0 and "bad.json" in result.output
    result = CliRunner().invoke(app, ["kg-names", "Disease", str(tmp_path / "x.json"), "--holdout", "1",
                                      "--kg-nodes", str(tmp_path / "nodes.tsv")])  # fmt: skip
    assert result.exit_code != 0 and "holdout must be in [0, 1)" in result.output
