"""kg-study end to end on a toy corpus and a small real H store: paired arms, summary, resume."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import srsly
from toy_distill import CFG, overrides, write_corpus, write_teacher

from spacy_kogner.config import ConfigError
from spacy_kogner.workflow.kg_study import Regime, StudySettings, arm_names, load_study, run_config, run_study

REPO = Path(__file__).resolve().parents[2]


def write_study(tmp: Path, arms: str = '["z_only"]') -> Path:
    fast = overrides(tmp)  # writes an unlinked toy dev.json: the study's linked one below replaces it
    teacher = write_teacher(tmp / "teacher")
    train = write_corpus(tmp / "train.json", link=True)
    dev = write_corpus(tmp / "dev.json", link=True)
    training = "\n".join(
        f"{k.split('.', 1)[1]} = {json.dumps(v)}" for k, v in fast.items() if k.startswith("training.")
    )
    text = f"""
[study]
distill_config = "{CFG}"
teacher = "{teacher}"
regimes = ["toy"]
seeds = [1, 2]
shares = [0.3]
arms = {arms}
threads = 1
min_gain = 1.5
step_cost_steps = 2
step_cost_warmup = 1
results = "{tmp / "results"}"
runs = "{tmp / "runs"}"

[distill]

[distill.heads]
standardise = true

[distill.training]
{training}
dist_loss = "kg_infonce"
loss_norm = "per_span"

[regimes]

[regimes.toy]
train = "{train}"
dev = "{dev}"
test = "{dev}"
fraction = 1.0

[arms]

[arms.z_only]

[arms.z_only.training]
a = 1.0
b = 0.3
share_balance = true

[arms.z_only.heads]
block_weights = [1.0, 0.0, 0.0]
"""
    path = tmp / "study.cfg"
    path.write_text(text)
    return path


def test_study_pairs_arms_by_seed_and_resumes(tmp_path):
    config = write_study(tmp_path)
    summary = run_study(config)
    cells = {c["arm"]: c for c in summary["cells"]}
    assert set(cells) == {"b0", "share0.3", "z_only"}
    for arm, cell in cells.items():
        assert cell["seeds"] == [1, 2] and len(cell["f1"]) == 2
        assert cell["top10"] is not None and cell["top10_before"] is not None
        assert {k: v["spans"] for k, v in cell["top10_by_kind"].items()} == {"Compound": 3, "Disease": 2, "Symptom": 1}
        assert {k: v["spans"] for k, v in cell["top10_by_seen"].items()} == {"seen": 6}  # train links them all
        if arm == "b0":
            assert "paired_diff_mean" not in cell and cell["b"] == 0.0 and cell["step_cost_paired"] is None
        else:
            assert cell["paired_seeds"] == [1, 2] and len(cell["paired_diff"]) == 2
            assert cell["paired_diff"][0] == pytest.approx(cell["f1"][0] - cells["b0"]["f1"][0])
            assert isinstance(cell["gain"], bool) and cell["step_cost_vs_b0"] > 0
            cost = cell["step_cost_paired"]  # one process, b = 0 and b > 0 on the same batches
            assert cost["steps"] == 2 and cost["seed"] == 1 and cost["median_ratio"] > 0
            assert (tmp_path / "runs" / "toy" / arm / "step_cost.json").is_file()
            assert 0 < cell["dist_share"] < 1
    z_only = json.loads((tmp_path / "runs" / "toy" / "z_only" / "seed1" / "metrics.json").read_text())
    assert z_only["details"]["block_weights"] == [1.0, 0.0, 0.0]
    results = tmp_path / "results"
    assert json.loads((results / "kg_study.json").read_text()) == summary
    assert "| toy | share0.3 |" in (results / "kg_study.md").read_text()
    assert "| regime | arm | Compound | Disease | Symptom |" in (results / "kg_study.md").read_text()
    assert (results / "kg_study.png").stat().st_size > 0
    mtime = (tmp_path / "runs" / "toy" / "b0" / "seed1" / "test.json").stat().st_mtime
    assert run_study(config) == summary  # finished runs are not trained again
    assert (tmp_path / "runs" / "toy" / "b0" / "seed1" / "test.json").stat().st_mtime == mtime
    # an earlier summary's seeds whose runs are not here (another machine) are carried over, per
    # seed: a seed finished here replaces its earlier record; cells of other regimes stay as they are
    earlier = {**cells["b0"], "regime": "elsewhere"}
    seed3 = {**cells["share0.3"]["per_seed"]["1"], "f1": 50.0}
    stale = {**cells["share0.3"], "per_seed": {"1": {**seed3, "f1": 0.0}, "3": seed3}}
    (results / "kg_study.json").write_text(json.dumps({**summary, "cells": [earlier, stale]}))
    merged = {(c["regime"], c["arm"]): c for c in run_study(config)["cells"]}
    assert merged["elsewhere", "b0"] == earlier
    share = merged["toy", "share0.3"]
    assert share["seeds"] == [1, 2, 3] and share["f1"] == [*cells["share0.3"]["f1"], 50.0]
    assert share["paired_seeds"] == [1, 2]  # b0 has no seed 3
    assert "| elsewhere | b0 |" in (results / "kg_study.md").read_text()
    # a summary written before records were kept per seed: per-seed F1, the cell's other means
    legacy = {k: v for k, v in cells["share0.3"].items() if k not in ("per_seed", "step_cost_paired")}
    (results / "kg_study.json").write_text(json.dumps({**summary, "cells": [{**legacy, "regime": "old"}]}))
    old = {(c["regime"], c["arm"]): c for c in run_study(config)["cells"]}["old", "share0.3"]
    assert old["f1"] == legacy["f1"] and old["top10"] == legacy["top10"] and set(old["per_seed"]) == {"1", "2"}
    assert old["step_cost_paired"] is None  # measured for regime "toy" only; "old" had none


def test_an_arm_without_a_section_fails_before_training(tmp_path):
    config = write_study(tmp_path, arms='["nowhere"]')
    with pytest.raises(ConfigError, match="nowhere"):
        run_study(config)
    assert not (tmp_path / "runs").exists()


def test_a_regimes_own_shares_and_arms_replace_the_studys():
    study = StudySettings("d.cfg", "t", ["a"], [1], [0.1, 0.3], ["shuffled_h"], 1, 1.5, "r", "runs")
    assert arm_names(study, Regime("tr", "dv", "te")) == ["b0", "share0.1", "share0.3", "shuffled_h"]
    assert arm_names(study, Regime("tr", "dv", "te", shares=[], arms=["z_only"])) == ["b0", "z_only"]
    assert arm_names(study, Regime("tr", "dv", "te", shares=[], arms=["z_only"], baseline=False)) == ["z_only"]
    with pytest.raises(ConfigError, match="regime shares"):
        Regime("tr", "dv", "te", shares=[1.5])


def test_the_shipped_study_config_gives_a_valid_distill_config_for_every_run(monkeypatch, tmp_path):
    """configs/kg_study.cfg as `spacy project run kg-study` reads it: it parses, every arm a regime
    names has a section, and every (regime, arm) run's distillation config passes its checks."""
    monkeypatch.chdir(REPO)  # the study names configs/distill.cfg relative to the repository
    teacher = write_teacher(tmp_path / "teacher")  # the real one is a build output, not in a clone
    study, regimes, arms, arm_cfgs = load_study(REPO / "configs" / "kg_study.cfg", {"study.teacher": str(teacher)})
    assert study.step_cost_steps > 0
    for name, regime in regimes.items():
        for arm in arms[name]:
            cfg = run_config(study, regime, study.seeds[0], arm_cfgs[arm])
            assert (cfg["training"]["b"] > 0) == (arm != "b0"), (name, arm)
    assert {"z_only", "zprime_only", "zdoubleprime_only"} <= set(arms["ncbi_10_names"])


def test_the_project_command_points_every_regime_it_runs_at_the_profiles_corpus():
    """`spacy project run kg-study` overrides each regime's data paths with the profile's corpus
    folder; a regime added to [study] regimes without its overrides would read the config's bare
    corpus/ paths, which no profile builds, and fail after hours of earlier cells."""
    _, regimes, _, _ = load_study(REPO / "configs" / "kg_study.cfg")
    command = next(c for c in srsly.read_yaml(REPO / "project.yml")["commands"] if c["name"] == "kg-study")
    study_line = next(line for line in command["script"] if " kg-study " in line)
    words = shlex.split(study_line)
    given = {words[i][2:]: words[i + 1] for i, w in enumerate(words) if w.startswith("--regimes.")}
    for name, regime in regimes.items():
        keys = ["train", "dev", "test"] + (["extra_train"] if regime.extra_train else [])
        for key in keys:
            value = given.get(f"regimes.{name}.{key}", "")
            assert value.startswith("corpus/${vars.profile}/"), (name, key, value)
            assert Path(value).name == Path(getattr(regime, key)).name, (name, key, value)
