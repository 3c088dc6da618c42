"""The in-domain study: per corpus, the KoGNER student and spaCy's own ``ner`` (CNN and
transformer on the same backbone), trained on the same data under the same wall-time cap, scored
on the full test split by one harness.

``python -m spacy_kogner indomain-study configs/indomain.cfg --profile full`` runs every
(corpus, system) pair that has no finished run yet (each trainer resumes or skips on its own),
then writes ``indomain.json`` / ``indomain.md`` / ``indomain_curves.png`` to the results folder:

* ``indomain.json``: ``{corpus: {"kogner": F1, "spacy_cnn": F1, "spacy_trf": F1,
  "train_minutes": {system: min}, "words_per_s": {system: w/s}, "cpu": ..., and per system its
  precision, recall, wall minutes, steps, epochs, how it ended, threads and learning curve}}``
  (percent, full test splits) — the shape the docs commit; ``--paths.earlier`` merges the pairs
  of an earlier summary that have no finished run here;
* ``indomain.md``: the same side by side with P/R, training time and inference speed;
* ``indomain_curves.png``: dev F1 against training minutes for every system (and test F1 for the
  student, whose curve logs it), one panel per corpus.

``--only CORPUS:SYSTEM`` trains a single pair (to run two one-thread trainings side by side).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import load_config, read_section, require
from ..run_summary import SUMMARY_FILE, RunSummary, run_finished
from .earlier import read_earlier, run_started_from

SYSTEMS = ("kogner", "spacy_cnn", "spacy_trf")
SYSTEM_NAMES = {"kogner": "KoGNER student", "spacy_cnn": "spaCy CNN ner", "spacy_trf": "spaCy trf+ner (MiniLM)"}


@dataclass
class StudySettings:
    """``[study]``: which corpora and systems, the configs each system trains with, the shared cap."""

    corpora: list[str]
    systems: list[str]
    distill_config: str
    cnn_config: str
    trf_config: str
    evaluate_config: str
    max_minutes: float
    threads: int
    # the model the KoGNER students start from ("" = distill_config's init_model)
    init_model: str = ""

    def __post_init__(self) -> None:
        bad = [s for s in self.systems if s not in SYSTEMS]
        require(not bad, f"[study] unknown system(s) {bad}; known: {list(SYSTEMS)}")
        require(self.max_minutes > 0, "[study] max_minutes must be > 0: every system gets the same cap")


@dataclass
class StudyPaths:
    """``[paths]``: where corpora come from and where runs and results go."""

    sources: str
    corpora: str
    training: str
    results: str
    labels: str
    teacher: str = ""
    earlier: str = ""


def _corpus_folder(name: str, paths: StudyPaths) -> Path:
    """The training-ready folder (train/dev/test .json + .spacy) of one corpus, built once; its
    spans are linked to the teacher's KG nodes when the study distils a teacher."""
    from ..data.corpus import build_corpus, read_splits

    folder = Path(paths.corpora) / name
    if not (folder / "stats.json").is_file():
        build_corpus(read_splits([name], paths.sources), folder, linker=_linker(paths) if paths.teacher else None)
    return folder


def _linker(paths: StudyPaths) -> Any:
    """The span → KG linker over the teacher's KG (``configs/linking.cfg`` rules)."""
    from ..data.labels import load_label_table
    from ..data.linking import Linker, LinkingSettings
    from ..kg.graph import load_kg
    from ..teacher.store import teacher_kg_section

    cfg = load_config("configs/linking.cfg")
    kg = load_kg(teacher_kg_section(paths.teacher))
    return Linker.from_kg(kg, load_label_table(paths.labels), LinkingSettings.from_section(cfg["linking"]))


def _train(corpus: str, system: str, study: StudySettings, paths: StudyPaths, profile: str | None) -> Path:
    """Train one system on one corpus (skipped when its run summary exists); returns the run folder."""
    folder = _corpus_folder(corpus, paths)
    run = Path(paths.training) / corpus / system
    if run_finished(run):
        return run
    if system == "kogner":
        from ..training.distill import distill

        overrides = {
            "paths.train": str(folder / "train.json"),
            "paths.dev": str(folder / "dev.json"),
            "paths.test": str(folder / "test.json"),
            "paths.labels": paths.labels,
            # without a teacher the student is trained with b = 0 (the KG term needs H)
            "paths.teacher": paths.teacher,
            **({} if paths.teacher else {"training.b": 0.0}),
            "training.max_minutes": study.max_minutes,
            "training.num_threads": study.threads,
            **({"paths.init_model": study.init_model} if study.init_model else {}),
        }
        distill(study.distill_config, run, overrides, profile)
    else:
        from ..training.baseline import train_baseline

        config = study.cnn_config if system == "spacy_cnn" else study.trf_config
        overrides = {
            "paths.train": str(folder / "train.spacy"),
            "paths.dev": str(folder / "dev.spacy"),
            "training.logger.max_minutes": study.max_minutes,
        }
        import torch

        torch.set_num_threads(study.threads)
        train_baseline(config, run, overrides, gpu_id=-1, profile=profile)
    return run


def _evaluate(corpus: str, system: str, run: Path, study: StudySettings, paths: StudyPaths) -> dict[str, Any]:
    from ..evaluation.harness import evaluate_pipeline

    out = Path(paths.results) / "indomain" / f"{corpus}__{system}.json"
    if out.is_file():
        return json.loads(out.read_text(encoding="utf8"))
    test = Path(paths.sources) / corpus / "test.tsv"
    row = evaluate_pipeline(
        run / "model-best",
        test,
        config=study.evaluate_config,
        labels_table=paths.labels,
        tags={"system": system, "protocol": "in-domain", "train": corpus},
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=2), encoding="utf8")
    return row


def run_study(config: str | Path, overrides: dict[str, Any] | None = None, profile: str | None = None,
              only: str = "", summary_only: bool = False) -> dict[str, Any]:  # fmt: skip
    """Train and score every (corpus, system) pair of the study, then write the summary files
    (``summary_only``: only the summary, from the runs that finished; the table names the rest)."""
    cfg = load_config(config, overrides, profile)
    study = read_section(StudySettings, cfg["study"], "study")
    paths = read_section(StudyPaths, cfg["paths"], "paths")
    require(not (only and summary_only), "--only and --summary-only exclude each other")
    if summary_only:
        return write_summary(study, paths)
    pairs = [(c, s) for c in study.corpora for s in study.systems]
    if only:
        corpus, _, system = only.partition(":")
        pairs = [(c, s) for c, s in pairs if c == corpus and (not system or s == system)]
        require(bool(pairs), f"--only {only!r} names no (corpus, system) pair of the study")
    for corpus, system in pairs:
        run = _train(corpus, system, study, paths, profile)
        _evaluate(corpus, system, run, study, paths)
    if only:
        return {}
    return write_summary(study, paths)


def write_summary(study: StudySettings, paths: StudyPaths) -> dict[str, Any]:
    """``indomain.json`` / ``.md`` / ``_curves.png`` from the finished runs and their scores, plus
    the pairs of ``paths.earlier`` (a committed summary) that were not run here: run folders stay
    out of git, so a study spread over sessions is summarised from both."""
    results = Path(paths.results)
    cells = _earlier_cells(paths.earlier, study)
    for corpus in study.corpora:
        for system in study.systems:
            score_file = results / "indomain" / f"{corpus}__{system}.json"
            run = Path(paths.training) / corpus / system
            if score_file.is_file() and (run / SUMMARY_FILE).is_file():
                row = json.loads(score_file.read_text(encoding="utf8"))
                cells[corpus, system] = _cell(system, row, RunSummary.read(run / SUMMARY_FILE), run)
    table: dict[str, Any] = {}
    for corpus in study.corpora:
        entry: dict[str, Any] = {key: {} for key in CELL_FIELDS}
        for system in study.systems:
            cell = cells.get((corpus, system))
            if cell is None:
                continue
            entry[system] = cell["f"]
            for key in CELL_FIELDS:
                entry[key][system] = cell[key]
        # one CPU for the row, or each system's where the row's runs were made on different boxes
        row_cpus = {system: cpu for system, cpu in entry["cpus"].items() if cpu}
        if row_cpus:
            one = len(set(row_cpus.values())) == 1
            entry["cpu"] = next(iter(row_cpus.values())) if one else "; ".join(f"{s}: {c}" for s, c in row_cpus.items())
        table[corpus] = entry
    results.mkdir(parents=True, exist_ok=True)
    (results / "indomain.json").write_text(json.dumps(table, indent=2), encoding="utf8")
    (results / "indomain.md").write_text(render_markdown(cells, study), encoding="utf8")
    render_curves(cells, study, results / "indomain_curves.png")
    return table


# per-system fields of a corpus's entry in indomain.json (besides the F1 under the system's name)
CELL_FIELDS = ("precision", "recall", "train_minutes", "wall_minutes", "steps", "epochs", "ended_by",
               "threads", "words_per_s", "cpus", "curve", "init")  # fmt: skip


def _cell(system: str, row: dict[str, Any], summary: RunSummary, run: Path) -> dict[str, Any]:
    """One (corpus, system) result: test scores, what the training cost, its learning curve and
    (students) what it started from. ``train_minutes`` is the budget clock (steps and dev
    evaluations); ``wall_minutes`` adds the student's test scoring for its curve and its threshold sweep."""
    d = summary.details
    curve = _curve(system, row, summary)
    return {
        "f": round(row["exact"]["f"], 2), "precision": round(row["exact"]["p"], 2),
        "recall": round(row["exact"]["r"], 2),
        "train_minutes": round(d.get("budget_clock_s", summary.wall_s) / 60, 1),
        "wall_minutes": round(summary.wall_s / 60, 1), "steps": summary.steps,
        "epochs": round(d["epochs"], 2) if d.get("epochs") is not None else None,
        "ended_by": d.get("ended_by"), "threads": d.get("threads"),
        "words_per_s": round(row["words_per_s"], 0) if row.get("words_per_s") else None, "cpus": summary.cpu,
        "curve": [_point(p) for p in curve], "init": run_started_from(run) if system == "kogner" else None,
    }  # fmt: skip


def _point(p: dict[str, Any]) -> dict[str, float]:
    """A learning-curve point: training minutes, dev (and test) F1 in 0-1."""
    return {
        "minutes": round(p["elapsed_s"] / 60, 2),
        **{k: round(p[k], 4) for k in ("dev_f", "test_f") if p.get(k) is not None},
    }


def _earlier_cells(path: str, study: StudySettings) -> dict[tuple[str, str], dict[str, Any]]:
    """The (corpus, system) results of an earlier ``indomain.json`` ("" = none)."""
    table = read_earlier(path, "an indomain.json ({corpus: {...}})")
    cells = {}
    for corpus, entry in table.items():
        for system in study.systems:
            if isinstance(entry, dict) and system in entry:
                fields = {key: entry.get(key) if isinstance(entry.get(key), dict) else {} for key in CELL_FIELDS}
                cell = {key: fields[key].get(system) for key in CELL_FIELDS}
                if not isinstance(entry.get("cpus"), dict):  # the older shape: one "cpu" name for the row
                    cell["cpus"] = entry.get("cpu")
                cell["curve"] = cell["curve"] or []
                cells[corpus, system] = {"f": entry[system], **cell}
    return cells


def render_markdown(cells: dict[tuple[str, str], dict[str, Any]], study: StudySettings) -> str:
    lines = [
        "# In-domain: the KoGNER student beside spaCy's own `ner`",
        "",
        "Exact-span micro F1 (%) on the **full test split** of each corpus; each system trained on the",
        "corpus's train split with model selection on its full dev split, under the same wall-time cap",
        f"({study.max_minutes:g} min; threads per run in the table); inference words/s measured while",
        "scoring the test split. \"train min\" is the budget clock (training steps and dev evaluations);",
        "\"wall min\" adds the student's test scoring for its learning curve and its threshold sweep.",
        "",
        "| corpus | system | P | R | F1 | train min | wall min | steps | epochs | ended by | threads | words/s | CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for corpus in study.corpora:
        for system in study.systems:
            c = cells.get((corpus, system))
            if c is None:
                continue
            cols = [
                corpus, SYSTEM_NAMES[system], f"{c['precision']:.1f}", f"{c['recall']:.1f}", f"**{c['f']:.1f}**",
                _text(c["train_minutes"], ".1f"), _text(c["wall_minutes"], ".1f"), _text(c["steps"]),
                _text(c["epochs"], ".1f"), _text(c["ended_by"]), _text(c["threads"]),
                _text(c["words_per_s"] or None, ",.0f"), _text(c["cpus"]),
            ]  # fmt: skip
            lines.append("| " + " | ".join(cols) + " |")
    cpus = sorted({c["cpus"] for c in cells.values() if c["cpus"]})
    if len(cpus) > 1:  # timings and budgets of rows made on different boxes do not compare
        lines += ["", f"The rows were measured on {len(cpus)} CPUs ({'; '.join(cpus)}): compare minutes,"
                  " steps and words/s only between rows of one CPU."]  # fmt: skip
    started = [f"{c} from `{cells[c, 'kogner']['init']}`" for c in study.corpora
               if cells.get((c, "kogner"), {}).get("init") not in (None, "default")]  # fmt: skip
    if started:  # a fine-tuned student is not the fresh one its row's baselines compete with
        lines += ["", f"KoGNER students not started from the shipped encoder: {'; '.join(started)}."]
    missing = [f"{c} / {SYSTEM_NAMES[s]}" for c in study.corpora for s in study.systems if (c, s) not in cells]
    if missing:  # a table never hides the runs it lacks
        lines += ["", f"Not run (no finished run summary and test score): {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


def _text(value: Any, spec: str = "") -> str:
    """A table cell: the value in ``spec``'s format, "–" where the run did not record it."""
    return "–" if value is None else format(value, spec)


def render_curves(cells: dict[tuple[str, str], dict[str, Any]], study: StudySettings, png: Path) -> None:
    """Dev (and the student's test) F1 against training minutes, one panel per corpus."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corpora = [c for c in study.corpora if any(cells.get((c, s), {}).get("curve") for s in study.systems)]
    if not corpora:
        return
    fig, axes = plt.subplots(1, len(corpora), figsize=(4.2 * len(corpora), 3.6), squeeze=False)
    for ax, corpus in zip(axes[0], corpora, strict=True):
        for system in study.systems:
            curve = cells.get((corpus, system), {}).get("curve") or []
            for key, style in (("dev_f", "-"), ("test_f", ":")):
                pts = [(p["minutes"], 100 * p[key]) for p in curve if p.get(key) is not None]
                if pts:
                    label = f"{SYSTEM_NAMES[system]} ({key[:-2]})"
                    ax.plot(*zip(*pts, strict=True), style, marker="o", markersize=2, label=label)
        ax.set_title(corpus)
        ax.set_xlabel("training minutes")
        ax.set_ylabel("exact F1 (%)")
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _curve(system: str, row: dict[str, Any], summary: RunSummary) -> list[dict[str, Any]]:
    """Curve points of a run: the student's ``curves.json`` or a baseline's logged evaluations."""
    if system == "kogner":
        path = Path(row["pipeline"]).parent / "curves.json"
        return json.loads(path.read_text(encoding="utf8")) if path.is_file() else []
    return summary.details.get("curve", [])
