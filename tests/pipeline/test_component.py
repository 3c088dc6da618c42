"""The ``kogner`` pipe with the real GLiNER model on the real default encoder."""

from __future__ import annotations

import importlib.metadata
import re
import shutil

import pytest
import spacy
from spacy import displacy
from spacy.tokens import Doc, Span
from spacy.training import Example

from spacy_kogner.pipeline import gliner_compat as compat
from spacy_kogner.pipeline.component import KognerConfigError

TEXT = "BRCA1 mutations cause breast cancer. Aspirin reduces fever in children with influenza."


def spans_of(doc, key="kogner"):
    return [(s.start, s.end, s.label_) for s in doc.spans[key]]


def n_candidates(n_words: int, max_width: int) -> int:
    return sum(min(max_width, n_words - i) for i in range(n_words))


def test_factory_entry_point_is_declared():
    eps = importlib.metadata.entry_points(group="spacy_factories")
    assert any(ep.name == "kogner" and ep.value.startswith("spacy_kogner.pipeline.component") for ep in eps)


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


def test_entity_at_window_boundary_keeps_its_score(make_nlp, span_model):
    """A span seen in several windows keeps the highest of its window scores, exactly."""
    words = ["word"] * 18 + ["breast", "cancer"] + ["word"] * 10
    nlp = make_nlp(threshold=0.0, flat=False, labels=["Disease"], max_window_tokens=20, stride=8)
    doc = nlp(" ".join(words))
    scores = dict(zip(spans_of(doc), doc.spans["kogner"].attrs["scores"], strict=True))
    # the windows the pipe cuts: [0, 20), [8, 28), [16, 30); the span (18, 20) lies in all three
    per_window = []
    for start, end in ((0, 20), (8, 28), (16, 30)):
        probs = span_model.score_windows([words[start:end]], ["Disease"]).probs
        per_window.append(float(probs[0, 18 - start, 1, 0]))
    assert len(set(round(x, 6) for x in per_window)) > 1  # the contexts differ, so do the scores
    assert scores[(18, 20, "Disease")] == pytest.approx(max(per_window), abs=1e-6)


def test_pipe_equals_one_at_a_time(make_nlp):
    # multi_label: every (span, label) score is compared, so near-ties between two labels of an
    # untrained model cannot flip an argmax between the two runs
    nlp = make_nlp(threshold=0.2, flat=False, multi_label=True, batch_size=8)
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
    # doc.ents stays flat: one label per token, the best-scoring (span, label) pairs first
    assert sum(len(e) for e in doc.ents) == len({i for e in doc.ents for i in range(e.start, e.end)}) <= 2
    scores = dict(zip(spans_of(doc), doc.spans["kogner"].attrs["scores"], strict=True))
    for ent in doc.ents:
        assert scores[(ent.start, ent.end, ent.label_)] == max(
            v for (s, e, _), v in scores.items() if (s, e) == (ent.start, ent.end)
        )


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"labels": ["Disease", "Disease"]}, "Duplicate label 'Disease'"),
        ({"labels": [""]}, "Empty label or prompt"),
        ({"labels": [{"prompt": "x"}]}, "A label dict needs 'label'"),
        ({"labels": "Disease"}, "labels must be a list"),
        ({"threshold": 1.5}, r"threshold must be in \[0, 1\], got 1.5"),
        ({"threshold": -0.1}, r"threshold must be in \[0, 1\], got -0.1"),
        ({"stride": 300, "max_window_tokens": 256}, r"stride \(300\) must not exceed max_window_tokens \(256\)"),
        ({"batch_size": -1}, r"batch_size must be a positive integer or 0 \(auto\), got -1"),
        ({"device": "tpu"}, "Unknown device 'tpu'"),
        ({"prompt_thresholds": {"disease": 1.2}}, r"prompt_thresholds\['disease'\] must be a number in \[0, 1\]"),
        ({"prompt_thresholds": ["disease"]}, "prompt_thresholds must be a dict"),
    ],
)
def test_bad_config_is_a_clear_error(make_nlp, bad, message):
    with pytest.raises(KognerConfigError, match=message):
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
    """A 200,000-character document: every candidate span of every window comes back exactly once."""
    base = "The patient with cystic fibrosis received 20 mg of ibuprofen daily. "
    text = base * (200_000 // len(base) + 1)
    assert len(text) >= 200_000
    nlp = make_nlp(threshold=0.0, flat=False, labels=["Disease"], batch_size=64)
    doc = nlp(text)
    words = [t for t in doc if not t.is_space]
    got = spans_of(doc)
    assert len(got) == len(set(got)) == n_candidates(len(words), 12)
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
    ent_html = displacy.render(doc, style="ent", page=False)
    assert ent_html.count("<mark") == len(doc.ents) > 0
    first = doc.ents[0]
    assert first.text in ent_html and first.label_ in ent_html
    span_doc = make_nlp(threshold=0.0, labels=["Chemical"])("Aspirin treats fever")
    span_html = displacy.render(span_doc, style="span", options={"spans_key": "kogner"})
    assert len(span_doc.spans["kogner"]) > 0
    assert len(re.findall(r">\s*Chemical\s*<", span_html)) == len(span_doc.spans["kogner"])


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


def test_a_load_time_override_wins_over_the_saved_state(make_nlp, tmp_path):
    """spacy.load(path, config=...) overrides of run-time settings are applied, not silently
    replaced by the folder's saved kogner.json; without them the saved state (a tuned threshold,
    labels set after creation) is what loads."""
    nlp = make_nlp(threshold=0.1, labels=["Disease"])
    nlp.get_pipe("kogner").set_labels(["Disease", "Chemical"])  # saved state beyond config.cfg
    nlp.to_disk(tmp_path / "pipe")
    plain = spacy.load(tmp_path / "pipe").get_pipe("kogner")
    assert plain.cfg["threshold"] == 0.1 and plain.labels == ("Disease", "Chemical")
    loaded = spacy.load(tmp_path / "pipe", config={"components.kogner.threshold": 0.3})
    pipe = loaded.get_pipe("kogner")
    assert pipe.cfg["threshold"] == 0.3 and pipe.labels == ("Disease", "Chemical")
    relabelled = spacy.load(tmp_path / "pipe", config={"components.kogner.labels": ["Gene"]}).get_pipe("kogner")
    assert relabelled.labels == ("Gene",) and relabelled.cfg["threshold"] == 0.1
    # a bare component folder (no pipeline config.cfg beside it) loads its saved state
    shutil.copytree(tmp_path / "pipe" / "kogner", tmp_path / "bare" / "kogner")
    other = spacy.blank("en").add_pipe("kogner", config={"threshold": 0.9})
    other.from_disk(tmp_path / "bare" / "kogner")
    assert other.cfg["threshold"] == 0.1 and other.labels == ("Disease", "Chemical")


def test_a_calibrated_prompt_threshold_applies_to_its_prompt_only(make_nlp, tmp_path):
    """A prompt's own threshold (tuned on dev) decides its spans; other prompts keep ``threshold``.
    The result equals filtering the all-spans output per label, and it survives save/load."""
    labels = [{"label": "DIS", "prompt": "disease"}, {"label": "CHEM", "prompt": "chemical"}]
    every = make_nlp(threshold=0.0, flat=False, multi_label=True, labels=labels)(TEXT)
    scored = dict(zip(spans_of(every), every.spans["kogner"].attrs["scores"], strict=True))
    chem = sorted(v for (_, _, lbl), v in scored.items() if lbl == "CHEM")
    cut = chem[len(chem) // 2]  # a threshold that keeps about half of the chemical candidates
    nlp = make_nlp(threshold=0.0, flat=False, multi_label=True, labels=labels, prompt_thresholds={"Chemical": cut})
    got = dict(zip(spans_of(doc := nlp(TEXT)), doc.spans["kogner"].attrs["scores"], strict=True))
    expected = {k: v for k, v in scored.items() if k[2] == "DIS" or v > cut}
    assert set(got) == set(expected) and 0 < sum(k[2] == "CHEM" for k in got) < len(chem)
    assert nlp.get_pipe("kogner").cfg["prompt_thresholds"] == {"chemical": cut}  # case-folded key
    nlp.to_disk(tmp_path / "pipe")
    loaded = spacy.load(tmp_path / "pipe")
    assert set(spans_of(loaded(TEXT))) == set(expected)
    # a load-time value for a prompt replaces its calibrated one (spaCy merges a dict setting key by
    # key, so {} at load time would change nothing); configure() clears them all
    stricter = spacy.load(tmp_path / "pipe", config={"components.kogner.prompt_thresholds": {"chemical": 1.0}})
    assert {k[2] for k in spans_of(stricter(TEXT))} == {"DIS"}
    loaded.get_pipe("kogner").configure(prompt_thresholds={})
    assert set(spans_of(loaded(TEXT))) == set(scored)


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
    encoder = compat.encoder(int8.get_pipe("kogner").model.gliner)
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in encoder.modules())
    assert spans_of(a) == spans_of(b)  # threshold 0: the same candidate spans, scored slightly differently
    scores_a, scores_b = a.spans["kogner"].attrs["scores"], b.spans["kogner"].attrs["scores"]
    diff = [abs(x - y) for x, y in zip(scores_a, scores_b, strict=True)]
    assert 0 < max(diff) < 0.2
    int8.to_disk(tmp_path / "pipe")
    loaded = spacy.load(tmp_path / "pipe")
    assert loaded.get_pipe("kogner").quantize and loaded.get_pipe("kogner").model.quantized
    assert loaded(TEXT).spans["kogner"].attrs["scores"] == pytest.approx(b.spans["kogner"].attrs["scores"], abs=1e-5)
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "pipe" / "kogner" / "model" / "model.safetensors")
    original = span_model.gliner.model.state_dict()
    assert all(torch.equal(saved[k], v) for k, v in original.items() if k in saved)
    assert len(set(saved) & set(original)) == len(original)


def test_flat_ents_are_chosen_by_score_not_length(make_nlp):
    """With flat = false the span group keeps overlaps; doc.ents must still be the best-scoring
    non-overlapping spans (greedy by score), not the longest ones."""
    nlp = make_nlp(threshold=0.0, flat=False, labels=["Disease"])
    doc = nlp(TEXT)
    group = doc.spans["kogner"]
    ranked = sorted(zip(group, group.attrs["scores"], strict=True), key=lambda x: (-x[1], x[0].start, x[0].end))
    taken: set[int] = set()
    expected = []
    for span, _score in ranked:
        if not taken.intersection(range(span.start, span.end)):
            taken.update(range(span.start, span.end))
            expected.append((span.start, span.end, span.label_))
    assert [(e.start, e.end, e.label_) for e in doc.ents] == sorted(expected)
    longest = spacy.util.filter_spans(list(group))
    assert [(e.start, e.end) for e in doc.ents] != [(e.start, e.end) for e in longest]


def test_error_handler_reaches_the_pipe(make_nlp):
    """nlp.set_error_handler must reach the component: a failing batch is handed to it."""
    nlp = make_nlp(labels=[])  # no labels: annotating raises a KognerConfigError
    seen = []
    nlp.set_error_handler(lambda name, proc, docs, err: seen.append((name, len(docs), type(err).__name__)))
    out = list(nlp.pipe(["one text", "another text"], batch_size=2))
    assert seen and seen[0][0] == "kogner" and seen[0][2] == "KognerConfigError"
    assert out == []  # the failing batch is dropped, as spaCy's own pipes do
    assert isinstance(nlp.get_pipe("kogner"), spacy.pipeline.Pipe)


def test_to_disk_honours_exclude(make_nlp, tmp_path):
    pipe = make_nlp(labels=["Disease"]).get_pipe("kogner")
    pipe.to_disk(tmp_path / "no-model", exclude=["model"])
    assert (tmp_path / "no-model" / "kogner.json").is_file() and not (tmp_path / "no-model" / "model").exists()
    pipe.to_disk(tmp_path / "no-cfg", exclude=["cfg"])
    assert (tmp_path / "no-cfg" / "model").is_dir() and not (tmp_path / "no-cfg" / "kogner.json").exists()
    other = make_nlp(labels=["Gene"]).get_pipe("kogner")
    other.from_disk(tmp_path / "no-model", exclude=["model"])
    assert other.labels == ("Disease",)


@pytest.mark.parametrize("hashseed", ["19", "20", "24"])
def test_loading_a_pipeline_never_builds_its_config_model(make_nlp, tmp_path, python_exe, hashseed):
    """spaCy reads the component's ``model`` attribute while adding it (a runtime Protocol check on
    Python <= 3.11, for some hash seeds): that must not build the config's model source. Here the
    source does not exist, so building it would fail; the saved weights must load instead."""
    import subprocess

    nlp = make_nlp(labels=["Disease"])
    nlp.to_disk(tmp_path / "p")
    cfg_path = tmp_path / "p" / "config.cfg"
    cfg_path.write_text(cfg_path.read_text().replace('model = "default"', 'model = "/no/such/model/source"'))
    code = "import spacy, sys; nlp = spacy.load(sys.argv[1]); print(len(nlp('Aspirin treats fever').spans['kogner']))"
    env = {**__import__("os").environ, "PYTHONHASHSEED": hashseed}
    proc = subprocess.run([python_exe, "-c", code, str(tmp_path / "p")], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_many_labels_are_scored_in_groups_never_dropped(make_nlp):
    """150 labels do not fit in front of one window: they are scored in groups, every label gets
    its scores, and windows keep their text (on the old code labels were cut off silently and
    windows shrank to one word)."""
    labels = [f"biomedical concept number {i}" for i in range(150)]
    nlp = make_nlp(threshold=0.0, flat=False, multi_label=True, labels=labels)
    text = "Patients with breast cancer received tamoxifen ."
    doc = nlp(text)
    assert {s.label_ for s in doc.spans["kogner"]} == set(labels)
    assert len(doc.spans["kogner"]) == 150 * n_candidates(7, 12)
    pipe = nlp.get_pipe("kogner")
    model = pipe.ensure_model()
    groups = pipe._label_groups(model, [s.prompt for s in pipe.label_specs])
    assert len(groups) > 1 and sum(len(g) for _, g in groups) == 150
    assert all(model.max_subwords - model.prompt_subwords(g) >= 128 for _, g in groups)
    windows = pipe._windows(model, [doc], max(model.prompt_subwords(g) for _, g in groups))
    assert len(windows) == 1 and len(windows[0].words) == 7


def test_a_prompt_longer_than_the_encoder_is_a_clear_error(make_nlp):
    nlp = make_nlp(labels=["Disease", {"label": "Long", "prompt": "very long description " * 300}])
    with pytest.raises(KognerConfigError, match="subwords alone, more than the"):
        nlp("Aspirin treats fever")


def test_bf16_precision_scores_close_to_fp32(span_model, tmp_path):
    """precision = "bf16" autocasts the forward pass; scores stay close and weights stay fp32."""
    import torch

    span_model.save(tmp_path / "m")
    cfg = {"model": str(tmp_path / "m"), "labels": ["Disease"], "threshold": 0.0, "flat": False}
    fp32, bf16 = spacy.blank("en"), spacy.blank("en")
    fp32.add_pipe("kogner", config=cfg)
    bf16.add_pipe("kogner", config={**cfg, "precision": "bf16"})
    a, b = fp32(TEXT), bf16(TEXT)
    assert bf16.get_pipe("kogner").model.autocast_dtype == torch.bfloat16
    assert spans_of(a) == spans_of(b)
    diff = [
        abs(x - y) for x, y in zip(a.spans["kogner"].attrs["scores"], b.spans["kogner"].attrs["scores"], strict=True)
    ]
    assert 0 < max(diff) < 0.05
    assert all(p.dtype == torch.float32 for p in bf16.get_pipe("kogner").model.parameters())
    with pytest.raises(KognerConfigError, match="precision must be one of"):
        spacy.blank("en").add_pipe("kogner", config={"precision": "fp8"})
