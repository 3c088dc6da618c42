"""The KG study: does distilling the knowledge graph make the student better, and where?

``python -m spacy_kogner kg-study configs/kg_study.cfg`` trains, for every regime (a training
corpus, possibly a seeded fraction of it), every seed and every arm, one student with the
distillation config's settings, then scores its best model on the regime's full test split:

* arms ``b0`` (plain GLiNER fine-tuning: the ablation), ``share<b>`` for each KG share b of
  ``[study] shares`` (a = 1 with ``share_balance``, so b is the KG term's share of the loss),
  and any named arm of ``[arms.<name>]`` listed in ``[study] arms`` (e.g. ``paper_literal``, the
  paper's a = 0.8, b = 0.2 on the raw loss scale, or one H block only);
* paired by seed: every arm of a seed sees the same training subset, batches and dropout masks.

Each run folder keeps its run summary, log, retrieval evidence (``retrieval.json``: top-1/top-10
of each dev linked span's node among all nodes of its kind, before and after training) and
``test.json``; a finished run is skipped, so the command resumes. The summary
(``kg_study.json`` / ``.md`` / ``.png`` in ``[paths] results``) gives per cell the per-seed F1,
mean ± sd, the paired difference to ``b0`` with its sd, and ``gain``: true only where the paired
difference is >= ``min_gain`` and larger than its own spread across seeds.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import _flatten, load_config, read_section, require
from ..run_summary import SUMMARY_FILE

TEST_FILE = "test.json"
STEP_COST_FILE = "step_cost.json"


@dataclass
class StudySettings:
    """``[study]``: the distillation config every run starts from, and what varies."""

    distill_config: str
    teacher: str
    regimes: list[str]
    seeds: list[int]
    shares: list[float]
    arms: list[str]
    threads: int
    min_gain: float
    results: str
    runs: str
    # the KG term's step cost measured in one process (Distiller.paired_step_cost): batch pairs
    # per arm with b > 0, after warm-up pairs; 0 skips it (the cost then comes from run pairs only)
    step_cost_steps: int = 0
    step_cost_warmup: int = 0

    def __post_init__(self) -> None:
        require(len(self.seeds) >= 1, "[study] seeds: at least one seed")
        require(self.step_cost_steps >= 0 and self.step_cost_warmup >= 0, "[study] step_cost_* must be >= 0")
        require(all(0 < s < 1 for s in self.shares), "[study] shares must be in (0, 1): b = 0 always runs as b0")


@dataclass
class Regime:
    """``[regimes.<name>]``: a training corpus (or a seeded fraction of it) with its dev and test;
    ``extra_train``: sentences every arm also trains on, whole (the KG's node names: ``kg-names``);
    ``shares`` / ``arms``: where given, this regime's own list replaces ``[study]``'s (b0 always
    runs), so that one config reproduces a study whose regimes ran different arms; ``baseline =
    false`` skips b0 where a regime measures retrieval only (its cells carry no paired difference)."""

    train: str
    dev: str
    test: str
    fraction: float = 1.0
    extra_train: str = ""
    shares: list[float] | None = None
    arms: list[str] | None = None
    baseline: bool = True

    def __post_init__(self) -> None:
        require(0 < self.fraction <= 1, "regime fraction must be in (0, 1]")
        require(all(0 < s < 1 for s in self.shares or []), "regime shares must be in (0, 1)")


def arm_overrides(arm: str, named: dict[str, Any]) -> dict[str, Any]:
    """The distillation overrides that define one arm (on top of ``[distill]``)."""
    if arm == "b0":
        return {"training.b": 0.0}
    if arm.startswith("share"):
        return {"training.a": 1.0, "training.b": float(arm[5:]), "training.share_balance": True}
    require(arm in named, f"[study] arms: {arm!r} has no [arms.{arm}] section")
    return _flatten(named[arm])


def arm_names(study: StudySettings, regime: Regime) -> list[str]:
    """b0 (unless the regime has no baseline), the regime's (else the study's) shares, then its
    named arms."""
    shares = study.shares if regime.shares is None else regime.shares
    named = study.arms if regime.arms is None else regime.arms
    return ["b0"] * regime.baseline + [f"share{s:g}" for s in shares] + list(named)


def load_study(
    config: str | Path, overrides: dict[str, Any] | None = None
) -> tuple[StudySettings, dict[str, Regime], dict[str, list[str]], dict[str, dict[str, Any]]]:
    """The study's settings, its regimes, each regime's arms and each arm's distillation overrides
    (an arm without a section fails here, before any training)."""
    cfg = load_config(config, overrides)
    study = read_section(StudySettings, cfg["study"], "study")
    regimes = {name: read_section(Regime, cfg["regimes"][name], f"regimes.{name}") for name in study.regimes}
    base = _flatten(dict(cfg.get("distill", {})))
    named = dict(cfg.get("arms", {}))
    arms = {name: arm_names(study, regime) for name, regime in regimes.items()}
    every_arm = dict.fromkeys(arm for names in arms.values() for arm in names)
    arm_cfgs = {arm: {**base, **arm_overrides(arm, named)} for arm in every_arm}
    return study, regimes, arms, arm_cfgs


def run_study(
    config: str | Path,
    overrides: dict[str, Any] | None = None,
    only: str = "",
    summary_only: bool = False,
) -> dict[str, Any]:
    """Train and score every (regime, arm, seed) not finished yet, then write the summary."""
    study, regimes, arms, arm_cfgs = load_study(config, overrides)
    if not summary_only:
        for name, regime in regimes.items():
            if only and only != name:
                continue
            for seed in study.seeds:
                for arm in arms[name]:
                    _run_cell(study, name, regime, arm, seed, arm_cfgs[arm])
            for arm in arms[name]:
                _measure_step_cost(study, name, regime, arm, arm_cfgs[arm])
    results = Path(study.results)
    previous_file = results / "kg_study.json"
    previous = json.loads(previous_file.read_text(encoding="utf8")) if previous_file.is_file() else None
    summary = summarise(study, regimes, arms, previous)
    results.mkdir(parents=True, exist_ok=True)
    (results / "kg_study.json").write_text(json.dumps(summary, indent=2), encoding="utf8")
    (results / "kg_study.md").write_text(render_markdown(summary), encoding="utf8")
    plot(summary, results / "kg_study.png")
    return summary


def _run_cell(study: StudySettings, name: str, regime: Regime, arm: str, seed: int, arm_cfg: dict[str, Any]) -> None:
    """One training run and its test score (skipped when both exist)."""
    from ..training.batches import read_records
    from ..training.distill import Distiller

    run = Path(study.runs) / name / arm / f"seed{seed}"
    if (run / SUMMARY_FILE).is_file() and (run / TEST_FILE).is_file():
        return
    cfg = run_config(study, regime, seed, arm_cfg)
    run.mkdir(parents=True, exist_ok=True)
    cfg.to_disk(run / "config.cfg")
    distiller = Distiller(cfg, run)
    summary = distiller.run()
    threshold = summary["details"]["threshold"]
    scores = distiller.score_model(run / "model-best", read_records(regime.test), threshold)
    (run / TEST_FILE).write_text(json.dumps({"threshold": threshold, **scores}, indent=2), encoding="utf8")


def run_config(study: StudySettings, regime: Regime, seed: int, arm_cfg: dict[str, Any]) -> Any:
    """The distillation config of one (regime, arm, seed) run, checked."""
    from ..training.distill import check_config

    overrides = {
        **arm_cfg,
        "paths.train": regime.train,
        "paths.dev": regime.dev,
        "paths.extra_train": regime.extra_train,
        "paths.teacher": study.teacher,
        "training.train_fraction": regime.fraction,
        "training.seed": seed,
        "training.num_threads": study.threads,
    }
    cfg = load_config(study.distill_config, overrides)
    check_config(cfg, study.distill_config)
    return cfg


def _measure_step_cost(study: StudySettings, name: str, regime: Regime, arm: str, arm_cfg: dict[str, Any]) -> None:
    """The arm's step cost against b = 0 in one process, on its first seed's batches
    (``STEP_COST_FILE`` in the arm's folder; skipped when it exists, off when ``step_cost_steps = 0``)."""
    from ..training.distill import Distiller

    out = Path(study.runs) / name / arm / STEP_COST_FILE
    if not study.step_cost_steps or out.is_file():
        return
    cfg = run_config(study, regime, study.seeds[0], arm_cfg)
    if cfg["training"]["b"] <= 0:
        return
    with tempfile.TemporaryDirectory() as scratch:
        cost = Distiller(cfg, scratch).paired_step_cost(study.step_cost_steps, study.step_cost_warmup)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**cost, "seed": study.seeds[0]}, indent=2), encoding="utf8")


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(
    study: StudySettings, regimes: dict[str, Regime], arms: dict[str, list[str]], previous: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Per regime and arm: per-seed test F1 (%), mean ± sd, paired difference to b0, retrieval.

    ``previous`` (an earlier summary) contributes the seeds whose runs are not on this machine (run
    folders are git-ignored; the summary is what a study accumulates across machines and sessions):
    a seed finished here replaces its earlier record, the other seeds are kept, and cells of regimes
    or arms this study does not name are carried over as they are."""
    earlier = _earlier_runs(previous)
    keys = list(earlier)
    keys += [(name, arm) for name in regimes for arm in arms[name] if (name, arm) not in earlier]
    runs: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    cells_before = (previous or {}).get("cells", [])
    costs = {(c["regime"], c["arm"]): c["step_cost_paired"] for c in cells_before if c.get("step_cost_paired")}
    for name, arm in keys:
        ours = name in regimes and arm in arms[name]
        fresh = _finished(Path(study.runs) / name / arm, study.seeds) if ours else {}
        runs[name, arm] = {**earlier.get((name, arm), {}), **fresh}
        cost_file = Path(study.runs) / name / arm / STEP_COST_FILE
        if ours and cost_file.is_file():
            costs[name, arm] = json.loads(cost_file.read_text(encoding="utf8"))
    cells = [
        _cell(name, arm, runs[name, arm], runs.get((name, "b0"), {}), study.min_gain, costs.get((name, arm)))
        for name, arm in keys
    ]
    return {"cells": [c for c in cells if c], "min_gain": study.min_gain}


def _cell(
    regime: str,
    arm: str,
    done: dict[int, dict[str, Any]],
    b0: dict[int, dict[str, Any]],
    min_gain: float,
    paired_cost: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One (regime, arm) cell from its per-seed records; empty where no seed finished.
    ``paired_cost``: the arm's one-process step cost (``_measure_step_cost``), where measured."""
    if not done:
        return {}
    seeds = sorted(done)
    f1 = [done[s]["f1"] for s in seeds]

    def mean_of(key: str) -> float | None:
        return _mean([done[s][key] for s in seeds])

    cell: dict[str, Any] = {
        "regime": regime, "arm": arm, "b": done[seeds[0]]["b"], "seeds": seeds, "f1": f1,
        "f1_mean": statistics.mean(f1), "f1_sd": _sd(f1),
        "dist_share": mean_of("dist_share"), "loss_share": mean_of("loss_share"),
        "linked_spans_per_step": mean_of("linked_spans"), "step_s": mean_of("step_s"), "epochs": mean_of("epochs"),
        "top1": mean_of("top1"), "top10": mean_of("top10"), "top1_before": mean_of("top1_before"),
        "top10_before": mean_of("top10_before"), "chance_top10": mean_of("chance_top10"),
        "top10_by_kind": _by_kind([done[s]["by_kind"] for s in seeds]),
        "top10_by_seen": _by_kind([done[s].get("by_seen") or {} for s in seeds]),
    }  # fmt: skip
    paired = [s for s in seeds if s in b0]
    if arm != "b0" and paired:
        diffs = [done[s]["f1"] - b0[s]["f1"] for s in paired]
        mean, sd = statistics.mean(diffs), _sd(diffs)
        # per seed, the arm's median step over b0's; the median over seeds, as a seed whose two
        # runs fell in different sessions (machine speed drifts) must not set the cost
        ratios = [done[s]["step_s"] / b0[s]["step_s"] for s in paired if done[s]["step_s"] and b0[s]["step_s"]]
        cell.update({
            "paired_seeds": paired, "paired_diff": diffs, "paired_diff_mean": mean, "paired_diff_sd": sd,
            "gain": len(paired) > 1 and mean >= min_gain and mean > sd,
            "step_cost_vs_b0": statistics.median(ratios) if ratios else None,
        })  # fmt: skip
    cell["step_cost_paired"] = paired_cost
    cell["per_seed"] = {str(s): done[s] for s in seeds}
    return cell


def _earlier_runs(previous: dict[str, Any] | None) -> dict[tuple[str, str], dict[int, dict[str, Any]]]:
    """The per-seed records of an earlier summary. A cell written before records were kept per
    seed has exact per-seed F1 only: its other fields (step time, retrieval) are the cell's means."""
    out: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for c in (previous or {}).get("cells", []):
        if "per_seed" in c:
            records = {int(seed): record for seed, record in c["per_seed"].items()}
        else:
            shared = {
                "b": c["b"], "dist_share": c["dist_share"], "loss_share": c["loss_share"],
                "linked_spans": c["linked_spans_per_step"], "step_s": c["step_s"], "epochs": c["epochs"],
                "top1": c["top1"], "top10": c["top10"], "top1_before": c["top1_before"],
                "top10_before": c["top10_before"], "chance_top10": c["chance_top10"],
                "by_kind": c.get("top10_by_kind") or {}, "by_seen": c.get("top10_by_seen") or {},
            }  # fmt: skip
            records = {seed: {**shared, "f1": f1} for seed, f1 in zip(c["seeds"], c["f1"], strict=True)}
        out[c["regime"], c["arm"]] = records
    return out


def _by_kind(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per group (a KG kind, or seen / unseen in training): dev linked spans (per run) and top-10
    retrieval (%), means over the seeds that have the group."""
    kinds = sorted({kind for run in runs for kind in run})
    out = {}
    for kind in kinds:
        present = [run[kind] for run in runs if kind in run]
        out[kind] = {key: statistics.mean(g[key] for g in present) for key in ("spans", "top10")}
        if all("chance_top10" in g for g in present):
            out[kind]["chance_top10"] = statistics.mean(g["chance_top10"] for g in present)
    return out


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.mean(kept) if kept else None


def _finished(arm_dir: Path, seeds: list[int]) -> dict[int, dict[str, Any]]:
    """The seeds of one arm whose run and test score exist, reduced to what the summary reads."""
    out = {}
    for seed in seeds:
        run = arm_dir / f"seed{seed}"
        if not ((run / SUMMARY_FILE).is_file() and (run / TEST_FILE).is_file()):
            continue
        details = json.loads((run / SUMMARY_FILE).read_text(encoding="utf8"))["details"]
        test = json.loads((run / TEST_FILE).read_text(encoding="utf8"))
        retrieval = details.get("kg_retrieval") or {}
        after, before = retrieval.get("after") or {}, retrieval.get("before") or {}
        out[seed] = {
            "f1": 100 * test["f"], "b": details["b"], "dist_share": details.get("median_dist_share"),
            "loss_share": _loss_share(run / "log.jsonl", details["a"], details["b"]),
            "linked_spans": details.get("mean_linked_spans"), "step_s": details.get("median_step_s"),
            "epochs": details.get("epochs"), "top1": after.get("top1"), "top10": after.get("top10"),
            "top1_before": before.get("top1"), "top10_before": before.get("top10"),
            "chance_top10": after.get("chance_top10"), "by_kind": after.get("by_kind") or {},
            "by_seen": after.get("by_seen") or {},
        }  # fmt: skip
    return out


def _loss_share(log_path: Path, a: float, b: float) -> float | None:
    """b·L_dist / a·L_lang summed over the steps that carried linked spans (the share of the loss
    the KG term made up; the per-step median is larger, as L_lang has a heavy tail)."""
    from ..training.distill import iter_log

    if not log_path.is_file():
        return None
    rows = [r for r in iter_log(log_path) if r.get("linked_spans")]
    lang = sum(a * r["l_lang"] for r in rows)
    dist = sum(b * r.get("dist_scale", 1.0) * r["l_dist"] for r in rows)
    return dist / lang if lang > 0 else None


def _f(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _group(g: dict[str, float]) -> str:
    chance = f", chance {g['chance_top10']:.1f}" if "chance_top10" in g else ""
    return f"{g['top10']:.1f} ({g['spans']:.0f}{chance})"


def render_markdown(summary: dict[str, Any]) -> str:
    lines = [
        "# Does the knowledge graph help? (kg-study)",
        "",
        "Exact-span F1 (%) on the regime's full test split, one run per seed; arms paired by seed "
        "(same training subset, batches and dropout masks). Δ = paired difference to b0 (mean ± sd "
        f"over seeds); a gain is claimed only where Δ >= {summary['min_gain']} and Δ > its sd. "
        "Retrieval: dev KG-linked spans, rank of the linked node among all nodes of its kind "
        "(projected span vs projected teacher row), after training (before training in brackets). "
        "Step cost: the arm's step time over b0's, measured in one process on the same batches, b = 0 and "
        "the arm's b alternating (median of the per-batch ratios); in brackets, the median over seeds of "
        "the arm's median step time over b0's from separate runs (the machine's drift between runs included).",
        "",
        "| regime | arm | b | seeds | F1 per seed | F1 mean ± sd | Δ vs b0 | gain | KG share (summed / median step) "
        "| linked/step "
        "| top-1 | top-10 | chance top-10 | step cost |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in summary["cells"]:
        delta = f"{c['paired_diff_mean']:+.2f} ± {c['paired_diff_sd']:.2f}" if "paired_diff_mean" in c else ""
        gain = ("yes" if c["gain"] else "no") if "gain" in c else ""
        runs = f"({c['step_cost_vs_b0']:.2f}×)" if c.get("step_cost_vs_b0") else ""
        paired = f"{c['step_cost_paired']['median_ratio']:.2f}× " if c.get("step_cost_paired") else ""
        cost = (paired + runs).strip()
        share = " / ".join("–" if c[k] is None else f"{100 * c[k]:.3g} %" for k in ("loss_share", "dist_share"))
        lines.append(
            f"| {c['regime']} | {c['arm']} | {c['b']:g} | {','.join(map(str, c['seeds']))} "
            f"| {' / '.join(f'{v:.1f}' for v in c['f1'])} | {c['f1_mean']:.2f} ± {c['f1_sd']:.2f} | {delta} | {gain} "
            f"| {share} | {_f(c['linked_spans_per_step'])} "
            f"| {_f(c['top1'])} ({_f(c['top1_before'])}) | {_f(c['top10'])} ({_f(c['top10_before'])}) "
            f"| {_f(c['chance_top10'])} | {cost} |"
        )
    by_kind = [c for c in summary["cells"] if c.get("top10_by_kind")]
    if by_kind:
        kinds = sorted({kind for c in by_kind for kind in c["top10_by_kind"]})
        lines += [
            "",
            "Dev top-10 retrieval (%) by the linked node's kind (dev linked spans per run in brackets; "
            "chance is 10 / the kind's node count):",
            "",
            "| regime | arm | " + " | ".join(kinds) + " |",
            "|---|---|" + "---|" * len(kinds),
        ]
        for c in by_kind:
            row = c["top10_by_kind"]
            cells = [f"{row[k]['top10']:.1f} ({row[k]['spans']:.0f})" if k in row else "" for k in kinds]
            lines.append(f"| {c['regime']} | {c['arm']} | " + " | ".join(cells) + " |")
    by_seen = [c for c in summary["cells"] if c.get("top10_by_seen")]
    if by_seen:
        lines += [
            "",
            "Dev top-10 retrieval (%) by whether the linked node was linked anywhere in the training data "
            "(a teacher row that only tags a node can be memorised for seen nodes, never for unseen ones; "
            "dev linked spans per run and chance in brackets):",
            "",
            "| regime | arm | seen nodes | unseen nodes |",
            "|---|---|---|---|",
        ]
        for c in by_seen:
            row = c["top10_by_seen"]
            cells = [_group(row[k]) if k in row else "" for k in ("seen", "unseen")]
            lines.append(f"| {c['regime']} | {c['arm']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: Path) -> None:
    """Per regime, one point per arm: test F1 (mean ± sd over seeds) against dev top-10 retrieval
    of the linked node: did knowledge go in (x), and what did it do to NER (y)?"""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [c for c in summary["cells"] if c.get("top10") is not None]
    regimes = sorted({c["regime"] for c in cells})
    if not regimes:
        return
    fig, axes = plt.subplots(1, len(regimes), figsize=(5.5 * len(regimes), 4.2), squeeze=False)
    for ax, regime in zip(axes[0], regimes, strict=True):
        for c in (c for c in cells if c["regime"] == regime):
            ax.errorbar(c["top10"], c["f1_mean"], yerr=c["f1_sd"], marker="o", capsize=3)
            ax.annotate(f"{c['arm']} (n={len(c['seeds'])})", (c["top10"], c["f1_mean"]), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")  # fmt: skip
        ax.set_title(regime)
        ax.set_xlabel("dev top-10 retrieval of the linked node (%)")
        ax.set_ylabel("test exact F1 (%), mean ± sd over seeds")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
