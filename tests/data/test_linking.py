"""Linker rules one at a time on a tiny KG, then abbreviations, type agreement, fuzzy and the report."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from spacy_kogner.data.labels import LabelInfo
from spacy_kogner.data.linking import (
    Linker,
    LinkingSettings,
    LinkStats,
    find_abbreviations,
    format_report,
    normal_tokens,
    read_synonyms,
)
from spacy_kogner.data.readers import Sentence, Span

NODES = [
    ("Symptom::D1", "Huntington's disease", "Symptom"),
    ("Disease::D2", "breast cancer", "Disease"),
    ("Side Effect::S1", "Haemolytic anaemia", "Side Effect"),
    ("Side Effect::S2", "Seizure", "Side Effect"),
    ("Side Effect::S3", "Neoplasm", "Side Effect"),
    ("Symptom::D3", "Abdomen, Acute", "Symptom"),
    ("Symptom::D4", "Fragile X Syndrome", "Symptom"),
    ("Symptom::D5", "Ataxia Telangiectasia", "Symptom"),
    ("Symptom::D6", "Adrenoleukodystrophy", "Symptom"),
    ("Side Effect::S4", "Glucose-6-phosphate dehydrogenase deficiency", "Side Effect"),
    ("Side Effect::S5", "type 1 diabetes mellitus", "Side Effect"),
    ("Gene::1", "IL2", "Gene"),
    ("Gene::2", "APC", "Gene"),
    ("Gene::3", "CAT", "Gene"),
    ("Gene::4", "SNCA", "Gene"),
    ("Compound::C1", "Lithium", "Compound"),
    ("Compound::C2", "L-Tyrosine", "Compound"),
    ("Disease::D9", "seizure", "Disease"),
]
LABELS = {
    "Disease": LabelInfo("disease", ["Disease", "Symptom", "Side Effect"]),
    "GENE": LabelInfo("gene", ["Gene"]),
    "Chemical": LabelInfo("chemical", ["Compound"]),
    "cell_line": LabelInfo("cell line", []),
}


@pytest.fixture(scope="module")
def settings() -> LinkingSettings:
    return LinkingSettings.from_config()


def make(settings: LinkingSettings, rules: list[str] | None = None, **kw) -> Linker:
    s = replace(settings, rules=rules) if rules is not None else settings
    ids, names, kinds = zip(*NODES, strict=True)
    return Linker(ids, names, kinds, LABELS, s, **kw)


@pytest.mark.parametrize(
    "rule,text,label,node",
    [
        ("exact", "Huntington ' s disease", "Disease", "Symptom::D1"),
        ("case", "Breast Cancer", "Disease", "Disease::D2"),
        ("normalized", "hemolytic anemias", "Disease", "Side Effect::S1"),  # spelling + plural
        ("normalized", "tumours", "Disease", "Side Effect::S3"),  # word variant neoplasm = tumor
        ("compact", "IL - 2", "GENE", "Gene::1"),
        ("reordered", "acute abdomen", "Disease", "Symptom::D3"),
        ("reordered", "cancer of the breast", "Disease", "Disease::D2"),  # function words ignored
        ("reordered", "tyrosine", "Chemical", "Compound::C2"),  # a name's stereo prefix is optional
        ("stripped", "IL2 gene", "GENE", "Gene::1"),
        ("head", "fragile X", "Disease", "Symptom::D4"),
    ],
)
def test_each_rule_alone(settings: LinkingSettings, rule: str, text: str, label: str, node: str) -> None:
    alone = make(settings, [rule])
    link, _ = alone.link_text(text, label)
    assert link is not None and (link.node_id, link.match) == (node, rule)
    if rule != "exact":  # the earlier rules alone do not find it: each rule adds something
        earlier = ["exact", "case", "normalized", "compact", "reordered", "stripped", "head"]
        before = earlier[: earlier.index(rule)]
        assert make(settings, before).link_text(text, label)[0] is None


def test_normal_tokens(settings: LinkingSettings) -> None:
    assert normal_tokens("α-Synuclein", settings) == ["alpha", "synuclein"]
    # "diabetes" loses its "s" too: harmless, names and mentions are normalised alike
    assert normal_tokens("Type II diabetes", settings) == ["type", "2", "diabete"]
    assert normal_tokens("Parkinson's diseases", settings) == ["parkinson", "disease"]
    assert normal_tokens("CAPS", settings) == ["caps"]  # short tokens keep their "s"
    assert normal_tokens("allergies", settings) == ["allergy"]


def test_type_agreement_and_kind_order(settings: LinkingSettings) -> None:
    linker = make(settings)
    link, wrong = linker.link_text("SNCA", "Disease")
    assert link is None and wrong  # the string names a Gene: counted, never linked
    assert linker.link_text("APC", "GENE")[0] is None  # short bare symbol: only via a definition
    # "seizure" is a Disease and a Side Effect name: the label's kind order prefers Disease
    assert linker.link_text("seizures", "Disease")[0].node_id == "Disease::D9"
    assert linker.link_text("lithium", "Disease")[0] is None
    assert linker.link_text("lithium", "Chemical")[0].node_id == "Compound::C1"
    assert linker.link_text("D - tyrosine", "Chemical")[0] is None  # a mention's prefix is information
    assert linker.link_text("IL2", "cell_line") == (None, False)
    assert linker.link_text("IL2", "UNKNOWN") == (None, False)


def test_short_symbols_need_a_digit_or_a_definition(settings: LinkingSettings) -> None:
    linker = make(settings)
    assert linker.link_text("CAT", "GENE")[0] is None
    assert linker.link_text("IL2", "GENE")[0].node_id == "Gene::1"


def test_find_abbreviations(settings: LinkingSettings) -> None:
    toks = "patients with adrenoleukodystrophy ( ALD ) and ataxia - telangiectasia ( A - T ) .".split()
    assert find_abbreviations(toks, settings) == {
        "ALD": "adrenoleukodystrophy",
        "A-T": "ataxia - telangiectasia",
    }
    # a parenthetical that is not an abbreviation of the words before it
    assert find_abbreviations("treated with lithium ( n = 12 ) .".split(), settings) == {}
    assert find_abbreviations("the gene ( XYZ ) was".split(), settings) == {}


def test_abbreviation_rule_in_document(settings: LinkingSettings) -> None:
    linker = make(settings)
    sents = [
        Sentence("Boys with adrenoleukodystrophy ( ALD ) .".split(), [Span(2, 3, "Disease")], "C"),
        Sentence("ALD is X-linked .".split(), [Span(0, 1, "Disease")], "C"),
        Sentence("glucose-6-phosphate dehydrogenase ( G6PD ) .".split(), [], "C"),
        Sentence("G6PD deficiency is common .".split(), [Span(0, 2, "Disease")], "C"),
        Sentence("APC carriers .".split(), [Span(0, 1, "Disease")], "C"),
    ]
    stats = linker.link_sentences(sents)
    assert (sents[1].spans[0].kge, sents[1].spans[0].match) == ("Symptom::D6", "abbreviation")
    assert (sents[3].spans[0].kge, sents[3].spans[0].match) == ("Side Effect::S4", "abbreviation")
    assert sents[4].spans[0].kge is None  # APC is not defined here; as a string it is a Gene
    assert stats.linked[("C", "Disease")] == 3 and stats.total[("C", "Disease")] == 4


def test_abbreviation_window_and_documents(settings: LinkingSettings) -> None:
    linker = make(replace(settings, abbreviation_window=2))
    define = Sentence("adrenoleukodystrophy ( ALD ) .".split(), [], "C", None)
    filler = Sentence("nothing here .".split(), [], "C", None)
    late = Sentence("ALD".split(), [Span(0, 1, "Disease")], "C", None)
    linker.link_sentences([define, filler, filler, late])
    assert late.spans[0].kge is None  # defined 3 sentences back, window is 2
    other_doc = Sentence("ALD".split(), [Span(0, 1, "Disease")], "C", "doc2")
    first = Sentence("adrenoleukodystrophy ( ALD ) .".split(), [], "C", "doc1")
    linker.link_sentences([first, other_doc])
    assert other_doc.spans[0].kge is None  # definitions do not cross document boundaries


def test_relinking_overwrites(settings: LinkingSettings) -> None:
    sent = Sentence(["lithium"], [Span(0, 1, "Chemical", "Compound::OLD", "stale")], "C")
    make(settings, []).link_sentences([sent])
    assert (sent.spans[0].kge, sent.spans[0].match) == (None, None)


def test_fuzzy_rule_with_number_guard(settings: LinkingSettings) -> None:
    fuzzy = make(settings, ["fuzzy"])
    fuzzy.settings = replace(fuzzy.settings, fuzzy_threshold=0.6)
    links = fuzzy.fuzzy_link(
        ["type 1 diabetes mellitu", "type 2 diabetes mellitus", "ataxia telangiectasias"],
        ["Disease", "Disease", "Disease"],
    )
    assert links[0] is not None and links[0].node_id == "Side Effect::S5" and links[0].match == "fuzzy"
    assert links[1] is None  # same letters, different number: never a fuzzy match
    assert links[2] is not None and links[2].node_id == "Symptom::D5"


def test_synonyms(settings: LinkingSettings, tmp_path: Path) -> None:
    p = tmp_path / "syn.tsv"
    p.write_text("node_id\tname\nGene::4\talpha-synuclein\nGene::999\tunknown node\n")
    rows = read_synonyms(p)
    linker = make(settings, synonyms=rows)
    assert linker.link_text("α-synuclein", "GENE")[0].node_id == "Gene::4"
    p.write_text("Gene::4\n")
    with pytest.raises(ValueError, match="syn.tsv:1"):
        read_synonyms(p)
    p.write_bytes("node_id\tname\nGene::4\t\u03b1-synuclein\n".encode("utf-16"))
    with pytest.raises(
        ValueError, match=r"syn\.tsv:1: not valid UTF-8 \(byte 0xff at offset 0; the file looks like UTF-16"
    ):
        read_synonyms(p)
    p.write_bytes("Gene::4\tSNCA\nGene::5\tcaf\u00e9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"syn\.tsv:2: not valid UTF-8 \(byte 0xe9 at offset 24\)"):
        read_synonyms(p)
    p.write_bytes("\ufeffGene::4\tSNCA\n".encode())
    assert read_synonyms(p) == [("Gene::4", "SNCA")]  # a BOM does not stick to the first id


def test_settings_reject_unknown(settings: LinkingSettings) -> None:
    section = dict(settings.__dict__)
    with pytest.raises(ValueError, match="Unknown linking rule"):
        LinkingSettings.from_section({**section, "rules": ["exact", "magic"]})
    with pytest.raises(ValueError, match="Unknown key"):
        LinkingSettings.from_section({**section, "typo": 1})


def test_report_lists_coverage_and_examples(settings: LinkingSettings) -> None:
    linker = make(settings)
    sents = [Sentence(["IL2", "and", "lithium", "and", "foo"], [Span(0, 1, "GENE"), Span(4, 5, "GENE")], "C")]
    stats = linker.link_sentences(sents, LinkStats())
    text = format_report(stats, {"Gene::1": "IL2"}, settings)
    assert "C\tGENE\t2\t1\t50.0%" in text
    assert "'IL2' -> Gene::1 'IL2'" in text
