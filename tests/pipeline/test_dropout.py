"""Packed dropout masks (``pipeline/dropout.py``): torch's dropout in distribution, cheaper to draw."""

from __future__ import annotations

import copy

import pytest
import torch

from spacy_kogner.pipeline.dropout import PackedDropout, packed_keep_mask, use_packed_dropout


@pytest.mark.parametrize("p", [0.1, 0.4])
def test_mask_has_the_rate_and_the_scaling_of_dropout(p):
    torch.manual_seed(0)
    mask = packed_keep_mask((400, 1000), p, torch.empty(0))
    assert mask.shape == (400, 1000) and mask.dtype == torch.float32
    assert mask.unique().tolist() == [0.0, pytest.approx(1 / (1 - p))]
    dropped = (mask == 0).float().mean().item()
    assert dropped == pytest.approx(p, abs=0.003)  # 400k draws: the standard error is < 0.001
    assert mask.mean().item() == pytest.approx(1.0, abs=0.005)  # expectation preserved


def test_mask_of_an_odd_size_and_no_systematic_pattern():
    """Sizes that are not a multiple of four work, and the four 16-bit draws read from one 64-bit
    word are independent: each of the four positions is dropped at the rate p."""
    torch.manual_seed(1)
    mask = packed_keep_mask((100_003,), 0.25, torch.empty(0))
    assert mask.shape == (100_003,)
    by_lane = (mask[:100_000].view(-1, 4) == 0).float().mean(0)
    assert torch.allclose(by_lane, torch.full((4,), 0.25), atol=0.01)


def test_masks_are_reproducible_from_torch_seed():
    torch.manual_seed(7)
    a = packed_keep_mask((64, 64), 0.1, torch.empty(0))
    torch.manual_seed(7)
    b = packed_keep_mask((64, 64), 0.1, torch.empty(0))
    assert torch.equal(a, b)


def test_packed_dropout_trains_like_dropout_and_is_identity_in_eval():
    layer = PackedDropout(0.4)
    x = torch.randn(32, 50, requires_grad=True)
    y = layer(x)
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / 0.6)
    y.sum().backward()  # the gradient flows through the kept elements only, scaled like the forward
    assert torch.allclose(x.grad, kept.float() / 0.6)
    layer.eval()
    assert layer(x) is x
    assert torch.equal(PackedDropout(0.0)(x), x)
    assert torch.equal(PackedDropout(1.0)(x), torch.zeros_like(x))


def test_every_dropout_of_a_real_gliner_model_is_swapped_and_scores_are_unchanged(span_model):
    """On the real span model: each nn.Dropout becomes a PackedDropout of the same rate, and
    inference (where dropout is the identity) gives the same scores as before."""
    model = copy.deepcopy(span_model)
    rates = [m.p for m in model.gliner.modules() if type(m) is torch.nn.Dropout]
    before = model.score_windows([["BRCA1", "causes", "breast", "cancer"]], ["disease", "gene"]).probs
    assert use_packed_dropout(model.gliner) == len(rates) > 0
    assert not any(type(m) is torch.nn.Dropout for m in model.gliner.modules())
    assert [m.p for m in model.gliner.modules() if isinstance(m, PackedDropout)] == rates
    after = model.score_windows([["BRCA1", "causes", "breast", "cancer"]], ["disease", "gene"]).probs
    assert torch.equal(before, after)


def test_swapped_span_head_dropout_is_the_one_the_factorised_head_uses(span_model):
    """The factorised span head reads its dropout from the model at each use: after the swap it is
    the PackedDropout, and train()/eval() on the model switch it (a reference kept from before the
    swap would stay in whatever mode it had and drop nothing, or drop at inference)."""
    model = copy.deepcopy(span_model)
    use_packed_dropout(model.gliner)
    head = model._head
    assert isinstance(head.dropout, PackedDropout) and head.dropout.p > 0
    model.train(True)
    assert head.dropout.training
    model.train(False)
    assert not head.dropout.training
    batch = model.collate([model.model_words(["BRCA1", "causes", "breast", "cancer", "."])], ["disease"])
    with torch.enable_grad():  # the training path of the head
        plain = model._factorised(batch)[1]
        head.dropout.train(True)  # only the span head's dropout, so the encoder's output is the same
        dropped = model._factorised(batch)[1]
    live = plain > 0
    kept = dropped[live] != 0
    assert 0.3 < 1 - kept.float().mean().item() < 0.5  # p = 0.4 of the live units dropped
    assert torch.allclose(dropped[live][kept], plain[live][kept] / 0.6, rtol=1e-4)
