"""The dictionary route's guards against the wrong links found by hand checks (issue 15, item 4).

Each test names a mention from the corpora that the old rules linked wrongly, on a tiny KG that
holds the wrong target and, where one exists, the right one; diseases and chemicals that must keep
linking are checked beside them.
"""

from __future__ import annotations

import pytest

from spacy_kogner.data.labels import LabelInfo
from spacy_kogner.data.linking import LinkingSettings
from spacy_kogner.pipeline.dictionary import (
    DictionaryError,
    DictionaryLinker,
    DictionarySettings,
    looks_like_abbreviation,
    name_similarity,
    names_agree,
)

NODES = [
    ("Gene::8915", "BCL10", "Gene"),
    ("Gene::598", "BCL2L1", "Gene"),
    ("Gene::6862", "T", "Gene"),
    ("Gene::5917", "RARS", "Gene"),
    ("Gene::5966", "REL", "Gene"),
    ("Gene::3725", "JUN", "Gene"),
    ("Gene::1234", "CCR5", "Gene"),
    ("Gene::847", "CAT", "Gene"),
    ("Gene::6898", "TAT", "Gene"),
    ("Gene::4513", "COX2", "Gene"),
    ("Gene::7421", "VDR", "Gene"),
    ("Side Effect::C0234972", "Convulsive disorder", "Side Effect"),
    ("Side Effect::C0007222", "Cardiovascular disorder", "Side Effect"),
    ("Symptom::D4", "Fragile X Syndrome", "Symptom"),
    ("Symptom::D038901", "Mental Retardation, X-Linked", "Symptom"),
    ("Compound::DB00829", "Diazepam", "Compound"),
]
LABELS = {
    "GENE": LabelInfo("gene", ["Gene"]),
    "Disease": LabelInfo("disease", ["Disease", "Symptom", "Side Effect"]),
    "Chemical": LabelInfo("chemical", ["Compound"]),
}


@pytest.fixture(scope="module")
def linker() -> DictionaryLinker:
    ids, names, kinds = zip(*NODES, strict=True)
    return DictionaryLinker(ids, names, kinds, LABELS, LinkingSettings.from_config())


def node(linker: DictionaryLinker, text: str, label: str, abbreviations: dict[str, str] | None = None) -> str | None:
    link, _ = linker.link_text(text, label, abbreviations)
    return link.node_id if link else None


def test_a_lone_x_is_a_letter_not_ten(linker: DictionaryLinker) -> None:
    assert node(linker, "Bcl - x", "GENE") is None  # was BCL10
    assert node(linker, "Bcl-x ( L )", "GENE") is None
    assert node(linker, "X - linked mental retardation", "Disease") == "Symptom::D038901"


def test_stripping_that_leaves_a_letter_links_nothing(linker: DictionaryLinker) -> None:
    assert node(linker, "t ( 8 ; 21 )", "GENE") is None  # was the gene T
    assert node(linker, "VDR gene", "GENE") == "Gene::7421"  # three characters stay linkable


def test_plural_symbols_and_set_heads_name_families(linker: DictionaryLinker) -> None:
    assert node(linker, "RARs", "GENE") is None  # was RARS by case folding
    assert node(linker, "Rel / Jun proteins", "GENE") is None
    assert node(linker, "Jun proteins", "GENE") is None
    assert node(linker, "CCR5 genes", "GENE") == "Gene::1234"  # alleles of one named gene


def test_homonyms_link_only_through_a_definition(linker: DictionaryLinker) -> None:
    for text in ("COX - 2", "COX-2 gene", "Tat protein", "CAT gene"):
        assert node(linker, text, "GENE") is None, text
    assert node(linker, "CAT", "GENE", {"CAT": "chloramphenicol acetyltransferase"}) is None  # the reporter
    assert node(linker, "COX-2", "GENE", {"COX-2": "COX2"}) == "Gene::4513"  # an explicit long form wins


def test_the_head_rule_does_not_make_adjectives_disorders(linker: DictionaryLinker) -> None:
    assert node(linker, "convulsive", "Disease") is None
    assert node(linker, "fragile X", "Disease") == "Symptom::D4"


def test_a_defined_plural_short_form_still_links(linker: DictionaryLinker) -> None:
    abbreviations = {"CVDs": "cardiovascular disorders"}
    assert node(linker, "CVDs", "Disease", abbreviations) == "Side Effect::C0007222"
    assert node(linker, "diazepam", "Chemical") == "Compound::DB00829"


def test_candidates_are_ranked_rows_of_allowed_kinds(linker: DictionaryLinker) -> None:
    rows, rule, _ = linker.candidates("Diazepam", "Chemical")
    assert rule == "exact" and [linker.node_ids[r] for r in rows] == ["Compound::DB00829"]
    assert linker.candidates("Diazepam", "GENE")[0] == []
    assert linker.candidates("Diazepam", "no-such-label") == ([], None, False)


def test_settings_round_trip_and_reject_unknown_keys() -> None:
    settings = LinkingSettings.from_config()
    values = settings.to_dict()
    assert DictionarySettings.from_dict(values) == DictionarySettings(**values)
    with pytest.raises(DictionaryError, match="unknown keys \\['typo'\\]"):
        DictionarySettings.from_dict({**values, "typo": 1})


@pytest.mark.parametrize(
    ("mention", "name", "agree"),
    [
        # right dense links among dictionary misses (docs/results/linking_dense_check.tsv)
        ("streptozotocin", "Streptozocin", True),
        ("nephrotoxic", "Nephrotoxicity", True),
        ("leucopenia", "Leukopenia", True),
        ("post - transplantation lymphoproliferative disorder", "Post transplant lymphoproliferative disorder", True),
        # other concepts that share most letters
        ("migraine with aura", "Migraine without aura", False),
        ("deoxycholic acid", "Chenodeoxycholic acid", False),
        ("ventricular tachyarrhythmia", "Supraventricular tachyarrhythmia", False),
        ("chronic hepatitis C", "Chronic hepatitis B", False),
        # a word more: the node is broader or narrower than the mention
        ("chronic hepatitis C", "Hepatitis C", False),
        ("tissue injury", "Soft tissue injury", False),
    ],
)
def test_names_agree_word_by_word(mention: str, name: str, agree: bool) -> None:
    assert names_agree(mention, name) is agree


def test_extra_words_and_similarity() -> None:
    assert names_agree("chronic hepatitis C", "Hepatitis C", extra_words=1)
    assert not names_agree("", "Hepatitis C", extra_words=5)
    assert name_similarity("Diazepam", "diazepam") == 1.0
    assert name_similarity("leucopenia", "Leukopenia") >= 0.7 > name_similarity("lorazepam", "Diazepam")


@pytest.mark.parametrize(
    ("text", "short"), [("BZS", True), ("cGMP", True), ("Ca", True), ("Bcl2", False), ("tamoxifen", False)]
)
def test_what_looks_like_an_abbreviation(text: str, short: bool) -> None:
    assert looks_like_abbreviation(text) is short
