"""The distillation heads and losses: MLP_span, MLP_dist and L_dist (paper §2.3).

L_dist pulls the span vectors of KG-linked training spans towards the teacher's rows of
H = [Z, Z', Z''] through two MLPs into a shared space. ``dist_loss`` picks the form:
``mse`` (the paper: both MLPs trained; has a collapsed trivial minimum), ``mse_frozen`` (MSE to
a fixed random projection of H: cannot collapse), ``infonce`` (normalised vectors, in-batch
contrastive loss over linked spans; collapse costs log N) or ``kg_infonce`` (each linked span
against every node of its kind through the frozen projection: ``kg_term.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DIST_LOSSES = ("mse", "mse_frozen", "infonce", "kg_infonce")
# losses whose teacher projection MLP_dist stays at its seeded random initialisation
FROZEN_TEACHER = ("mse_frozen", "kg_infonce")


class DistillHeads(torch.nn.Module):
    """MLP_span (student span vector → shared space) and MLP_dist (teacher row of H → shared space).

    The paper trains both; with an MSE loss that has a trivial minimum (both map everything to
    one point), so ``freeze_teacher`` keeps MLP_dist at its seeded random initialisation: a fixed
    random projection of H cannot collapse, and the student must move towards it.
    """

    def __init__(
        self, span_dim: int, teacher_dim: int, hidden: int, shared: int, dropout: float, freeze_teacher: bool
    ) -> None:
        super().__init__()
        self.mlp_span = _mlp(span_dim, hidden, shared, dropout)
        self.mlp_dist = _mlp(teacher_dim, hidden, shared, dropout)
        if freeze_teacher:
            self.mlp_dist.requires_grad_(False)
        self.freeze_teacher = freeze_teacher

    def train(self, mode: bool = True) -> DistillHeads:
        """A frozen teacher projection stays deterministic (no dropout) in training too."""
        super().train(mode)
        if self.freeze_teacher:
            self.mlp_dist.eval()
        return self

    def forward(self, spans: torch.Tensor, teacher_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        target = self.mlp_dist(teacher_rows)
        if self.freeze_teacher:
            target = target.detach()
        return self.mlp_span(spans), target


def _mlp(inp: int, hidden: int, out: int, dropout: float) -> torch.nn.Sequential:
    return torch.nn.Sequential(
        torch.nn.Linear(inp, hidden), torch.nn.GELU(), torch.nn.Dropout(dropout), torch.nn.Linear(hidden, out)
    )


def dist_loss(
    kind: str, student: torch.Tensor, teacher: torch.Tensor, nodes: list[int], temperature: float
) -> torch.Tensor:
    """L_dist over the linked spans of a batch (summed over spans, like GLiNER's summed L_lang)."""
    if kind in ("mse", "mse_frozen"):
        return F.mse_loss(student, teacher, reduction="none").mean(-1).sum()
    s = F.normalize(student, dim=-1)
    t = F.normalize(teacher, dim=-1)
    logits = s @ t.T / temperature
    ids = torch.tensor(nodes, device=logits.device)
    positive = (ids.unsqueeze(0) == ids.unsqueeze(1)).float()
    log_prob = logits.log_softmax(-1)
    return -((log_prob * positive).sum(-1) / positive.sum(-1)).sum()
