"""Silver builder (KG-name matching) and its evaluation; build-corpus / convert / link-report CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spacy_kogner.cli import app
from spacy_kogner.data.labels import KindInfo
from spacy_kogner.data.linking import LinkingSettings
from spacy_kogner.data.readers import Sentence, Span, read_corpus
from spacy_kogner.data.silver import SilverMatcher, SilverSettings, evaluate_silver

NODES = [
    ("Disease::1", "breast cancer", "Disease"),
    ("Side Effect::1", "Breast cancer metastatic", "Side Effect"),
    ("Side Effect::2", "Cancer", "Side Effect"),
    ("Symptom::1", "Huntington Disease", "Symptom"),
    ("Symptom::2", "Adrenoleukodystrophy", "Symptom"),
    ("Compound::1", "Lithium", "Compound"),
    ("Gene::1", "WAS", "Gene"),
    ("Gene::2", "IL2", "Gene"),
    ("Gene::3", "ACE", "Gene"),
    ("Anatomy::1", "breast", "Anatomy"),
]
KINDS = {
    "Disease": KindInfo("disease", "Disease"),
    "Side Effect": KindInfo("disease", "Disease"),
    "Symptom": KindInfo("disease", "Disease"),
    "Compound": KindInfo("chemical", "Chemical"),
    "Gene": KindInfo("gene or gene product", "GENE"),
}


@pytest.fixture(scope="module")
def matcher() -> SilverMatcher:
    settings = replace(SilverSettings.from_config(), stop_names=["cancer"])
    settings.kinds = ["Disease", "Symptom", "Side Effect", "Compound", "Gene"]
    ids, names, kinds = zip(*NODES, strict=True)
    return SilverMatcher(ids, names, kinds, KINDS, settings, LinkingSettings.from_config())


def spans_of(sent: Sentence) -> list[tuple[str, str, str | None]]:
    return [(sent.text_of(s), s.label, s.kge) for s in sent.spans]


def test_longest_match_and_normalisation(matcher: SilverMatcher) -> None:
    (s,) = matcher.annotate([Sentence("Metastatic breast cancers and Huntington ' s disease .".split())])
    assert spans_of(s) == [
        ("breast cancers", "disease", "Disease::1"),
        ("Huntington ' s disease", "disease", "Symptom::1"),
    ]
    assert all(sp.match == "silver-dictionary" for sp in s.spans)


def test_case_and_stop_names(matcher: SilverMatcher) -> None:
    (s,) = matcher.annotate([Sentence("It was cancer ; WAS and IL-2 , ace inhibitors .".split())])
    # "was" is not the gene WAS (short names match case-sensitively); "cancer" is stop-listed;
    # "IL-2" matches IL2 through the compact key; lower-case "ace" is not ACE; Anatomy not selected
    assert spans_of(s) == [
        ("WAS", "gene or gene product", "Gene::1"),
        ("IL-2", "gene or gene product", "Gene::2"),
    ]


def test_abbreviations_propagate(matcher: SilverMatcher) -> None:
    sents = [
        Sentence("Boys with adrenoleukodystrophy ( ALD ) were seen .".split(), [], "C", "d1"),
        Sentence("ALD is rare .".split(), [], "C", "d1"),
        Sentence("ALD means something else here .".split(), [], "C", "d2"),
    ]
    out = matcher.annotate(sents)
    assert ("ALD", "disease", "Symptom::2") in spans_of(out[0])
    assert spans_of(out[1]) == [("ALD", "disease", "Symptom::2")]
    assert out[1].spans[0].match == "silver-abbreviation"
    assert spans_of(out[2]) == []  # new document: the definition does not carry over


def test_gold_spans_are_replaced(matcher: SilverMatcher) -> None:
    gold = [Sentence(["lithium", "x"], [Span(1, 2, "Chemical")], "NCBI")]
    (s,) = matcher.annotate(gold, corpus="silver-NCBI")
    assert s.corpus == "silver-NCBI" and spans_of(s) == [("lithium", "chemical", "Compound::1")]
    assert gold[0].spans == [Span(1, 2, "Chemical")]  # input untouched


def test_evaluate_silver() -> None:
    kind_of = {n: k for n, _, k in NODES}
    gold = [
        Sentence("a b c d".split(), [Span(0, 1, "Disease"), Span(2, 4, "Disease")], "G"),
        Sentence("e f".split(), [Span(0, 1, "Chemical")], "G"),
    ]
    silver = [
        Sentence(
            "a b c d".split(),
            [
                Span(0, 1, "disease", "Disease::1"),
                Span(2, 3, "disease", "Symptom::1"),
                Span(1, 2, "gene", "Gene::1"),
            ],
            "S",
        ),  # fmt: skip
        Sentence(
            "e f".split(),
            [Span(0, 1, "chemical", "Compound::1"), Span(1, 2, "disease", "Side Effect::2")],
            "S",
        ),
    ]
    ev = evaluate_silver(silver, gold, kind_of, KINDS)
    # scored: 3 disease + 1 chemical spans (the gene span has no gold label in this corpus)
    assert ev["per_label"]["Disease"] == {
        "precision": round(1 / 3, 4), "recall": 0.5, "f1": 0.4, "silver_spans": 3, "gold_spans": 2,
        "partial_overlap_fp": 1,
    }  # fmt: skip
    assert ev["per_label"]["Chemical"]["precision"] == 1.0
    assert ev["micro"]["precision"] == 0.5 and ev["micro"]["recall"] == round(2 / 3, 4)
    assert ev["per_kind"]["Disease"] == {"silver_spans": 1, "precision": 1.0}
    # pooled: a chemical hit in a sentence of a disease-only corpus is not scored
    pooled_gold = [*gold, Sentence(["x", "y"], [Span(0, 1, "Disease")], "DiseaseOnly")]
    pooled_silver = [
        *silver,
        Sentence(["x", "y"], [Span(0, 1, "disease", "Disease::1"), Span(1, 2, "c", "Compound::1")]),
    ]
    ev2 = evaluate_silver(pooled_silver, pooled_gold, kind_of, KINDS)
    assert ev2["per_label"]["Chemical"] == ev["per_label"]["Chemical"]
    assert ev2["per_label"]["Disease"]["recall"] == round(2 / 3, 4)


# ----------------------------------------------------------------------------- CLI on tiny data

NCBI_LIKE = "Boys\tO\nwith\tO\nadrenoleukodystrophy\tB-Disease\n(\tO\nALD\tB-Disease\n)\tO\n.\tO\n\n" \
    "ALD\tB-Disease\nand\tO\nlithium\tB-Chemical\nand\tO\nfoo\tB-Disease\n.\tO\n"  # fmt: skip


@pytest.fixture()
def tiny(tmp_path: Path) -> dict[str, Path]:
    corpus = tmp_path / "TINY"
    corpus.mkdir()
    for split in ("train", "devel", "test"):
        (corpus / f"{split}.tsv").write_text(NCBI_LIKE)
    nodes = tmp_path / "nodes.tsv"
    nodes.write_text("id\tname\tkind\n" + "".join(f"{i}\t{n}\t{k}\n" for i, n, k in NODES))
    edges = tmp_path / "edges.sif"
    edges.write_text("source\tmetaedge\ttarget\nCompound::1\tCtD\tDisease::1\nGene::1\tGiG\tGene::2\n")
    return {"corpus": corpus, "nodes": nodes, "edges": edges, "tmp": tmp_path}


def kg_args(t: dict[str, Path]) -> list[str]:
    return ["--kg-nodes", str(t["nodes"]), "--kg-edges", str(t["edges"])]


def test_build_corpus_cli(tiny: dict[str, Path]) -> None:
    out = tiny["tmp"] / "out"
    res = CliRunner().invoke(app, ["build-corpus", str(tiny["corpus"]), str(out), *kg_args(tiny)])
    assert res.exit_code == 0, res.output
    recs = json.loads((out / "train.json").read_text())
    assert recs[1]["ner"] == [[0, 0, "Disease"], [2, 2, "Chemical"], [4, 4, "Disease"]]
    assert recs[1]["kge"] == ["Symptom::2", "Compound::1", None]
    assert recs[0]["labels"] == ["Chemical", "Disease"] and recs[0]["corpus"] == "TINY"
    assert set(recs[0]) == {"tokenized_text", "ner", "kge", "corpus", "labels"}
    docs = read_corpus(out / "dev.spacy")
    assert [s.kge for s in docs[1].spans] == ["Symptom::2", "Compound::1", None]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["splits"]["test"]["sentences"] == 2
    assert stats["splits"]["train"]["linked_share_per_label"] == {"Chemical": 1.0, "Disease": 0.75}


def test_build_corpus_cli_override_and_errors(tiny: dict[str, Path]) -> None:
    out = tiny["tmp"] / "out2"
    args = ["build-corpus", str(tiny["corpus"]), str(out), *kg_args(tiny), "--max-sentences", "1"]
    res = CliRunner().invoke(app, [*args, "--linking.rules", '["exact"]'])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "stats.json").read_text())["splits"]["train"]["sentences"] == 1
    res = CliRunner().invoke(app, [*args, "--linking.nonsense", "1"])
    assert res.exit_code != 0 and "nonsense" in str(res.exception)


def test_convert_and_link_report_cli(tiny: dict[str, Path]) -> None:
    src = tiny["corpus"] / "train.tsv"
    dst = tiny["tmp"] / "train.jsonl"
    res = CliRunner().invoke(app, ["convert", str(src), str(dst)])
    assert res.exit_code == 0 and "2 sentences, 5 spans" in res.output
    assert read_corpus(dst)[0].corpus == "TINY"
    res = CliRunner().invoke(app, ["link-report", str(tiny["corpus"]), *kg_args(tiny)])
    assert res.exit_code == 0, res.output
    assert "TINY\tDisease\t4\t3\t75.0%" in res.output and "'abbreviation' links" in res.output


@pytest.mark.parametrize("content", [b"", b"\n\n", b"[]"], ids=["empty", "blank-lines", "empty-list"])
def test_convert_and_link_report_refuse_an_empty_corpus(tiny: dict[str, Path], content: bytes) -> None:
    """An empty corpus used to "convert" into 0 sentences (and "link" at 0 of 0) with exit 0."""
    corpus = tiny["tmp"] / "EMPTY"
    corpus.mkdir()
    src = corpus / ("train.json" if content == b"[]" else "train.tsv")
    src.write_bytes(content)
    dst = tiny["tmp"] / "out.jsonl"
    res = CliRunner().invoke(app, ["convert", str(src), str(dst)])
    assert res.exit_code == 1 and not dst.exists()
    assert res.stderr.splitlines() == [f"error: convert: {src}: no sentences (an empty corpus); nothing written"]
    res = CliRunner().invoke(app, ["link-report", str(corpus), *kg_args(tiny)])
    assert res.exit_code == 1 and len(res.stderr.splitlines()) == 1
    assert res.stderr.startswith(f"error: link-report: {src}: no sentences (an empty corpus)")


def test_convert_names_a_corpus_it_cannot_read_in_one_line(tiny: dict[str, Path]) -> None:
    src = tiny["tmp"] / "latin1.tsv"
    src.write_bytes("Boys\tO\nna\u00efve\tO\n".encode("latin-1"))
    res = CliRunner().invoke(app, ["convert", str(src), str(tiny["tmp"] / "out.json")])
    assert res.exit_code == 1
    assert res.stderr.splitlines() == [
        f"error: convert: {src}:2: not valid UTF-8 (byte 0xef at offset 9); re-encode the file as UTF-8"
    ]


def test_silver_cli(tiny: dict[str, Path]) -> None:
    out = tiny["tmp"] / "silver"
    res = CliRunner().invoke(
        app, ["silver", str(tiny["corpus"]), str(out), *kg_args(tiny), "--kinds", "Symptom,Compound"]
    )
    assert res.exit_code == 0, res.output
    stats = json.loads((out / "stats.json").read_text())
    ev = stats["splits"]["train"]["evaluation_vs_gold"]
    assert ev["per_label"]["Chemical"]["precision"] == 1.0
    assert ev["per_label"]["Disease"]["recall"] == 0.75  # adrenoleukodystrophy, ALD, ALD; not foo


def test_silver_cli_drops_sentences_without_a_match_unless_told(tiny: dict[str, Path]) -> None:
    corpus = tiny["tmp"] / "WITHEMPTY"
    corpus.mkdir()
    (corpus / "train.tsv").write_text(NCBI_LIKE + "\nNothing\tO\nmatches\tO\nhere\tO\n.\tO\n")
    base = ["silver", str(corpus), "--splits", "train", *kg_args(tiny), "--kinds", "Symptom,Compound"]
    for flag, kept in (("true", 2), ("false", 3)):
        out = tiny["tmp"] / f"silver-{flag}"
        res = CliRunner().invoke(app, [base[0], base[1], str(out), *base[2:], "--silver.drop_empty", flag])
        assert res.exit_code == 0, res.output
        split = json.loads((out / "stats.json").read_text())["splits"]["train"]
        assert split["sentences_annotated"] == 3 and split["sentences"] == kept
        assert split["sentences_dropped_empty"] == 3 - kept
        # scored against gold on all three sentences either way
        assert split["evaluation_vs_gold"]["per_label"]["Disease"]["recall"] == 0.75
        assert len(json.loads((out / "train.json").read_text())) == kept


def test_modifier_of_a_larger_name_and_adjective_variants_are_not_matched() -> None:
    nodes = [
        ("Compound::2", "chloramphenicol", "Compound"),
        ("Gene::4", "IL6", "Gene"),
        ("Anatomy::2", "Kidney", "Anatomy"),
        ("Pathway::1", "Transcription", "Pathway"),
        ("Pathway::2", "Cell Cycle", "Pathway"),
    ]
    kinds = {k: KindInfo(k.lower()) for k in ("Compound", "Gene", "Anatomy", "Pathway")}
    settings = SilverSettings.from_config()
    settings.kinds = list(kinds)
    ids, names, node_kinds = zip(*nodes, strict=True)
    m = SilverMatcher(ids, names, node_kinds, kinds, settings, LinkingSettings.from_config())
    text = "chloramphenicol acetyltransferase and IL6 receptor ; chloramphenicol and IL6 ; renal kidney ."
    (s,) = m.annotate([Sentence(text.split())])
    # modifiers of a larger name ("... acetyltransferase", "... receptor") and "renal" (an adjective
    # reaching Kidney through a word variant) are not matched; the bare names and "kidney" are
    assert spans_of(s) == [
        ("chloramphenicol", "compound", "Compound::2"),
        ("IL6", "gene", "Gene::4"),
        ("kidney", "anatomy", "Anatomy::2"),
    ]
    (s,) = m.annotate([Sentence("transcription stops the cell cycle .".split())])
    # one-word names of a multiword kind are too generic ("transcription"); two-word names match
    assert spans_of(s) == [("cell cycle", "pathway", "Pathway::2")]
