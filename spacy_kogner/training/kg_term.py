"""The KG term on a scale that acts: a standardised teacher, a bank of every node, a share.

Why this module exists (issue 13): with GLiNER's summed focal loss, the paper's b·L_dist was
0.03–0.05 % of a·L_lang, the trainable MSE head collapsed, and in-batch contrast had <= 2 linked
spans to contrast. Three things fix the scale and the starvation:

* **A standardised teacher.** Every column of H = [Z, Z', Z''] is z-scored over all nodes and
  each block is scaled by ``weight / sqrt(block width)``, so each block adds the same expected
  squared norm (Z's 384 columns would otherwise drown Z' and Z''), and a weight of 0 removes a
  block (the H-block ablation).
* **A bank of every node** (``dist_loss = "kg_infonce"``). The teacher projection is frozen, so
  all nodes' projected rows are a constant computed once; each linked span is contrasted with
  every node of its node's kind (137 diseases, 1,552 compounds, ...), not with the handful of
  other linked spans in its batch. The same scores give the retrieval metric.
* **A control.** ``teacher_rows = "shuffled"`` gives every node another node's row of the same
  kind: linked spans of one node still share a target, but the target holds no knowledge of it.
* **b as a share.** With ``share_balance``, L_dist is rescaled by the running ratio of the two
  losses' magnitudes, so b·L_dist / (a·L_lang) ≈ b / a in expectation: b = 0.1 with a = 1 means
  the KG term is ~10 % of the loss, whatever the losses' units.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ConfigError

# "kg": each node reads its own row of H; "shuffled": a seeded permutation of the rows within each
# kind (the control that tells knowledge from a mere auxiliary clustering loss on linked spans)
TEACHER_ROWS = ("kg", "shuffled")


def standardised_blocks(store: Any, block_weights: Sequence[float]) -> np.ndarray:
    """H with every column z-scored over all nodes and block k scaled by ``w_k / sqrt(width_k)``.

    Columns with no spread (a constant feature) become 0 instead of dividing by zero."""
    order = list(store.meta.get("block_order") or store.meta["blocks"])
    if len(block_weights) != len(order):
        raise ConfigError(f"heads.block_weights needs one weight per block {order}, got {list(block_weights)}")
    if not any(w > 0 for w in block_weights):
        raise ConfigError("heads.block_weights: at least one block needs a weight > 0")
    h = np.asarray(store.H, dtype=np.float32)
    mean = h.mean(0, dtype=np.float64).astype(np.float32)
    std = h.std(0, dtype=np.float64).astype(np.float32)
    out = (h - mean) / np.where(std > 1e-8, std, np.inf)
    for name, weight in zip(order, block_weights, strict=True):
        start, stop = store.meta["blocks"][name]
        out[:, start:stop] *= weight / np.sqrt(max(1, stop - start))
    return out


class TeacherBank:
    """The teacher rows the KG term reads: raw or standardised H, and the kind of every row.

    ``projected`` caches MLP_dist(H) of whole kinds for the frozen projection (a constant)."""

    def __init__(
        self, store: Any, standardise: bool, block_weights: Sequence[float], rows: str = "kg", center: bool = True
    ) -> None:
        if rows not in TEACHER_ROWS:
            raise ConfigError(f"heads.teacher_rows must be one of {TEACHER_ROWS}, got {rows!r}")
        self.store = store
        self.center = center
        self.H = standardised_blocks(store, block_weights) if standardise else None
        kinds = np.asarray(store.kinds)
        self.kind_names, self.kind_of = np.unique(kinds, return_inverse=True)
        # row -> its position inside its kind's block of rows, and each kind's rows in order
        self.kind_rows = [np.flatnonzero(self.kind_of == k) for k in range(len(self.kind_names))]
        self.source = np.arange(len(kinds))  # which row of H each node reads
        if rows == "shuffled":  # the control: same kinds and row statistics, no node's own knowledge
            rng = np.random.default_rng(0)
            for block in self.kind_rows:
                self.source[block] = rng.permutation(block)
        self.position = np.empty(len(kinds), dtype=np.int64)
        for rows in self.kind_rows:
            self.position[rows] = np.arange(len(rows))
        self._projected: dict[int, torch.Tensor] = {}

    def rows(self, rows: Sequence[int]) -> np.ndarray:
        """Teacher rows (float32 [len(rows), r]) as the loss sees them."""
        source = self.source[np.asarray(rows, dtype=np.int64)]
        if self.H is None:
            return self.store.rows(source)
        return self.H[source]

    def projected(self, kind: int, mlp: torch.nn.Module, device: torch.device) -> torch.Tensor:
        """Unit-normalised MLP_dist rows of every node of one kind (computed once: MLP_dist is frozen).

        With ``center``, the kind's mean projected row is subtracted first: the bank only contrasts
        nodes of one kind, so their shared direction carries nothing, and under the frozen random
        projection it dominates (mean cosine between two side effects 0.86, between two genes 0.84,
        measured on the Hetionet H store), which left the KG term at log(#nodes) on 5,734 side effects."""
        if kind not in self._projected:
            rows = self.kind_rows[kind]
            with torch.no_grad():
                vecs = [
                    mlp(torch.from_numpy(self.rows(rows[i : i + 4096])).to(device)) for i in range(0, len(rows), 4096)
                ]
                table = torch.cat(vecs).float()
                if self.center and len(rows) > 1:
                    table = table - table.mean(0, keepdim=True)
            self._projected[kind] = F.normalize(table, dim=-1)
        return self._projected[kind]

    def clear(self) -> None:
        """Drop cached projections (after MLP_dist's weights change, e.g. a checkpoint is loaded)."""
        self._projected.clear()


def bank_scores(
    spans: torch.Tensor, rows: Sequence[int], bank: TeacherBank, mlp_dist: torch.nn.Module, temperature: float
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per kind present: (logits of its spans against every node of that kind, target positions)."""
    kinds = bank.kind_of[np.asarray(rows, dtype=np.int64)]
    normed = F.normalize(spans.float(), dim=-1)
    out = []
    for kind in np.unique(kinds):
        sel = np.flatnonzero(kinds == kind)
        table = bank.projected(int(kind), mlp_dist, spans.device)
        logits = normed[torch.from_numpy(sel).to(spans.device)] @ table.T / temperature
        target = torch.from_numpy(bank.position[np.asarray(rows, dtype=np.int64)[sel]]).to(spans.device)
        out.append((logits, target))
    return out


def bank_infonce(
    spans: torch.Tensor, rows: Sequence[int], bank: TeacherBank, mlp_dist: torch.nn.Module, temperature: float
) -> torch.Tensor:
    """Cross-entropy of each linked span against all nodes of its node's kind, summed over spans."""
    parts = bank_scores(spans, rows, bank, mlp_dist, temperature)
    return sum(F.cross_entropy(logits, target, reduction="sum") for logits, target in parts)


def retrieval_counts(scores: list[tuple[torch.Tensor, torch.Tensor]], ks: Sequence[int] = (1, 10)) -> dict[int, int]:
    """How many spans have their node within the top k of their kind, for each k."""
    hits = dict.fromkeys(ks, 0)
    for logits, target in scores:
        rank = (logits > logits.gather(1, target[:, None])).sum(1)  # nodes scored strictly higher
        for k in ks:
            hits[k] += int((rank < k).sum())
    return hits


class ShareBalancer:
    """Running magnitudes of L_lang and L_dist; ``scale`` makes b·scale·L_dist ≈ (b/a)·a·L_lang.

    Exponential moving averages of the detached losses (bias-corrected like Adam's moments, so
    the first steps are not scaled by a near-zero average); only steps that carry linked spans
    update L_dist's average."""

    def __init__(self, momentum: float) -> None:
        self.momentum = momentum
        self.lang = 0.0
        self.dist = 0.0
        self.n_lang = 0
        self.n_dist = 0

    def update(self, l_lang: float, l_dist: float | None) -> None:
        m = self.momentum
        self.lang = m * self.lang + (1 - m) * l_lang
        self.n_lang += 1
        if l_dist is not None:
            self.dist = m * self.dist + (1 - m) * l_dist
            self.n_dist += 1

    def scale(self) -> float:
        if not self.n_dist:
            return 1.0
        lang = self.lang / (1 - self.momentum**self.n_lang)
        dist = self.dist / (1 - self.momentum**self.n_dist)
        return lang / dist if dist > 1e-12 else 1.0

    def state_dict(self) -> dict[str, float]:
        return {"lang": self.lang, "dist": self.dist, "n_lang": self.n_lang, "n_dist": self.n_dist}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.lang, self.dist = float(state["lang"]), float(state["dist"])
        self.n_lang, self.n_dist = int(state["n_lang"]), int(state["n_dist"])
