"""The pooled corpus: gold corpora keep their label sets, silver only for kinds no gold label prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spacy_kogner.cli import app
from spacy_kogner.config import ConfigError
from spacy_kogner.data.labels import load_label_table
from spacy_kogner.data.pooled import PooledSettings, uncovered_kinds
from spacy_kogner.data.readers import Sentence, Span, read_gliner_json, write_gliner_json
from spacy_kogner.data.silver import matched_kinds

NODES = "id\tname\tkind\nCompound::DB1\tLithium\tCompound\nCompound::DB2\tProgesterone\tCompound\n" \
    "Pharmacologic Class::N1\tProgesterone\tPharmacologic Class\nAnatomy::U1\tbrain\tAnatomy\n" \
    "Disease::D1\tbreast cancer\tDisease\nGene::1\tBRCA1\tGene\n"  # fmt: skip


def _gold(folder: Path, corpus: str, sents: list[Sentence]) -> None:
    folder.mkdir(parents=True)
    for split in ("train", "dev"):
        write_gliner_json(sents, folder / f"{split}.json", extras=False)


@pytest.fixture()
def gold_dirs(tmp_path: Path) -> Path:
    ncbi = [
        Sentence("breast cancer spreads to the brain .".split(), [Span(0, 2, "Disease")], "NCBI-disease"),
        Sentence("lithium and progesterone in the brain".split(), [], "NCBI-disease"),
    ]
    cdr = [Sentence("lithium causes brain damage .".split(), [Span(0, 1, "Chemical"), Span(2, 4, "Disease")], "BC5CDR")]
    _gold(tmp_path / "gold" / "NCBI-disease", "NCBI-disease", ncbi)
    _gold(tmp_path / "gold" / "BC5CDR", "BC5CDR", cdr)
    (tmp_path / "nodes.tsv").write_text(NODES, encoding="utf8")
    return tmp_path


def test_uncovered_kinds_are_decided_by_prompt() -> None:
    table = load_label_table()
    prompts = {"Compound": "chemical", "Anatomy": "anatomy", "Gene": "gene or gene product"}
    assert uncovered_kinds(["Disease", "Chemical"], prompts, table) == ["Anatomy", "Gene"]
    assert uncovered_kinds(["Disease"], prompts, table) == ["Compound", "Anatomy", "Gene"]
    # a blocking kind already in use is not listed twice; the others come first
    assert matched_kinds(["Compound", "Anatomy"], ["Disease", "Compound", "Gene"]) == [
        "Disease",
        "Gene",
        "Compound",
        "Anatomy",
    ]


def _run(
    tmp: Path, corpora: str, silver_negatives: str = "corpus", names: int = 0, fill: bool = False
) -> tuple[list, dict]:
    out = tmp / f"pooled-{corpora}"
    cfg = tmp / "pooled.cfg"
    cfg.write_text(
        "[pooled]\n"
        'corpora = ["NCBI-disease", "BC5CDR"]\n'
        f'gold_dir = "{tmp}/gold/{{corpus}}"\n'
        'silver = [["Compound", "chemical"], ["Anatomy", "anatomy"], ["Pharmacologic Class", "pharmacologic class"]]\n'
        'blocking_kinds = ["Disease", "Compound", "Gene"]\n'
        f'silver_negatives = "{silver_negatives}"\n'
        f"kg_names_per_kind = {names}\nnames_per_sentence = 2\n"
        f"seed = 1\nsilver_fill = {str(fill).lower()}\n",
        encoding="utf8",
    )
    result = CliRunner().invoke(
        app,
        ["pooled-corpus", str(out), "--config", str(cfg), "--corpora", corpora, "--kg-nodes", str(tmp / "nodes.tsv")],
    )
    assert result.exit_code == 0, result.output
    return read_gliner_json(out / "train.json"), json.loads((out / "stats.json").read_text(encoding="utf8"))


def test_pool_keeps_label_sets_and_adds_silver_for_uncovered_kinds(gold_dirs: Path) -> None:
    train, stats = _run(gold_dirs, "NCBI-disease,BC5CDR")
    # BC5CDR prompts "chemical": no Compound silver; "progesterone" is a Compound name, so it is no
    # Pharmacologic Class silver either (blocked); "brain" is anatomy everywhere
    assert stats["silver_kinds"] == ["Anatomy", "Pharmacologic Class"]
    spans = [[(" ".join(s.tokens[x.start : x.end]), x.label) for x in s.spans] for s in train]
    assert spans[0] == [("breast cancer", "Disease"), ("brain", "anatomy")]
    assert spans[1] == [("brain", "anatomy")]
    # the gold span "brain damage" keeps its label; "brain" inside it is its own (nested) silver span
    assert ("brain damage", "Disease") in spans[2] and ("lithium", "Chemical") in spans[2]
    records = json.loads((gold_dirs / "pooled-NCBI-disease,BC5CDR" / "train.json").read_text(encoding="utf8"))
    assert records[0]["labels"] == ["Disease", "anatomy", "pharmacologic class"]
    assert records[2]["labels"] == ["Chemical", "Disease", "anatomy", "pharmacologic class"]
    dev = json.loads((gold_dirs / "pooled-NCBI-disease,BC5CDR" / "dev.json").read_text(encoding="utf8"))
    assert all(x[2] in {"Disease", "Chemical"} for r in dev for x in r["ner"])  # dev: gold only
    assert {tuple(r["labels"]) for r in dev} == {("Disease",), ("Chemical", "Disease")}


def test_matched_silver_negatives_offer_a_silver_prompt_only_where_it_matched(gold_dirs: Path) -> None:
    _run(gold_dirs, "NCBI-disease", silver_negatives="matched")
    records = json.loads((gold_dirs / "pooled-NCBI-disease" / "train.json").read_text(encoding="utf8"))
    # "breast cancer ... brain": anatomy matched, no chemical or pharmacologic class in it
    assert records[0]["labels"] == ["Disease", "anatomy"]
    assert records[1]["labels"] == ["Disease", "anatomy", "chemical"]
    stats = json.loads((gold_dirs / "pooled-NCBI-disease" / "stats.json").read_text(encoding="utf8"))
    # the per-corpus sets still list every label a corpus's sentences may carry
    assert stats["label_sets"]["NCBI-disease"] == ["Disease", "chemical", "anatomy", "pharmacologic class"]


def test_silver_fill_labels_a_covered_kind_in_the_corpora_that_do_not_annotate_it(gold_dirs: Path) -> None:
    """BC5CDR covers "chemical", NCBI-disease does not annotate chemicals: with ``silver_fill`` the KG
    compounds of NCBI-disease sentences become ``Chemical`` spans (the pool's gold label), offered
    only where they matched; BC5CDR's own sentences keep their gold chemicals alone."""
    train, stats = _run(gold_dirs, "NCBI-disease,BC5CDR", silver_negatives="matched", fill=True)
    spans = [[(" ".join(s.tokens[x.start : x.end]), x.label, x.kge) for x in s.spans] for s in train]
    # "progesterone" is a Compound first (a blocking kind), not a Pharmacologic Class
    assert spans[1] == [
        ("lithium", "Chemical", "Compound::DB1"),
        ("progesterone", "Chemical", "Compound::DB2"),
        ("brain", "anatomy", "Anatomy::U1"),
    ]
    assert ("lithium", "Chemical", None) in spans[2] and ("lithium", "Chemical", "Compound::DB1") not in spans[2]
    assert stats["fill_spans"] == {"NCBI-disease": {"Chemical": 2}}
    assert stats["label_sets"]["NCBI-disease"] == ["Disease", "anatomy", "pharmacologic class", "Chemical"]
    records = json.loads((gold_dirs / "pooled-NCBI-disease,BC5CDR" / "train.json").read_text(encoding="utf8"))
    assert records[0]["labels"] == ["Disease", "anatomy"]  # no compound matched: Chemical not offered
    assert records[1]["labels"] == ["Disease", "Chemical", "anatomy"]
    # off (the default): NCBI-disease sentences get no chemical spans
    train, stats = _run(gold_dirs, "NCBI-disease,BC5CDR", silver_negatives="matched")
    assert not [x for x in train[1].spans if x.label == "Chemical"] and stats["fill_spans"] == {}


def test_leave_one_out_pool_brings_in_silver_for_the_held_out_labels(gold_dirs: Path) -> None:
    train, stats = _run(gold_dirs, "NCBI-disease")
    # without BC5CDR nothing prompts "chemical": lithium and progesterone become chemical silver
    assert stats["silver_kinds"] == ["Compound", "Anatomy", "Pharmacologic Class"]
    assert [(" ".join(s.tokens[x.start : x.end]), x.label, x.kge) for s in train[1:] for x in s.spans] == [
        ("lithium", "chemical", "Compound::DB1"),
        ("progesterone", "chemical", "Compound::DB2"),
        ("brain", "anatomy", "Anatomy::U1"),
    ]


def test_dev_silver_holds_the_silver_spans_of_the_dev_sentences_alone(gold_dirs: Path) -> None:
    """The calibration split of the silver-only prompts: the dev sentences with a silver match, their
    gold spans dropped, each prompted as in training (matched: only the kinds found in it)."""
    _run(gold_dirs, "NCBI-disease", silver_negatives="matched")
    folder = gold_dirs / "pooled-NCBI-disease"
    records = json.loads((folder / "dev_silver.json").read_text(encoding="utf8"))
    spans = [sorted((" ".join(r["tokenized_text"][s : e + 1]), lbl) for s, e, lbl in r["ner"]) for r in records]
    assert sorted(spans) == [
        [("brain", "anatomy")],
        [("brain", "anatomy"), ("lithium", "chemical"), ("progesterone", "chemical")],
    ]
    assert sorted(r["labels"] for r in records) == [["anatomy"], ["anatomy", "chemical"]]
    stats = json.loads((folder / "stats.json").read_text(encoding="utf8"))
    assert stats["sentences"]["dev_silver"] == 2 and stats["dev_silver_spans"] == {"anatomy": 2, "chemical": 2}
    # "corpus": every silver prompt in use is offered in every calibration sentence
    _run(gold_dirs, "NCBI-disease,BC5CDR")
    records = json.loads((gold_dirs / "pooled-NCBI-disease,BC5CDR" / "dev_silver.json").read_text(encoding="utf8"))
    assert {tuple(r["labels"]) for r in records} == {("anatomy", "pharmacologic class")}


def test_missing_gold_split_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "pooled.cfg"
    cfg.write_text(
        f'[pooled]\ncorpora = ["X"]\ngold_dir = "{tmp_path}/{{corpus}}"\nsilver = []\nblocking_kinds = []\n'
        'silver_negatives = "corpus"\nkg_names_per_kind = 0\nnames_per_sentence = 5\nseed = 1\n',
        encoding="utf8",
    )
    result = CliRunner().invoke(app, ["pooled-corpus", str(tmp_path / "out"), "--config", str(cfg)])
    assert result.exit_code != 0
    assert "has no train split" in result.output


NAMES_OFF = {"kg_names_per_kind": 0, "names_per_sentence": 5, "seed": 0}


def test_settings_are_checked() -> None:

    with pytest.raises(ConfigError, match="gold_dir"):
        PooledSettings(["A"], "x", silver=[], blocking_kinds=[], silver_negatives="corpus", **NAMES_OFF)
    with pytest.raises(ConfigError, match="kind, prompt"):
        PooledSettings(["A"], "{corpus}", [["Anatomy"]], blocking_kinds=[], silver_negatives="corpus", **NAMES_OFF)
    with pytest.raises(ConfigError, match="silver_negatives"):
        PooledSettings(["A"], "{corpus}", [], blocking_kinds=[], silver_negatives="some", **NAMES_OFF)


def test_kg_name_sentences_list_the_graphs_names_of_the_kinds_in_use(gold_dirs: Path) -> None:
    train, stats = _run(gold_dirs, "NCBI-disease", silver_negatives="matched", names=10)
    names = [s for s in train if s.corpus == "kg-names"]
    # without BC5CDR: chemical (Lithium, Progesterone), anatomy (brain); "Progesterone" the
    # Pharmacologic Class is blocked by the Compound of that name, so that kind lists nothing
    listed = sorted((" ".join(s.tokens[x.start : x.end]), x.label, x.kge) for s in names for x in s.spans)
    assert listed == [
        ("Lithium", "chemical", "Compound::DB1"),
        ("Progesterone", "chemical", "Compound::DB2"),
        ("brain", "anatomy", "Anatomy::U1"),
    ]
    assert any(s.tokens[-1] == "." and "," in s.tokens for s in names)  # two names per sentence
    assert stats["name_spans"] == {"anatomy": 1, "chemical": 2}
    records = json.loads((gold_dirs / "pooled-NCBI-disease" / "train.json").read_text(encoding="utf8"))
    assert sorted(tuple(r["labels"]) for r in records if r["corpus"] == "kg-names") == [("anatomy",), ("chemical",)]
    assert PooledSettings(["A"], "{corpus}", [], [], "matched", kg_names_per_kind=0, names_per_sentence=1, seed=0)
    with pytest.raises(ConfigError, match="names_per_sentence"):
        PooledSettings(["A"], "{corpus}", [], [], "matched", kg_names_per_kind=3, names_per_sentence=0, seed=0)
