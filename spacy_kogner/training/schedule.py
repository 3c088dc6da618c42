"""The learning-rate schedule, and fitting its length to a wall-time budget.

A run capped by ``max_minutes`` used to stop wherever the clock ran out, with the cosine schedule
planned for ``epochs`` still near its peak learning rate (the in-domain students of 2026-11-26 stopped
at 2-4 of 8 planned epochs). With ``fit_to_budget`` the schedule's end moves to the step the budget
is expected to reach, re-estimated at every evaluation from the run's own pace (evaluations
included), so a capped run still anneals. Without a budget the factors equal transformers'
``get_cosine_schedule_with_warmup`` / ``get_linear_schedule_with_warmup``, so earlier runs reproduce.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

SCHEDULERS = ("cosine", "linear")


@dataclass
class Schedule:
    """Warm-up then cosine or linear decay to ``horizon`` (at most ``planned``, the configured length)."""

    kind: str
    warmup: int
    planned: int
    horizon: int = 0

    def __post_init__(self) -> None:
        self.horizon = self.horizon or self.planned

    def factor(self, step: int) -> float:
        """The learning-rate multiplier at ``step``; 0 past the horizon (never a second cosine rise)."""
        if step < self.warmup:
            return step / max(1, self.warmup)
        progress = min(1.0, (step - self.warmup) / max(1, self.horizon - self.warmup))
        if self.kind == "cosine":
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
        return max(0.0, 1.0 - progress)

    def fit_to_budget(self, done: int, budget_left_s: float, pace_s: float) -> int:
        """Move the horizon to the step the remaining budget reaches at ``pace_s`` seconds per step
        (measured, evaluations included); returns the new horizon. The planned length stays the
        most a run does; the horizon stays past the warm-up and the current step."""
        if pace_s <= 0 or not math.isfinite(budget_left_s):
            return self.horizon
        reachable = done + max(0, int(budget_left_s / pace_s))
        self.horizon = max(done + 1, self.warmup + 1, min(self.planned, reachable))
        return self.horizon

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "warmup": self.warmup, "planned": self.planned, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.warmup, self.planned, self.horizon = int(state["warmup"]), int(state["planned"]), int(state["horizon"])
