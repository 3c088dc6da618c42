"""Dropout whose random mask is cheap to draw on a CPU.

A training-step profile of the student (BC2GM, batch 32, fp32, 2 threads, AMD EPYC) spent ~18 % of
the step in ``aten::bernoulli_``: torch's CPU dropout draws one random number per element from a
sequential generator. ``packed_keep_mask`` draws a quarter as many 64-bit integers and reads each as
four 16-bit ones, keeping an element when its 16-bit number clears ``round(p · 2^16)``: the drop rate
is ``p`` to within 2^-17 (0.1 → 0.100006), the scaling is exactly ``1 / (1 - p)``, and the draws come
from torch's seeded default generator, so runs stay reproducible. Forward and backward of one
dropout layer measured 3-5× faster than ``torch.nn.functional.dropout`` on that box.

Training only: at inference every dropout is the identity, and a saved model holds no trace of the
swap (dropout layers have no weights).
"""

from __future__ import annotations

import math

import torch

_INT16_MIN = -(2**15)
_INT64 = torch.iinfo(torch.int64)


def packed_keep_mask(shape: torch.Size | tuple[int, ...], p: float, like: torch.Tensor) -> torch.Tensor:
    """A ``{0, 1/(1-p)}`` mask of ``shape`` in ``like``'s dtype and device: 1/(1-p) with probability
    ~(1 - p). Multiply it into the activations to apply dropout."""
    count = math.prod(shape)
    words = torch.randint(_INT64.min, _INT64.max, ((count + 3) // 4,), dtype=torch.int64, device=like.device)
    draws = words.view(torch.int16)[:count].view(shape)
    keep = draws >= _INT16_MIN + round(p * 2**16)
    return keep.to(like.dtype) * (1.0 / (1.0 - p))


def keep_mask(layer: torch.nn.Dropout, shape: torch.Size | tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """The ``{0, 1/(1-p)}`` mask ``layer`` would draw for ``shape`` (packed for a ``PackedDropout``,
    torch's bernoulli otherwise): for dropout that shares one mask across a broadcast dimension."""
    if isinstance(layer, PackedDropout):
        return packed_keep_mask(shape, layer.p, like)
    keep = 1.0 - layer.p
    return torch.empty(shape, device=like.device, dtype=like.dtype).bernoulli_(keep) / keep


class PackedDropout(torch.nn.Dropout):
    """``torch.nn.Dropout`` drawing its mask with ``packed_keep_mask`` (same ``p``, same place in
    the model; ``inplace`` is not supported and is ignored)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p >= 1.0:
            return torch.zeros_like(x)
        return x * packed_keep_mask(x.shape, self.p, x)


def use_packed_dropout(module: torch.nn.Module) -> int:
    """Replace every ``torch.nn.Dropout`` inside ``module`` by a ``PackedDropout`` of the same rate;
    returns how many were replaced. Dropout fused into a kernel (the encoder's attention dropout
    inside scaled-dot-product attention) is not a module and stays torch's."""
    replaced = 0
    for parent in module.modules():
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Dropout:
                swap = PackedDropout(child.p)
                swap.train(child.training)
                setattr(parent, name, swap)
                replaced += 1
    return replaced
