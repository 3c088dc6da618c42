"""Reports: evaluation rows collected into results.json, a Markdown table beside the paper's
Table 2 (with a seed summary) and a chart.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import load_config, read_section
from .harness import DEFAULT_CONFIG


@dataclass
class ReportSettings:
    """``[report]`` of ``configs/evaluate.cfg``: score digits and the chart's size."""

    digits: int
    chart_width: float
    chart_height: float
    chart_dpi: int
    chart_ymax: float


def collect_rows(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Every evaluation JSON under the given files/folders (a file with ``exact`` scores)."""
    rows = []
    for path in paths:
        path = Path(path)
        files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
        for file in files:
            try:
                data = json.loads(file.read_text(encoding="utf8"))
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(data, dict) and "exact" in data and "relaxed" in data:
                data.setdefault("source", str(file))
                rows.append(data)
    rows.sort(key=lambda r: (str(r.get("protocol")), str(r.get("test")), str(r.get("system"))))
    return rows


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_markdown(rows: Sequence[dict[str, Any]], refs: dict[str, Any], digits: int) -> str:
    """Our rows, then the paper-protocol rows beside the paper's Table 2 and BioBERT references."""
    datasets = refs.get("datasets", {})
    lines = [
        "# Results",
        "",
        "Exact-span micro P/R/F1 (the paper's metric) and relaxed (overlap) F1, in percent.",
        "Protocols: `in-domain` (train on the corpus's train split, test on its test split); `paper`",
        "(train on the KG-derived silver corpus, no gold of the target: the setting of the paper's",
        "Table 2); `loco` rows (train on the other gold corpora pooled, test on the held-out one)",
        "appear only where such runs were evaluated. Scores are on the first `eval_limit` sentences",
        "of each test split where the profile trims evaluation (see results.json).",
        "",
        "| system | protocol | train | test | P | R | F1 | relaxed F1 | profile | steps | seed | train wall (min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        wall = r.get("train_wall_s")
        lines.append(
            "| "
            + " | ".join(
                [
                    str(r.get("system", "–")),
                    str(r.get("protocol", "–")),
                    str(r.get("train", "–")),
                    str(r.get("test", "–")),
                    _fmt(r["exact"]["p"], digits),
                    _fmt(r["exact"]["r"], digits),
                    _fmt(r["exact"]["f"], digits),
                    _fmt(r["relaxed"]["f"], digits),
                    str(r.get("profile", "–")),
                    _fmt(r.get("steps"), digits),
                    _fmt(r.get("seed"), digits),
                    _fmt(wall / 60 if isinstance(wall, (int, float)) else None, digits),
                ]
            )
            + " |"
        )
    lines += render_seed_summary(rows, digits)
    table2 = refs.get("paper_table2", {})
    supervised = refs.get("supervised", {})
    paper_rows = [r for r in rows if r.get("protocol") == "paper"]
    systems = sorted({str(r.get("system")) for r in paper_rows})
    tests = sorted({str(r.get("test")) for r in rows})
    ref_cols = [f"paper {k}" for k in table2] + [f"{k} (supervised)" for k in supervised]
    lines += [
        "",
        "## Beside the paper's Table 2 and published supervised references",
        "",
        "Ours: exact F1 of the `paper` protocol (KG-derived training data, no target gold). The paper's",
        "columns are copied from its Table 2 (trained on the authors' LLM-written BMG corpus, larger",
        "backbone); the supervised column is BioBERT's published in-domain score. Both are references,",
        "not our runs.",
        "",
        "| test | dataset | " + " | ".join(systems + ref_cols) + " |",
        "|---|---|" + "---|" * (len(systems) + len(ref_cols)),
    ]
    for test in tests:
        name = datasets.get(test, test)
        ours = []
        for system in systems:
            hit = [r for r in paper_rows if r.get("test") == test and str(r.get("system")) == system]
            ours.append(_fmt(hit[0]["exact"]["f"], digits) if hit else "–")
        refs_vals = [_fmt(table2[k].get(name), digits) for k in table2]
        refs_vals += [_fmt(supervised[k].get(name), digits) for k in supervised]
        lines.append(f"| {test} | {name} | " + " | ".join(ours + refs_vals) + " |")
    return "\n".join(lines) + "\n"


def seed_groups(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """Rows that differ only in their seed: same system, protocol, training corpus and test corpus."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in rows:
        key = tuple(str(r.get(k, "–")) for k in ("system", "protocol", "train", "test"))
        groups.setdefault(key, []).append(r)
    return groups


def render_seed_summary(rows: Sequence[dict[str, Any]], digits: int) -> list[str]:
    """Mean exact F1 over seeds with its min–max spread, so that a gain can be set against seed noise.

    Empty when no configuration was run with more than one seed."""
    groups = seed_groups(rows)
    if all(len(g) < 2 for g in groups.values()):
        return []
    lines = [
        "",
        "## Over seeds",
        "",
        "Exact F1: mean over the seeds run, and the spread (min–max). A difference between two systems",
        "counts as a gain only where it exceeds both spreads.",
        "",
        "| system | protocol | train | test | seeds | F1 mean | F1 min–max | train wall (min, mean) | linked share |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (system, protocol, train, test), group in sorted(groups.items()):
        f1 = [float(r["exact"]["f"]) for r in group]
        walls = [r["train_wall_s"] for r in group if isinstance(r.get("train_wall_s"), (int, float))]
        shares = [r["linked_share"] for r in group if isinstance(r.get("linked_share"), (int, float))]
        seeds = ",".join(sorted(str(r.get("seed")) for r in group))
        lines.append(
            f"| {system} | {protocol} | {train} | {test} | {seeds} | {_fmt(sum(f1) / len(f1), digits)} "
            f"| {_fmt(min(f1), digits)}–{_fmt(max(f1), digits)} "
            f"| {_fmt(sum(walls) / len(walls) / 60 if walls else None, digits)} "
            f"| {_fmt(sum(shares) / len(shares) if shares else None, 3)} |"
        )
    return lines


def render_chart(
    rows: Sequence[dict[str, Any]], path: Path, report_cfg: ReportSettings, refs: dict[str, Any] | None = None
) -> None:
    """Grouped bars of exact F1 (0-100, same scale in every panel): one panel per protocol, one
    group per test corpus; on the paper-protocol panel the paper's Table 2 values are drawn as
    markers so our KG-silver runs sit beside the published ones."""
    refs = refs or {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protocols = sorted({str(r.get("protocol")) for r in rows}) or ["–"]
    fig, axes = plt.subplots(
        1,
        len(protocols),
        figsize=(report_cfg.chart_width, report_cfg.chart_height),
        squeeze=False,
    )
    for ax, protocol in zip(axes[0], protocols, strict=True):
        sub = [r for r in rows if str(r.get("protocol")) == protocol]
        tests = sorted({str(r.get("test")) for r in sub})
        systems = sorted({str(r.get("system")) for r in sub})
        width = 1.0 / (len(systems) + 1)
        for k, system in enumerate(systems):
            values = []
            for test in tests:
                hit = [r for r in sub if str(r.get("test")) == test and str(r.get("system")) == system]
                values.append(hit[0]["exact"]["f"] if hit else 0.0)
            ax.bar([i + k * width for i in range(len(tests))], values, width, label=system)
        centers = [i + width * (len(systems) - 1) / 2 for i in range(len(tests))]
        if protocol == "paper":
            for marker, (name, table) in zip("Dv^s", refs.get("paper_table2", {}).items(), strict=False):
                pts = [
                    (x, table[refs.get("datasets", {}).get(t, t)])
                    for x, t in zip(centers, tests, strict=True)
                    if refs.get("datasets", {}).get(t, t) in table
                ]
                if pts:
                    ax.scatter(*zip(*pts, strict=True), marker=marker, color="black", zorder=3, label=f"paper {name}")
        ax.set_ylim(0, report_cfg.chart_ymax)
        ax.set_xticks(centers)
        ax.set_xticklabels(tests, rotation=20, ha="right")
        ax.set_title(f"protocol: {protocol}")
        ax.set_ylabel("exact-span F1 (%)")
        ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=report_cfg.chart_dpi)
    plt.close(fig)


def write_report(
    inputs: Sequence[str | Path], out_dir: str | Path, config: str | Path = DEFAULT_CONFIG
) -> dict[str, Path]:
    """Collect evaluation JSONs into ``results.json``, ``results.md`` and ``results.png``."""
    cfg = load_config(config)
    rows = collect_rows(inputs)
    if not rows:
        raise ValueError(f"No evaluation JSON found under {[str(p) for p in inputs]}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "md": out / "results.md", "png": out / "results.png"}
    refs = cfg.get("references", {})
    paths["json"].write_text(json.dumps({"rows": rows, "references": refs}, indent=2), encoding="utf8")
    report = read_section(ReportSettings, cfg["report"], "report")
    paths["md"].write_text(render_markdown(rows, refs, report.digits), encoding="utf8")
    render_chart(rows, paths["png"], report, refs)
    return paths
