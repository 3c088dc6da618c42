"""The pooled biomedical student and what it is worth: in-domain, leave-one-corpus-out, held-out labels.

``python -m spacy_kogner pooled-study configs/pooled.cfg`` builds (once) and trains (once; a run
with a summary and ``model-best`` is reused):

* **pooled**: one student on every gold corpus of ``[pooled] corpora`` plus KG silver for the kinds
  no gold label prompts (``data/pooled.py``) — the project's packaged default;
* **loco/<corpus>**: for each corpus of ``[study] heldout``, the same recipe without that corpus
  (its text and its gold never seen; silver comes from the other corpora's text only).

It then scores, on full test splits with each corpus's own labels as prompts:

* ``indomain``: the pooled student on every corpus, beside the single-corpus student of the
  in-domain study (``[study] single_runs``);
* ``loco``: each leave-one-out student on its held-out corpus, beside the paper's Table 2 KoGNER;
* ``heldout_labels``: per-label F1 of the leave-one-out students for the labels whose prompt no
  training source of that run carried (neither gold nor silver) — zero-shot label types;
* ``speed``: ``nlp.pipe`` sentences/s of the pooled student with 1, 8 and 20 labels.

and writes ``pooled.json`` / ``pooled.md`` to the results folder. ``--only pooled|loco/<corpus>``
trains and scores one run (no summary); ``--summary-only`` writes the summary from finished runs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import load_config, read_section, require
from ..run_summary import SUMMARY_FILE, RunSummary, run_finished
from .earlier import read_earlier, run_started_from

POOLED = "pooled"
# the runs-table name of a two-stage pooled student's first stage (stage1_dir)
STAGE1 = "pooled/stage1"


@dataclass
class PooledStudySettings:
    """``[study]`` of ``configs/pooled.cfg``: the runs, their training budget and the measurements."""

    heldout: list[str]
    distill_config: str
    evaluate_config: str
    threads: int
    prompt_variation: float
    cross_negatives: bool
    source_balance: float
    seed: int
    max_dev_sentences: int
    pooled_steps: int
    pooled_minutes: float
    pooled_eval_every: int
    loco_steps: int
    loco_minutes: float
    loco_eval_every: int
    single_runs: str
    paper_table2: dict[str, float]
    speed_corpus: str
    speed_sentences: int
    speed_labels: list[int]
    extra_labels: list[str]
    # the model the pooled student starts from ("" = distill.cfg's init_model, a fresh span model): a
    # GLiNER checkpoint folder or hub id
    pooled_init: str = ""
    # a second stage (0 = none): the pooled student of pooled_minutes is kept as stage 1 and continued
    # from its best checkpoint under a fresh warm-up + cosine schedule fitted to this many minutes
    pooled_continue_minutes: float = 0.0

    def __post_init__(self) -> None:
        require(self.pooled_steps > 0 and self.loco_steps > 0, "[study] pooled_steps and loco_steps must be > 0")
        require(0 <= self.source_balance <= 1, "[study] source_balance must be in [0, 1]")
        require("{corpus}" in self.single_runs, "[study] single_runs must contain {corpus}")
        require(all(n > 0 for n in self.speed_labels), "[study] speed_labels must be positive label counts")
        require(self.pooled_continue_minutes >= 0, "[study] pooled_continue_minutes must be >= 0")


@dataclass
class PooledStudyPaths:
    """``[paths]``: gold test splits, where corpora, runs and results go, the teacher, the label table."""

    sources: str
    corpora: str
    training: str
    results: str
    teacher: str
    labels: str
    # an earlier pooled.json (e.g. docs/results/pooled.json): its runs that have no finished run here
    # are kept in the summary ("" = none)
    earlier: str = ""


def runs_of(study: PooledStudySettings) -> list[str]:
    """Run names: the pooled student, then one leave-one-out student per held-out corpus."""
    return [POOLED, *(f"loco/{c}" for c in study.heldout)]


def run_dir(name: str, paths: PooledStudyPaths) -> Path:
    return Path(paths.training) / (f"{POOLED}/kogner" if name == POOLED else name)


def stage1_dir(paths: PooledStudyPaths) -> Path:
    """The first stage of a pooled student trained in two (``[study] pooled_continue_minutes``)."""
    return Path(paths.training) / POOLED / "stage1"


def corpus_dir(name: str, paths: PooledStudyPaths) -> Path:
    return Path(paths.corpora) / name


def _build(name: str, cfg: Any, paths: PooledStudyPaths) -> Path:
    """The run's pooled corpus (built once): every corpus of [pooled], minus the held-out one."""
    from ..data.labels import load_label_table
    from ..data.pooled import PooledSettings, build_pooled
    from ..kg.graph import load_kg
    from ..teacher.store import teacher_kg_section

    folder = corpus_dir(name, paths)
    if (folder / "stats.json").is_file():
        return folder
    settings = read_section(PooledSettings, cfg["pooled"], "pooled")
    if name != POOLED:
        held = name.split("/", 1)[1]
        settings.corpora = [c for c in settings.corpora if c != held]
    silver = load_config("configs/silver.cfg")["silver"]
    linking = load_config("configs/linking.cfg")["linking"]
    kg = load_kg(teacher_kg_section(paths.teacher), nodes_only=True)  # silver matches node names only
    build_pooled(settings, folder, kg, silver, linking, load_label_table(paths.labels))
    return folder


def _train(name: str, study: PooledStudySettings, paths: PooledStudyPaths, folder: Path) -> Path:
    """Distil one run (skipped when it finished before); the budget is [study]'s, the rest distill.cfg's."""
    from ..training.distill import distill

    run = run_dir(name, paths)
    if run_finished(run):
        return run
    pooled = name == POOLED
    overrides = {
        "paths.train": str(folder / "train.json"),
        "paths.dev": str(folder / "dev.json"),
        # the silver-only prompts' thresholds are calibrated on the dev sentences' silver spans
        "paths.calibration": str(folder / "dev_silver.json") if (folder / "dev_silver.json").is_file() else "",
        "paths.teacher": paths.teacher,
        "paths.labels": paths.labels,
        "training.epochs": 0,
        "training.evals_per_epoch": 0,
        "training.patience": 0,
        "training.max_dev_sentences": study.max_dev_sentences,
        "training.prompt_variation": study.prompt_variation,
        "training.cross_negatives": study.cross_negatives,
        "training.source_balance": study.source_balance,
        "training.seed": study.seed,
        "training.num_threads": study.threads,
        "training.steps": study.pooled_steps if pooled else study.loco_steps,
        "training.max_minutes": study.pooled_minutes if pooled else study.loco_minutes,
        "training.eval_every": study.pooled_eval_every if pooled else study.loco_eval_every,
    }
    if pooled and study.pooled_init:
        overrides["paths.init_model"] = study.pooled_init
    if pooled and study.pooled_continue_minutes > 0:
        first = stage1_dir(paths)
        if not run_finished(first):
            distill(study.distill_config, first, overrides)
        # a saved pipeline names its span model (SpanModel.from_source finds the kogner pipe's)
        overrides["paths.init_model"] = str(first / "model-best")
        overrides["training.max_minutes"] = study.pooled_continue_minutes
    distill(study.distill_config, run, overrides)
    return run


def _score(name: str, corpus: str, study: PooledStudySettings, paths: PooledStudyPaths) -> dict[str, Any]:
    """The run's full-test-split row on one corpus (cached under results/pooled/)."""
    from ..evaluation.harness import evaluate_pipeline

    out = Path(paths.results) / "pooled" / f"{name.replace('/', '__')}__{corpus}.json"
    if out.is_file():
        return json.loads(out.read_text(encoding="utf8"))
    row = evaluate_pipeline(
        run_dir(name, paths) / "model-best",
        Path(paths.sources) / corpus / "test.tsv",
        config=study.evaluate_config,
        labels_table=paths.labels,
        tags={"run": name, "test_corpus": corpus},
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=2), encoding="utf8")
    return row


def _tests_of(name: str, cfg: Any) -> list[str]:
    return list(cfg["pooled"]["corpora"]) if name == POOLED else [name.split("/", 1)[1]]


def run_study(config: str | Path, overrides: dict[str, Any] | None = None, only: str = "",
              summary_only: bool = False) -> dict[str, Any]:  # fmt: skip
    """Build, train and score every run of the study, then write ``pooled.json`` / ``.md``."""
    cfg = load_config(config, overrides)
    study = read_section(PooledStudySettings, cfg["study"], "study")
    paths = read_section(PooledStudyPaths, cfg["paths"], "paths")
    require(not (only and summary_only), "--only and --summary-only exclude each other")
    names = runs_of(study)
    if only:
        require(only in names, f"--only {only!r} is not a run of the study; runs: {names}")
        names = [only]
    if not summary_only:
        for name in names:
            _train(name, study, paths, _build(name, cfg, paths))
            for corpus in _tests_of(name, cfg):
                _score(name, corpus, study, paths)
        if only:
            return {}
    return write_summary(cfg, study, paths)


def _prompts_seen(name: str, paths: PooledStudyPaths, table: dict[str, Any]) -> set[str]:
    """Lower-cased prompts a run trained with (gold labels' prompts and synonyms, silver prompts)."""
    from ..data.labels import prompt_variants

    stats = json.loads((corpus_dir(name, paths) / "stats.json").read_text(encoding="utf8"))
    labels = {lbl for sets in stats["label_sets"].values() for lbl in sets}
    return {p.lower() for lbl in labels for p in prompt_variants(lbl, table)}


def heldout_label_scores(name: str, per_label: dict[str, float], paths: PooledStudyPaths) -> dict[str, float]:
    """The per-label F1 of a run's test row for the labels whose prompt the run never trained with."""
    from ..data.labels import label_prompt, load_label_table

    table = load_label_table(paths.labels)
    seen = _prompts_seen(name, paths, table)
    return {lbl: f for lbl, f in per_label.items() if label_prompt(lbl, table).lower() not in seen}


def measure_speed(study: PooledStudySettings, paths: PooledStudyPaths) -> dict[str, Any]:
    """``nlp.pipe`` sentences/s of the pooled student with each label count of ``speed_labels``:
    its own labels first, then ``extra_labels``, in order; one warm-up pass, same sentences."""
    import spacy
    import torch
    from spacy.tokens import Doc

    from ..data.readers import read_corpus

    torch.set_num_threads(study.threads)
    nlp = spacy.load(run_dir(POOLED, paths) / "model-best")
    pipe = nlp.get_pipe("kogner")
    pool = list(dict.fromkeys([*(spec.prompt for spec in pipe.label_specs), *study.extra_labels]))
    sents = read_corpus(Path(paths.sources) / study.speed_corpus / "test.tsv")[: study.speed_sentences]
    out: dict[str, Any] = {"corpus": study.speed_corpus, "sentences": len(sents), "threads": study.threads}
    for n in study.speed_labels:
        require(n <= len(pool), f"[study] speed_labels asks for {n} labels; only {len(pool)} are known")
        pipe.set_labels(pool[:n])
        docs = [Doc(nlp.vocab, words=s.tokens) for s in sents]
        list(nlp.pipe(docs[:32]))
        start = time.perf_counter()
        list(nlp.pipe(docs))
        out[str(n)] = round(len(docs) / (time.perf_counter() - start), 1)
    return out


def write_summary(cfg: Any, study: PooledStudySettings, paths: PooledStudyPaths) -> dict[str, Any]:
    """``pooled.json`` (the committed shape: indomain / loco / heldout_labels, percent) and ``.md``.

    With ``paths.earlier`` the runs of that summary that have no finished run here are kept, each
    marked ``"earlier": true`` in ``runs`` (run folders stay out of git, so a study spread over
    sessions is summarised from both); a run finished here replaces all its earlier entries."""
    earlier = read_earlier(paths.earlier, "a pooled.json ({indomain, loco, runs, ...})", ("indomain", "loco", "runs"))
    summary: dict[str, Any] = {key: dict(earlier.get(key, {})) for key in SUMMARY_TABLES}
    for name in summary["runs"]:
        summary["runs"][name] = {**summary["runs"][name], "earlier": True}
    results = Path(paths.results)
    for name in runs_of(study):
        run = run_dir(name, paths)
        if not (run / SUMMARY_FILE).is_file():
            continue
        _forget(summary, name)
        summary["runs"][name] = _run_entry(run)
        if name == POOLED and (stage1_dir(paths) / SUMMARY_FILE).is_file():
            summary["runs"][STAGE1] = _run_entry(stage1_dir(paths))
        for corpus in _tests_of(name, cfg):
            score = results / "pooled" / f"{name.replace('/', '__')}__{corpus}.json"
            if not score.is_file():
                continue
            row = json.loads(score.read_text(encoding="utf8"))
            if name == POOLED:
                summary["indomain"][corpus] = round(row["exact"]["f"], 2)
            else:
                summary["loco"][corpus] = round(row["exact"]["f"], 2)
                per_label = {lbl: round(scores["f"], 2) for lbl, scores in row["exact"]["per_label"].items()}
                summary["loco_per_label"][corpus] = per_label
                summary["heldout_labels"].update(
                    {_heldout_key(lbl, corpus): f for lbl, f in heldout_label_scores(name, per_label, paths).items()}
                )
    for corpus in summary["indomain"]:
        single = _single_score(corpus, study, paths)
        if single is not None:
            summary["single"][corpus] = single
    speed_file = results / "pooled" / "speed.json"
    if (run_dir(POOLED, paths) / "model-best").is_dir():
        if not speed_file.is_file():
            speed_file.parent.mkdir(parents=True, exist_ok=True)
            speed_file.write_text(json.dumps(measure_speed(study, paths), indent=2), encoding="utf8")
        summary["speed"] = json.loads(speed_file.read_text(encoding="utf8"))
    elif "speed" in earlier:
        summary["speed"] = earlier["speed"]
    # in the study's order, whichever session each entry comes from
    corpora, runs = list(cfg["pooled"]["corpora"]), [POOLED, STAGE1, *runs_of(study)[1:]]
    for key, order in (("indomain", corpora), ("single", corpora), ("loco", study.heldout),
                       ("loco_per_label", study.heldout), ("runs", runs)):  # fmt: skip
        summary[key] = _ordered(summary[key], order)
    summary["paper_table2"] = dict(study.paper_table2)
    summary["not_run"] = [name for name in runs_of(study) if name not in summary["runs"]]
    results.mkdir(parents=True, exist_ok=True)
    (results / "pooled.json").write_text(json.dumps(summary, indent=2), encoding="utf8")
    (results / "pooled.md").write_text(render_markdown(summary), encoding="utf8")
    return summary


# the per-run tables of pooled.json (besides speed, paper_table2 and not_run)
SUMMARY_TABLES = ("indomain", "single", "loco", "loco_per_label", "heldout_labels", "runs")


def _run_entry(run: Path) -> dict[str, Any]:
    """A run's line of the runs table: its budget, pace, thresholds and what it started from."""
    rs = RunSummary.read(run / SUMMARY_FILE)
    d = rs.details
    return {
        "steps": rs.steps, "train_minutes": round(d.get("budget_clock_s", rs.wall_s) / 60, 1),
        "wall_minutes": round(rs.wall_s / 60, 1), "epochs": d.get("epochs"), "ended_by": d.get("ended_by"),
        "threads": d.get("threads"), "cpu": rs.cpu, "train_sentences": rs.train_sentences,
        "best_dev_f": rs.best_dev_f, "precision": d.get("precision"), "threshold": d.get("threshold"),
        "prompt_thresholds": d.get("prompt_thresholds", {}), "source_balance": d.get("source_balance", 1.0),
        "epoch_sources": d.get("epoch_sources"), "seed": rs.seed, "init": run_started_from(run),
    }  # fmt: skip


def _ordered(table: dict[str, Any], order: list[str]) -> dict[str, Any]:
    """``table`` with the keys of ``order`` first, in that order, then the rest as they were."""
    return {**{k: table[k] for k in order if k in table}, **{k: v for k, v in table.items() if k not in order}}


def _heldout_key(label: str, corpus: str) -> str:
    """A ``heldout_labels`` key, "DNA (JNLPBA)"; with an empty label, the suffix of a corpus's keys."""
    return f"{label} ({corpus})"


def _forget(summary: dict[str, Any], name: str) -> None:
    """Drop the earlier entries of run ``name`` (a run finished here replaces them all)."""
    summary["runs"].pop(name, None)
    if name == POOLED:  # the single-corpus scores are the in-domain study's: re-read, not dropped
        summary["runs"].pop(STAGE1, None)
        summary["indomain"].clear()
        return
    corpus = name.split("/", 1)[1]
    summary["loco"].pop(corpus, None)
    summary["loco_per_label"].pop(corpus, None)
    for key in [k for k in summary["heldout_labels"] if k.endswith(_heldout_key("", corpus))]:
        del summary["heldout_labels"][key]


def _single_score(corpus: str, study: PooledStudySettings, paths: PooledStudyPaths) -> float | None:
    """The single-corpus student's full-test F1: the in-domain study's score row, its run's
    test.json, or the in-domain study's summary (``indomain.json`` beside ``pooled.json``, which
    keeps the students of earlier sessions)."""
    run = Path(study.single_runs.format(corpus=corpus))
    for path in (Path(paths.results) / "indomain" / f"{corpus}__kogner.json", run / "test.json"):
        if path.is_file():
            row = json.loads(path.read_text(encoding="utf8"))
            f = row.get("exact", {}).get("f", row.get("f"))
            if f is not None:
                return round(float(f), 2)
    table = Path(paths.results) / "indomain.json"
    if table.is_file():
        entry = json.loads(table.read_text(encoding="utf8")).get(corpus)
        if isinstance(entry, dict) and isinstance(entry.get("kogner"), (int, float)):
            return round(float(entry["kogner"]), 2)
    return None


def _rows_beside(ours: dict[str, float], reference: dict[str, float]) -> list[str]:
    """Table rows: corpus, our F1, the reference F1 and the difference ("–" where none)."""
    rows = []
    for corpus, f in ours.items():
        ref = reference.get(corpus)
        diff = f"{f - ref:+.2f}" if ref is not None else "–"
        rows.append(f"| {corpus} | {f:.2f} | {ref if ref is not None else '–'} | {diff} |")
    return rows


def render_markdown(summary: dict[str, Any]) -> str:
    """The three tables and the speed row, each run's budget beside it."""
    lines = ["# One biomedical student: pooled, leave-one-corpus-out, held-out labels", ""]
    lines += ["Exact-span micro F1 (%), full test splits, each corpus's own labels as prompts.", ""]
    lines += [
        "## In-domain: pooled vs single-corpus students",
        "",
        "| corpus | pooled | single | diff |",
        "|---|---|---|---|",
    ]
    lines += _rows_beside(summary["indomain"], summary["single"])
    lines += ["", "## Leave-one-corpus-out (text and labels of the test corpus never seen)", ""]
    lines += ["| held-out corpus | ours | paper KoGNER (Table 2) | diff |", "|---|---|---|---|"]
    lines += _rows_beside(summary["loco"], summary["paper_table2"])
    per_label = summary.get("loco_per_label", {})
    if per_label:
        lines += ["", "Per label (exact F1):", "", "| held-out corpus | label | F1 |", "|---|---|---|"]
        lines += [f"| {c} | {lbl} | {f:.2f} |" for c, scores in per_label.items() for lbl, f in scores.items()]
    lines += ["", "## Held-out label types (no gold or silver source of the run carried their prompt)", ""]
    lines += ["| label (test corpus) | F1 |", "|---|---|"]
    lines += [f"| {lbl} | {f:.2f} |" for lbl, f in summary["heldout_labels"].items()]
    speed = summary.get("speed")
    if speed:
        counts = [k for k in speed if k.isdigit()]
        lines += ["", f"## Speed: `nlp.pipe` sentences/s by label count ({speed['sentences']} {speed['corpus']} "
                  f"test sentences, {speed['threads']} threads)", ""]  # fmt: skip
        lines += ["| labels | " + " | ".join(counts) + " |", "|---" * (len(counts) + 1) + "|"]
        lines += ["| sentences/s | " + " | ".join(f"{speed[k]:,.1f}" for k in counts) + " |"]
    lines += [
        "",
        "## Runs",
        "",
        '"train min" is the budget clock (steps and dev evaluations); runs marked *earlier* come from the',
        "committed summary of an earlier session (their folders are not on this machine).",
        "",
        '"starts from" is the model a run\'s student began with: "default" is a fresh span model on the',
        "shipped encoder, anything else the GLiNER checkpoint or saved pipeline (folder or hub id) it",
        "continued under its own schedule and budget.",
        "",
        "| run | seed | starts from | steps | epochs | ended by | train min | threads | precision "
        "| source balance | train sentences | best dev F1 "
        "| thresholds (any prompt without its own; own per prompt, tuned on dev) | CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in summary["runs"].items():
        dev = f"{100 * r['best_dev_f']:.2f}" if r.get("best_dev_f") is not None else "–"
        epochs = f"{r['epochs']:.2f}" if r.get("epochs") is not None else "–"
        label = f"{name} (*earlier*)" if r.get("earlier") else name
        cells = [label, r.get("seed", "–"), r.get("init", "–"), r["steps"], epochs, r.get("ended_by") or "–",
                 r["train_minutes"], r.get("threads") or "–", r.get("precision") or "–", r.get("source_balance", 1.0),
                 r["train_sentences"], dev, _thresholds(r), r["cpu"]]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if summary.get("not_run"):  # a table never hides the runs it lacks
        lines += ["", f"Not run (no finished run summary): {', '.join(summary['not_run'])}."]
    return "\n".join(lines) + "\n"


def _thresholds(run: dict[str, Any]) -> str:
    """``0.3; chemical 0.35, disease 0.5``: the threshold of prompts without their own (the
    dev-tuned model threshold, or the silver prompts' joint one), then the prompts with their own."""
    if run.get("threshold") is None:
        return "–"
    own = ", ".join(f"{p} {t:g}" for p, t in sorted((run.get("prompt_thresholds") or {}).items()))
    return f"{run['threshold']:g}" + (f"; {own}" if own else "")
