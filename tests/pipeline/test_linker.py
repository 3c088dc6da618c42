"""The ``kogner_linker`` pipe and its index on a tiny KG with the real (untrained) span model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import spacy
from spacy.tokens import Span

from spacy_kogner.data.linking import LinkingSettings
from spacy_kogner.pipeline.kb_index import LinkIndex, LinkIndexError, SpanProjector
from spacy_kogner.training.link_index import name_words

NODES = [
    ("Compound::DB00829", "Diazepam", "Compound"),
    ("Compound::DB00331", "Metformin", "Compound"),
    ("Disease::DOID:1612", "breast cancer", "Disease"),
    ("Symptom::D007022", "Hypotension", "Symptom"),
    ("Side Effect::C0020649", "Hypotension", "Side Effect"),
]
LABELS = {
    "Chemical": {"prompt": "chemical", "kg_kinds": ["Compound"]},
    "Disease": {"prompt": "disease", "kg_kinds": ["Disease", "Symptom", "Side Effect"]},
}


@pytest.fixture()
def index_dir(span_model, tmp_path):
    ids, names, kinds = (list(c) for c in zip(*NODES, strict=True))
    prompts = ["chemical" if k == "Compound" else "disease" for k in kinds]
    vectors = []
    for name, prompt in zip(names, prompts, strict=True):
        words = name_words(name)
        vectors.append(span_model.span_vectors([words], [prompt], [(0, 0, len(words) - 1)]))
    stacked = __import__("torch").cat(vectors)
    projector = SpanProjector(span_model.hidden_size, 8, 0.0)
    projector.fit_whitening(stacked, 1e-4)
    meta = {
        "student": span_model.fingerprint(),
        "labels": LABELS,
        "dictionary": LinkingSettings.from_config().to_dict(),
        "context": "mention",
        "threshold": 0.0,
    }
    index = LinkIndex(ids, names, kinds, np.zeros((len(ids), span_model.hidden_size), np.float16), projector, meta)
    index.vectors = index.project(stacked).astype(np.float16)
    index.save(tmp_path / "index")
    return tmp_path / "index"


def linked_nlp(make_nlp, index_dir, **config):
    nlp = make_nlp()
    nlp.add_pipe("kogner_linker", config={"index": str(index_dir), **config})
    return nlp


def run_linker(nlp, text, ents):
    doc = nlp.make_doc(text)
    doc.ents = [Span(doc, s, e, label=lab) for s, e, lab in ents]
    return nlp.get_pipe("kogner_linker")(doc)


def test_search_is_exact_and_keeps_the_preferred_copy_of_a_name(index_dir):
    index = LinkIndex.load(index_dir)
    queries = index.vectors[[0, 3]].astype(np.float32)
    rows, scores = index.search(queries, ["Compound"], 2)
    assert rows[0, 0] == 0 and scores[0, 0] == pytest.approx(float(queries[0] @ queries[0]), abs=1e-3)
    rows, _ = index.search(queries[1:], ["Disease", "Symptom", "Side Effect"], 3)
    assert 3 in rows[0] and 4 not in rows[0]  # "Hypotension" once, as the label's first kind (Symptom)


def test_dictionary_route_sets_kb_id_and_extensions(make_nlp, index_dir):
    nlp = linked_nlp(make_nlp, index_dir, routes=["dictionary"])
    text = "Women with breast cancer ( BC ) took diazepam ; BC recurred in HeLa cells ."
    doc = run_linker(nlp, text, [(2, 4, "Disease"), (8, 9, "Chemical"), (10, 11, "Disease"), (13, 14, "cell_line")])
    got = {(e.text, e.kb_id_, e._.kb_route) for e in doc.ents}
    assert ("breast cancer", "Disease::DOID:1612", "dictionary") in got
    assert ("diazepam", "Compound::DB00829", "dictionary") in got
    assert ("BC", "Disease::DOID:1612", "dictionary") in got  # the Doc's own abbreviation definition
    assert ("HeLa", "", "no_kind") in got  # a label with no KG kind stays unlinked
    assert next(e for e in doc.ents if e.text == "diazepam")._.kb_name == "Diazepam"


def test_dense_route_links_within_the_label_kinds(make_nlp, index_dir):
    nlp = linked_nlp(make_nlp, index_dir, routes=["dense"], threshold=0.0)
    doc = run_linker(nlp, "He took Diazepam daily .", [(2, 3, "Chemical")])
    ent = doc.ents[0]
    assert ent._.kb_route == "dense" and ent.kb_id_.startswith("Compound::")
    assert all(c[0].startswith("Compound::") for c in ent._.kb_candidates)
    assert ent.kb_id_ == "Compound::DB00829"  # its own name read alone is its nearest node


def test_round_trip_and_clear_errors(make_nlp, index_dir, tmp_path):
    nlp = linked_nlp(make_nlp, index_dir, routes=["dictionary", "dense"])
    nlp.to_disk(tmp_path / "pipe")
    index_dir.rename(tmp_path / "moved")  # the build folder named in the config is gone, as on another machine
    loaded = spacy.load(tmp_path / "pipe")
    (tmp_path / "moved").rename(index_dir)
    doc = run_linker(loaded, "diazepam helps", [(0, 1, "Chemical")])
    assert doc.ents[0].kb_id_ == "Compound::DB00829"
    (tmp_path / "pipe" / "kogner_linker" / "index" / "evil.py").write_text("print(1)")
    with pytest.raises(LinkIndexError, match="unexpected file"):
        spacy.load(tmp_path / "pipe")
    meta = json.loads((index_dir / "meta.json").read_text())
    (index_dir / "meta.json").write_text(json.dumps({**meta, "student": "0" * 16}))
    with pytest.raises(LinkIndexError, match="rebuild the index"):
        run_linker(linked_nlp(make_nlp, index_dir, routes=["dense"]), "diazepam", [(0, 1, "Chemical")])
    (index_dir / "vectors.npy").write_bytes(b"not numpy")
    with pytest.raises(LinkIndexError, match="vectors.npy"):
        LinkIndex.load(index_dir)


def test_a_pipe_without_an_index_says_how_to_get_one(tmp_path):
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("kogner_linker", config={"routes": ["dictionary"]})
    with pytest.raises(LinkIndexError, match="build-link-index"):
        pipe(nlp.make_doc("x"))
    pipe = nlp.add_pipe("kogner_linker", name="missing", config={"index": str(tmp_path / "nowhere")})
    with pytest.raises(LinkIndexError, match="nodes.tsv is missing"):
        pipe(nlp.make_doc("x"))


def test_dense_nil_model_links_spelling_variants_and_nothing_else(make_nlp, index_dir):
    """With the name check, the dense route links a misspelt name (also through its in-document
    long form) but leaves another drug, and an abbreviation the document does not define, NIL;
    without it the nearest compound is linked whatever it is."""
    nlp = linked_nlp(make_nlp, index_dir, threshold=0.0)
    text = "Diazepame ( DZP ) or lorazepam ; DZP , then LZP ."
    doc = run_linker(nlp, text, [(0, 1, "Chemical"), (5, 6, "Chemical"), (7, 8, "Chemical"), (10, 11, "Chemical")])
    got = {e.text: (e.kb_id_, e._.kb_route) for e in doc.ents}
    assert got["Diazepame"] == ("Compound::DB00829", "dense")
    assert got["DZP"] == ("Compound::DB00829", "dense")  # read as its long form "Diazepame"
    assert got["lorazepam"] == ("", "nil")
    assert got["LZP"] == ("", "nil") and next(e for e in doc.ents if e.text == "LZP")._.kb_candidates == []
    plain = linked_nlp(make_nlp, index_dir, threshold=0.0, min_name_similarity=0.0)
    doc = run_linker(plain, "lorazepam", [(0, 1, "Chemical")])
    assert doc.ents[0]._.kb_route == "dense" and doc.ents[0].kb_id_.startswith("Compound::")


@pytest.mark.parametrize("config", [{"min_name_similarity": 1.5}, {"name_extra_words": -1}, {"dense_candidates": 0}])
def test_bad_dense_settings_are_refused(make_nlp, index_dir, config):
    with pytest.raises(LinkIndexError):
        linked_nlp(make_nlp, index_dir, **config)


def test_a_name_exactly_at_the_similarity_setting_links_after_a_round_trip(make_nlp, index_dir, tmp_path):
    """ "diazepamolum" / Diazepam share exactly 0.7 of their 3-grams (14 / 20); a saved pipeline
    reads the 0.7 setting back as 0.7000000000000001, which must not turn the link into a NIL
    (it did: "convulsive" / Convulsion, "leucopenia" / Leukopenia)."""
    from spacy_kogner.pipeline.dictionary import name_similarity

    assert name_similarity("diazepamolum", "Diazepam") == 0.7
    linked_nlp(make_nlp, index_dir, threshold=0.0, min_name_similarity=0.7).to_disk(tmp_path / "pipe")
    loaded = spacy.load(tmp_path / "pipe")
    doc = run_linker(loaded, "diazepamolum", [(0, 1, "Chemical")])
    assert doc.ents[0].kb_id_ == "Compound::DB00829"
