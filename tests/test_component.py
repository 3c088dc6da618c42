"""The ``kogner`` pipe with the real GLiNER model on the real default encoder."""

from __future__ import annotations

import importlib.metadata

import pytest
import spacy
from spacy import displacy
from spacy.tokens import Doc, Span
from spacy.training import Example

from spacy_kogner.component import KognerConfigError

TEXT = "BRCA1 mutations cause breast cancer. Aspirin reduces fever in children with influenza."


def spans_of(doc, key="kogner"):
    return [(s.start, s.end, s.label_) for s in doc.spans[key]]


def n_candidates(n_words: int, max_width: int) -> int:
    return sum(min(max_width, n_words - i) for i in range(n_words))


def test_factory_entry_point_is_declared():
    eps = importlib.metadata.entry_points(group="spacy_factories")
    assert any(ep.name == "kogner" and ep.value.startswith("spacy_kogner.component") for ep in eps)


def test_spans_and_ents_are_set(make_nlp):
    nlp = make_nlp(threshold=0.0)
    doc = nlp(TEXT)
    group = doc.spans["kogner"]
    assert len(group) > 0 and len(doc.ents) > 0
    assert len(group.attrs["scores"]) == len(group)
    assert all(0.0 <= s <= 1.0 for s in group.attrs["scores"])
    assert {e.label_ for e in doc.ents} <= {"Disease", "Chemical"}
    # flat: non-overlapping
    toks = [i for e in doc.ents for i in range(e.start, e.end)]
    assert len(toks) == len(set(toks))


@pytest.mark.parametrize(
    "text",
    [
        "Na\u0308ive patients\u200b with ca\u0301ncer 😀 and 中文 text , (IL-2)-induced  \n  fever.",
        "zero\u200b\u200bwidth \u0301 lone mark",
    ],
)
def test_every_candidate_span_is_aligned_to_tokens(make_nlp, text):
    """With threshold 0 every candidate span must come back: none lost to alignment."""
    nlp = make_nlp(threshold=0.0, flat=False, labels=["Disease"])
    doc = nlp(text)
    words = [t for t in doc if not t.is_space]
    got = doc.spans["kogner"]
    assert len(got) == n_candidates(len(words), 12)
    for span in got:
        assert span.text == doc[span.start : span.end].text
        assert not doc[span.start].is_space and not doc[span.end - 1].is_space


def test_long_document_windows_lose_no_span(make_nlp):
    """A doc cut into windows of 20 tokens returns exactly the spans of one big window."""
    text = " ".join(f"w{i}" for i in range(57)) + " cystic fibrosis"
    whole = make_nlp(threshold=0.0, flat=False, labels=["Disease"])(text)
    windowed_nlp = make_nlp(threshold=0.0, flat=False, labels=["Disease"], max_window_tokens=20, stride=8)
    windowed = windowed_nlp(text)
    assert len(windowed) == 59
    assert set(spans_of(windowed)) == set(spans_of(whole))
    assert len(spans_of(windowed)) == len(set(spans_of(windowed)))  # each span once
    # a span straddling the first border (tokens 18..21) is present
    assert any(s.start == 18 and s.end == 22 for s in windowed.spans["kogner"])


def test_entity_at_window_boundary_keeps_its_score(make_nlp):
    """Same token window context ⇒ same score; the merged score is the max over windows."""
    text = " ".join(["word"] * 18 + ["breast", "cancer"] + ["word"] * 10)
    nlp = make_nlp(threshold=0.0, flat=False, labels=["Disease"], max_window_tokens=20, stride=8)
    doc = nlp(text)
    scores = dict(zip(spans_of(doc), doc.spans["kogner"].attrs["scores"], strict=True))
    assert (18, 20, "Disease") in scores


def test_pipe_equals_one_at_a_time(make_nlp):
    nlp = make_nlp(threshold=0.2, flat=False, batch_size=8)
    texts = [f"Patient {i} had cystic fibrosis and took {i * 5} mg ibuprofen. " * (1 + i % 4) for i in range(30)]
    texts[3] = ""
    texts[7] = "   "
    singles = [nlp(t) for t in texts]
    batched = list(nlp.pipe(texts, batch_size=16))
    n = 0
    for a, b in zip(singles, batched, strict=True):
        assert spans_of(a) == spans_of(b)
        for x, y in zip(a.spans["kogner"].attrs["scores"], b.spans["kogner"].attrs["scores"], strict=True):
            assert abs(x - y) < 1e-4
        assert [(e.start, e.end, e.label_) for e in a.ents] == [(e.start, e.end, e.label_) for e in b.ents]
        n += len(a.spans["kogner"])
    assert n > 0


def test_labels_with_prompts_and_runtime_change(make_nlp):
    nlp = make_nlp(
        threshold=0.0,
        flat=False,
        multi_label=True,
        labels=[{"label": "DIS", "prompt": "disease or syndrome"}, "Chemical"],
    )
    pipe = nlp.get_pipe("kogner")
    assert pipe.labels == ("DIS", "Chemical")
    doc = nlp(TEXT)
    assert {s.label_ for s in doc.spans["kogner"]} == {"DIS", "Chemical"}
    pipe.set_labels(["Gene"])
    doc = nlp(TEXT)
    assert {s.label_ for s in doc.spans["kogner"]} == {"Gene"}


def test_multi_label_keeps_several_labels_per_span(make_nlp):
    nlp = make_nlp(threshold=0.0, flat=False, multi_label=True)
    doc = nlp("breast cancer")
    assert len(doc.spans["kogner"]) == 2 * n_candidates(2, 12)
    assert len(doc.ents) == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"labels": ["Disease", "Disease"]},
        {"labels": [""]},
        {"labels": [{"prompt": "x"}]},
        {"labels": "Disease"},
        {"threshold": 1.5},
        {"threshold": -0.1},
        {"stride": 300, "max_window_tokens": 256},
        {"batch_size": 0},
    ],
)
def test_bad_config_is_a_clear_error(make_nlp, bad):
    with pytest.raises((KognerConfigError, ValueError)):
        make_nlp(**bad)


def test_overlap_smaller_than_span_width_is_refused(make_nlp):
    with pytest.raises(KognerConfigError, match="overlap"):
        make_nlp(max_window_tokens=20, stride=15)


def test_no_labels_is_a_clear_error(make_nlp):
    nlp = make_nlp(labels=[])
    with pytest.raises(KognerConfigError, match="No labels configured"):
        nlp("some text")


@pytest.mark.parametrize("text", ["", "   \n\t  "])
def test_empty_docs(make_nlp, text):
    doc = make_nlp(threshold=0.0)(text)
    assert len(doc.spans["kogner"]) == 0 and len(doc.ents) == 0


def test_huge_document(make_nlp):
    base = "The patient with cystic fibrosis received 20 mg of ibuprofen daily. "
    text = base * (200_000 // len(base) + 1)
    assert len(text) >= 200_000
    nlp = make_nlp(threshold=0.5)
    doc = nlp(text)
    assert doc.spans["kogner"] is not None
    assert all(0 <= s.start < s.end <= len(doc) for s in doc.spans["kogner"])


def test_existing_ents_are_kept_or_replaced(make_nlp):
    for overwrite in (False, True):
        nlp = make_nlp(threshold=0.0, overwrite_ents=overwrite)
        doc = nlp.make_doc(TEXT)
        doc.ents = [Span(doc, 0, 1, label="GENE")]
        doc = nlp.get_pipe("kogner")(doc)
        has_gene = any(e.label_ == "GENE" for e in doc.ents)
        assert has_gene is (not overwrite)
        assert len(doc.ents) > 1


def test_score_and_displacy(make_nlp):
    nlp = make_nlp(threshold=0.0)
    ref = nlp.make_doc("Aspirin treats fever .")
    ref.ents = [Span(ref, 0, 1, label="Chemical")]
    scores = nlp.evaluate([Example(nlp.make_doc(ref.text), ref)])
    for key in ("ents_p", "ents_r", "ents_f", "ents_per_type"):
        assert key in scores
    doc = nlp(TEXT)
    assert "<mark" in displacy.render(doc, style="ent", page=False)
    assert "span" in displacy.render(doc, style="span", options={"spans_key": "kogner"})


def test_to_disk_and_bytes_roundtrip(make_nlp, tmp_path):
    nlp = make_nlp(threshold=0.1, labels=[{"label": "DIS", "prompt": "disease"}])
    expected = nlp(TEXT)
    nlp.to_disk(tmp_path / "pipe")
    loaded = spacy.load(tmp_path / "pipe")
    got = loaded(TEXT)
    assert loaded.get_pipe("kogner").labels == ("DIS",)
    assert spans_of(got) == spans_of(expected)
    assert got.spans["kogner"].attrs["scores"] == pytest.approx(expected.spans["kogner"].attrs["scores"], abs=1e-5)
    other = spacy.blank("en")
    other.add_pipe("kogner")
    other.get_pipe("kogner").from_bytes(nlp.get_pipe("kogner").to_bytes())
    doc = other(TEXT)
    assert spans_of(doc) == spans_of(expected)


def test_doc_objects_from_make_doc(make_nlp):
    nlp = make_nlp(threshold=0.0)
    doc = Doc(nlp.vocab, words=["breast", "cancer"], spaces=[True, False])
    doc = nlp.get_pipe("kogner")(doc)
    assert len(doc.spans["kogner"]) > 0


def test_int8_is_opt_in_and_saves_float_weights(span_model, tmp_path):
    """quantize=true runs the encoder in int8 on CPU; the saved pipeline keeps the float weights."""
    import torch

    span_model.save(tmp_path / "m")
    cfg = {"model": str(tmp_path / "m"), "labels": ["Disease"], "threshold": 0.0, "flat": False}
    fp32 = spacy.blank("en")
    fp32.add_pipe("kogner", config=cfg)
    int8 = spacy.blank("en")
    int8.add_pipe("kogner", config={**cfg, "quantize": True})
    a, b = fp32(TEXT), int8(TEXT)
    encoder = int8.get_pipe("kogner").model.gliner.model.token_rep_layer.bert_layer.model
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in encoder.modules())
    assert spans_of(a) == spans_of(b)  # threshold 0: the same candidate spans, scored slightly differently
    scores_a, scores_b = a.spans["kogner"].attrs["scores"], b.spans["kogner"].attrs["scores"]
    diff = [abs(x - y) for x, y in zip(scores_a, scores_b, strict=True)]
    assert 0 < max(diff) < 0.2
    int8.to_disk(tmp_path / "pipe")
    loaded = spacy.load(tmp_path / "pipe")
    assert loaded.get_pipe("kogner").quantize and loaded.get_pipe("kogner").model.quantized
    assert loaded(TEXT).spans["kogner"].attrs["scores"] == pytest.approx(b.spans["kogner"].attrs["scores"], abs=1e-5)
    saved = torch.load(tmp_path / "pipe" / "kogner" / "model" / "pytorch_model.bin", weights_only=True)
    original = span_model.gliner.model.state_dict()
    assert all(torch.equal(saved[k], v) for k, v in original.items() if k in saved)
    assert len(set(saved) & set(original)) == len(original)
