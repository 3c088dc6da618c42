"""The GLiNER behaviour the package relies on, pinned (``pipeline/gliner_compat.py``).

If a GLiNER release changes any of it, these tests fail before users see wrong numbers.
"""

from __future__ import annotations

import json

import pytest
import torch

from spacy_kogner.pipeline import gliner_compat as compat
from spacy_kogner.pipeline.span_model import SpanModel


def test_installed_gliner_is_a_tested_version():
    gliner = compat.gliner_module()
    assert gliner.__version__ in compat.TESTED_GLINER


def test_untested_gliner_version_is_a_clear_error(monkeypatch):
    import gliner

    monkeypatch.setattr(gliner, "__version__", "9.9.9")
    monkeypatch.setattr(compat, "_checked", False)
    monkeypatch.delenv(compat.ALLOW_UNTESTED_ENV, raising=False)
    with pytest.raises(compat.GlinerVersionError, match="tested with gliner 0.2.29, but gliner 9.9.9"):
        compat.gliner_module()
    monkeypatch.setenv(compat.ALLOW_UNTESTED_ENV, "1")
    assert compat.gliner_module() is gliner


def test_collation_shapes(span_model):
    """The collated batch has one span row per (start word, width) and the label count we pass."""
    batch = span_model.collate([["breast", "cancer", "is", "bad"], ["x"]], ["disease", "gene"])
    assert batch["span_idx"].shape[:2] == (2, 4 * span_model.max_width)
    words, prompts, mask = compat.word_and_prompt_reps(span_model.gliner, batch, 4, 2)
    assert words.shape[:2] == (2, 4) and prompts.shape[:2] == (2, 2) and mask.shape == (2, 2)


def test_span_vectors_before_label_scoring_are_exposed(span_model):
    batch = compat.training_collator(span_model.gliner)(
        [{"tokenized_text": ["breast", "cancer", "is", "bad"], "ner": [[0, 1, "disease"]], "ner_labels": ["disease"]}]
    )
    inputs = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    _loss, vectors = compat.forward_with_span_vectors(span_model.gliner, inputs)
    assert vectors.shape[:3] == (1, 4, span_model.max_width)


def test_fast_span_scoring_equals_gliner_forward(span_model):
    """The factorised markerV0 scoring gives GLiNER's own logits on every valid span."""
    windows = [["BRCA1", "mutations", "cause", "breast", "cancer", "."], ["x"], ["Aspirin", "is", "a", "drug"] * 8]
    prompts = ["disease", "gene", "chemical"]
    batch = span_model.collate([span_model.model_words(w) for w in windows], prompts)
    span_model.gliner.eval()
    with torch.inference_mode():
        reference = compat.reference_logits(span_model.gliner, batch)
        fast = span_model._factorised(batch)[0]
    valid = span_model.score_windows(windows, prompts).valid
    assert fast.shape == reference.shape
    assert (fast - reference)[valid].abs().max() < 1e-4


def test_train_forward_matches_gliner_loss_and_span_vectors(span_model):
    """One pass gives GLiNER's own loss and its span_rep_layer vectors of the requested spans."""
    batch = compat.training_collator(span_model.gliner)(
        [
            {"tokenized_text": ["BRCA1", "causes", "breast", "cancer", "."], "ner": [[2, 3, "disease"]],
             "ner_labels": ["disease", "gene"]},
            {"tokenized_text": ["Aspirin", "helps", "."], "ner": [[0, 0, "chemical"]], "ner_labels": ["chemical"]},
        ]
    )  # fmt: skip
    inputs = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    index = (torch.tensor([0, 1]), torch.tensor([2, 0]), torch.tensor([1, 0]))
    span_model.gliner.eval()
    ref_loss, ref_vectors = compat.forward_with_span_vectors(
        span_model.gliner, inputs, alpha=0.75, gamma=2.0, reduction="sum"
    )
    loss, vectors = span_model.train_forward(inputs, index, alpha=0.75, gamma=2.0, reduction="sum")
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-5)
    assert (vectors - ref_vectors[index]).abs().max() < 1e-5
    loss.backward()  # differentiable through the factorised head


def test_save_writes_safetensors_and_reloads_equal(span_model, tmp_path):
    span_model.save(tmp_path / "m")
    names = {p.name for p in (tmp_path / "m").iterdir()}
    assert "model.safetensors" in names and "gliner_config.json" in names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    loaded = SpanModel.load(tmp_path / "m")
    a = span_model.score_windows([["breast", "cancer"]], ["disease"]).probs
    b = loaded.score_windows([["breast", "cancer"]], ["disease"]).probs
    assert (a - b).abs().max() < 1e-6


def test_split_words_is_gliner_splitter():
    assert compat.split_words("IL-2-induced fever (high).") == ["IL-2-induced", "fever", "(", "high", ")", "."]


def test_a_saved_model_holds_no_build_machine_path(span_model, tmp_path):
    span_model.save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "gliner_config.json").read_text())
    assert config["model_name"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert "/work/" not in (tmp_path / "m" / "gliner_config.json").read_text()
    assert SpanModel.load(tmp_path / "m").max_width == span_model.max_width


@pytest.mark.parametrize("n_labels", [1, 3])
def test_span_label_scores_have_bmm_gradients(n_labels):
    """The factorised head's label scoring (custom backward for few labels) gives bmm's own values
    and gradients, and runs under bf16 autocast with each gradient in its input's dtype."""
    from spacy_kogner.pipeline.span_model import _SpanLabelScores

    torch.manual_seed(0)
    spans = torch.randn(2, 30, 16, requires_grad=True)
    labels = torch.randn(2, n_labels, 16, requires_grad=True)
    weights = torch.randn(2, 30, n_labels)
    (torch.bmm(spans, labels.transpose(1, 2)) * weights).sum().backward()
    want = spans.grad.clone(), labels.grad.clone()
    spans.grad = labels.grad = None
    out = _SpanLabelScores.apply(spans, labels)
    assert torch.allclose(out, torch.bmm(spans, labels.transpose(1, 2)))
    (out * weights).sum().backward()
    assert torch.allclose(spans.grad, want[0], atol=1e-5) and torch.allclose(labels.grad, want[1], atol=1e-5)
    spans.grad = labels.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _SpanLabelScores.apply(spans, labels)
    assert out.dtype == torch.bfloat16
    (out.float() * weights).sum().backward()
    assert spans.grad.dtype == labels.grad.dtype == torch.float32
    assert torch.allclose(labels.grad, want[1], rtol=0.05, atol=0.5)
