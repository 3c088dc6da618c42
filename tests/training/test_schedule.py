"""The learning-rate schedule: transformers' schedules without a budget, and its end fitted to one."""

from __future__ import annotations

import json

import pytest
import torch
from toy_distill import CFG, overrides
from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

from spacy_kogner.training.distill import distill
from spacy_kogner.training.schedule import Schedule


@pytest.mark.parametrize(("kind", "make"), [("cosine", get_cosine_schedule_with_warmup),
                                            ("linear", get_linear_schedule_with_warmup)])  # fmt: skip
def test_without_a_budget_the_factors_are_transformers_schedules(kind, make):
    """Earlier runs (made with transformers' schedules) must reproduce to the digit."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    reference = make(optimizer, 7, 50).lr_lambdas[0]
    ours = Schedule(kind, warmup=7, planned=50)
    assert [ours.factor(s) for s in range(50)] == pytest.approx([reference(s) for s in range(50)], abs=1e-12)


def test_the_horizon_follows_the_budget_within_the_planned_length():
    s = Schedule("cosine", warmup=10, planned=1000)
    # 100 steps done, 60 s left at 0.5 s a step: the schedule ends 120 steps on
    assert s.fit_to_budget(100, budget_left_s=60.0, pace_s=0.5) == 220
    assert s.factor(220) == 0.0 and s.factor(500) == 0.0  # annealed, and no second cosine rise
    assert 0 < s.factor(160) < 1
    # a faster pace later moves the end out again, never past the planned length
    assert s.fit_to_budget(150, budget_left_s=1e6, pace_s=0.5) == 1000
    # a spent budget still leaves the current step and the warm-up behind the end
    assert s.fit_to_budget(5, budget_left_s=0.0, pace_s=0.5) == 11
    assert s.fit_to_budget(100, budget_left_s=float("inf"), pace_s=0.5) == 11  # no budget: unchanged


def test_a_capped_run_ends_its_schedule_with_the_budget(tmp_path):
    """With fit_to_budget the run anneals and ends near the cap (by its schedule, or by the cap a
    few steps before the schedule's end when the pace slowed after the last estimate); without it,
    the same cap stops the run mid-schedule at its peak rate."""
    extra = {"training.steps": 400, "training.eval_every": 4, "training.warmup_ratio": 0.0}
    fitted = distill(CFG, tmp_path / "fit", overrides(tmp_path, **extra, **{"training.max_minutes": 0.15}))
    d = fitted["details"]
    assert d["schedule_horizon"] < 400 and fitted["steps"] <= d["schedule_horizon"]
    log = [json.loads(x) for x in (tmp_path / "fit" / "log.jsonl").read_text().splitlines()]
    assert "horizon" in log[3]
    if d["ended_by"] == "schedule":
        assert fitted["steps"] == d["schedule_horizon"] and log[-1]["lr"] == 0.0
    else:
        assert d["ended_by"] == "max_minutes" and log[-1]["lr"] < 0.3 * 1e-4  # annealed most of the way
    assert d["budget_clock_s"] <= 0.15 * 60 * 1.5
    plain = {**extra, "training.max_minutes": 0.05, "training.fit_to_budget": False}
    capped = distill(CFG, tmp_path / "cap", overrides(tmp_path, **plain))
    assert capped["details"]["ended_by"] == "max_minutes" and capped["details"]["schedule_horizon"] == 400
    last = [json.loads(x) for x in (tmp_path / "cap" / "log.jsonl").read_text().splitlines()][-1]
    assert last["lr"] > 0.9 * 1e-4
