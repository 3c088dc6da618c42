"""One evaluation harness for every pipeline and every test corpus.

KoGNER, its b = 0 ablation and the spaCy baseline are scored by the same code on the same
sentences, so their numbers can stand side by side (and beside the paper's Table 2).

* **Exact** matching: a predicted span counts only if its start, end and label equal a gold
  span's (micro P/R/F1 over all sentences, and per label). This is the paper's metric.
* **Relaxed** (overlap) matching, reported separately: a prediction is correct if it overlaps a
  gold span of the same label, a gold span is found if some prediction of its label overlaps it
  (GLiNER-BioMed reports only this; it flatters boundary errors, so it never replaces exact).
* **Prompts.** A ``kogner`` pipe is zero-shot: it is given the test corpus's own labels, each with
  its natural-language prompt from the label table, before anything is predicted.
* **Fixed-label pipelines** (spaCy ``ner``): a predicted label that is not one of the corpus's
  labels is mapped to the corpus label whose name or prompt it equals (case-insensitive), so a
  baseline trained on silver prompts ("disease") is scored on NCBI's "Disease"; predictions of
  labels the corpus does not annotate are dropped and counted, never scored as errors against a
  corpus that could not contain them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from .config import load_config
from .data.labels import label_prompt, load_label_table
from .data.readers import Sentence, read_corpus

DEFAULT_CONFIG = "configs/evaluate.cfg"
# (sentence index, start, end exclusive, label)
SpanKey = tuple[int, int, int, str]


@dataclass
class Counts:
    """True/false positives and false negatives of one label (or of all labels)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, other: Counts) -> None:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn

    def as_dict(self) -> dict[str, float | int]:
        """P/R/F1 as percentages plus the raw counts (so results can be re-aggregated)."""
        p = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        r = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        return {"p": 100 * p, "r": 100 * r, "f": 100 * f, "tp": self.tp, "fp": self.fp, "fn": self.fn}


@dataclass
class Scores:
    """Micro scores over all labels and the per-label breakdown."""

    total: Counts = field(default_factory=Counts)
    per_label: dict[str, Counts] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.total.as_dict())
        out["per_label"] = {k: v.as_dict() for k, v in sorted(self.per_label.items())}
        return out


def _by_label(spans: Iterable[SpanKey]) -> dict[str, list[SpanKey]]:
    out: dict[str, list[SpanKey]] = {}
    for span in spans:
        out.setdefault(span[3], []).append(span)
    return out


def exact_scores(gold: Iterable[SpanKey], pred: Iterable[SpanKey], labels: Sequence[str] = ()) -> Scores:
    """Exact-span micro P/R/F1: a prediction is right only if boundaries and label all agree."""
    gold_set, pred_set = set(gold), set(pred)
    gold_by, pred_by = _by_label(gold_set), _by_label(pred_set)
    scores = Scores()
    for label in sorted(set(labels) | set(gold_by) | set(pred_by)):
        g, p = set(gold_by.get(label, [])), set(pred_by.get(label, []))
        counts = Counts(tp=len(g & p), fp=len(p - g), fn=len(g - p))
        scores.per_label[label] = counts
        scores.total.add(counts)
    return scores


def _relaxed_counts(n_pred: int, good_pred: int, n_gold: int, found_gold: int) -> dict[str, float | int]:
    p = good_pred / n_pred if n_pred else 0.0
    r = found_gold / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {
        "p": 100 * p,
        "r": 100 * r,
        "f": 100 * f,
        "matched_pred": good_pred,
        "fp": n_pred - good_pred,
        "matched_gold": found_gold,
        "fn": n_gold - found_gold,
    }


def relaxed_scores(gold: Iterable[SpanKey], pred: Iterable[SpanKey], labels: Sequence[str] = ()) -> dict[str, Any]:
    """Overlap matching, micro over labels and per label.

    Precision counts predictions that overlap a same-label gold span; recall counts gold spans
    overlapped by a same-label prediction. The two sides need not pair one-to-one (one long
    prediction may cover two gold spans), which is why both matched counts are reported.
    """
    gold_by, pred_by = _by_label(set(gold)), _by_label(set(pred))

    def overlaps(a: SpanKey, others: list[SpanKey]) -> bool:
        return any(a[1] < b[2] and b[1] < a[2] for b in others)

    def by_sent(spans: list[SpanKey]) -> dict[int, list[SpanKey]]:
        out: dict[int, list[SpanKey]] = {}
        for span in spans:
            out.setdefault(span[0], []).append(span)
        return out

    totals = [0, 0, 0, 0]
    per_label = {}
    for label in sorted(set(labels) | set(gold_by) | set(pred_by)):
        g, p = gold_by.get(label, []), pred_by.get(label, [])
        g_sent, p_sent = by_sent(g), by_sent(p)
        parts = [
            len(p),
            sum(overlaps(x, g_sent.get(x[0], [])) for x in p),
            len(g),
            sum(overlaps(x, p_sent.get(x[0], [])) for x in g),
        ]
        per_label[label] = _relaxed_counts(*parts)
        totals = [a + b for a, b in zip(totals, parts, strict=True)]
    out: dict[str, Any] = dict(_relaxed_counts(*totals))
    out["per_label"] = per_label
    return out


def gold_spans(sentences: Sequence[Sentence], labels: Sequence[str]) -> list[SpanKey]:
    """The gold spans of the labels under evaluation, keyed by sentence index."""
    wanted = set(labels)
    return [(i, s.start, s.end, s.label) for i, sent in enumerate(sentences) for s in sent.spans if s.label in wanted]


def corpus_labels(sentences: Sequence[Sentence]) -> list[str]:
    """A corpus's label set: every label its gold annotates (the prompts a zero-shot model gets)."""
    return sorted({s.label for sent in sentences for s in sent.spans})


def label_mapper(labels: Sequence[str], table: dict[str, Any]) -> dict[str, str]:
    """Lower-cased label name or prompt → corpus label, to score fixed-label pipelines."""
    mapping: dict[str, str] = {}
    for label in labels:
        mapping[label_prompt(label, table).lower()] = label
    for label in labels:  # the label's own name wins over another label's prompt
        mapping[label.lower()] = label
    return mapping


def predict(
    nlp: Any,
    sentences: Sequence[Sentence],
    labels: Sequence[str],
    table: dict[str, Any],
    batch_size: int,
    spans_key: str | None = None,
) -> tuple[list[SpanKey], int]:
    """Run the pipeline on the corpus's own tokens; returns scored spans and the dropped count.

    Docs are built from the gold tokens (no re-tokenisation, so boundaries are comparable), and
    a ``kogner`` pipe receives the corpus's labels with their prompts first.
    """
    from spacy.tokens import Doc

    if "kogner" in nlp.pipe_names:
        nlp.get_pipe("kogner").set_labels([{"label": lab, "prompt": label_prompt(lab, table)} for lab in labels])
    mapping = label_mapper(labels, table)
    docs = []
    for sent in sentences:
        spaces = [True] * len(sent.tokens)
        if spaces:
            spaces[-1] = False
        docs.append(Doc(nlp.vocab, words=list(sent.tokens), spaces=spaces))
    pred: list[SpanKey] = []
    dropped = 0
    for i, doc in enumerate(nlp.pipe(docs, batch_size=batch_size)):
        spans = doc.spans.get(spans_key, []) if spans_key else doc.ents
        for span in spans:
            label = span.label_ if span.label_ in labels else mapping.get(span.label_.lower())
            if label is None:
                dropped += 1
                continue
            pred.append((i, span.start, span.end, label))
    return pred, dropped


_META_KEYS = {
    "steps": ("steps", "max_steps", "total_steps", "step", "n_steps"),
    "seed": ("seed",),
    "train_wall_s": ("wall_s", "wall_s_total", "train_wall_s", "wall_s_this_run", "wall_time_s", "seconds"),
    "linked_share": ("linked_share",),
}


def _find_key(obj: Any, names: Sequence[str]) -> Any:
    """First value under any of ``names``, searching nested dicts breadth-first."""
    queue = [obj]
    while queue:
        node = queue.pop(0)
        if not isinstance(node, dict):
            continue
        for name in names:
            if name in node and not isinstance(node[name], (dict, list)):
                return node[name]
        queue.extend(v for v in node.values() if isinstance(v, dict))
    return None


def training_meta(pipeline: Path, metrics_path: Path | None = None) -> dict[str, Any]:
    """Steps, seed and training wall time of the run that made ``pipeline``.

    Both ``distill`` and ``train-baseline`` write ``metrics.json`` beside ``model-best``; a spaCy
    ``config.cfg`` in the pipeline fills the gaps (``[training] max_steps``/``seed``).
    """
    meta: dict[str, Any] = {k: None for k in _META_KEYS}
    candidates = [metrics_path] if metrics_path else [pipeline.parent / "metrics.json", pipeline / "metrics.json"]
    for path in candidates:
        if path is not None and path.is_file():
            data = json.loads(path.read_text(encoding="utf8"))
            for key, names in _META_KEYS.items():
                meta[key] = _find_key(data, names)
            break
    cfg_path = pipeline / "config.cfg"
    if cfg_path.is_file() and (meta["steps"] is None or meta["seed"] is None):
        from confection import Config

        training = Config().from_disk(cfg_path, interpolate=False).get("training", {})
        if meta["steps"] is None:
            meta["steps"] = training.get("max_steps")
        if meta["seed"] is None:
            meta["seed"] = training.get("seed")
    return meta


def corpus_name(corpus: str | Path) -> str:
    """``ner/NCBI-disease/test.tsv`` → ``NCBI-disease``: a split file is named by its folder."""
    path = Path(corpus)
    return path.parent.name if path.stem in ("train", "dev", "devel", "test") else path.stem


def evaluate_nlp(
    nlp: Any,
    corpus: str | Path,
    table: dict[str, Any],
    *,
    batch_size: int,
    labels: Sequence[str] | None = None,
    spans_key: str | None = None,
    limit: int = 0,
) -> dict[str, Any]:
    """Score a loaded pipeline on one corpus (first ``limit`` sentences when > 0)."""
    sentences = read_corpus(corpus)
    if limit:
        sentences = sentences[:limit]
    labels = list(labels) if labels else corpus_labels(sentences)
    if not labels:
        raise ValueError(f"{corpus} has no gold spans, so it has no labels to evaluate")
    gold = gold_spans(sentences, labels)
    start = time.perf_counter()
    pred, dropped = predict(nlp, sentences, labels, table, batch_size, spans_key)
    seconds = time.perf_counter() - start
    return {
        "corpus": str(corpus),
        "test": corpus_name(corpus),
        "labels": labels,
        "prompts": {lab: label_prompt(lab, table) for lab in labels},
        "n_sentences": len(sentences),
        "n_gold": len(gold),
        "n_pred": len(pred),
        "dropped_predictions": dropped,
        "exact": exact_scores(gold, pred, labels).as_dict(),
        "relaxed": relaxed_scores(gold, pred, labels),
        "eval_seconds": seconds,
        "sentences_per_s": len(sentences) / seconds if seconds else None,
    }


def evaluate_pipeline(
    pipeline: str | Path,
    corpus: str | Path,
    *,
    config: str | Path = DEFAULT_CONFIG,
    labels_table: str | Path | None = None,
    labels: Sequence[str] | None = None,
    spans_key: str | None = None,
    limit: int = 0,
    tags: dict[str, Any] | None = None,
    train_metrics: Path | None = None,
    quantize: bool = False,
) -> dict[str, Any]:
    """Score one pipeline on one corpus; returns the JSON-ready result row.

    ``quantize`` loads the ``kogner`` pipe with int8 on, to measure what the opt-in costs in F1."""
    import spacy

    cfg = load_config(config)["evaluate"]
    table = load_label_table(labels_table or cfg["labels_table"])
    nlp = spacy.load(pipeline, config={"components.kogner.quantize": True} if quantize else {})
    row: dict[str, Any] = {"pipeline": str(pipeline), "quantize": quantize}
    row.update(
        evaluate_nlp(
            nlp,
            corpus,
            table,
            batch_size=int(cfg["batch_size"]),
            labels=labels,
            spans_key=spans_key,
            limit=limit,
        )
    )
    row.update(training_meta(Path(pipeline), train_metrics))
    row.update(tags or {})
    return row


def evaluate_suite(
    config: str | Path,
    out_dir: str | Path,
    profile: str,
    overrides: dict[str, Any] | None = None,
    suite: str = "suite",
) -> list[Path]:
    """Score every ``[suite.*]`` pipeline on its test corpora in one process (one JSON per pair).

    One process matters: loading torch, spaCy and a pipeline costs more than scoring a small test
    split, and the smoke workflow must stay within minutes.
    """
    import spacy

    cfg = load_config(config, overrides)
    settings = dict(cfg["evaluate"])
    if profile not in cfg.get("profiles", {}):
        raise ValueError(f"Profile {profile!r} has no [profiles.{profile}] section in {config}")
    settings.update(cfg["profiles"][profile])
    table = load_label_table(settings["labels_table"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if suite not in cfg:
        raise ValueError(f"No [{suite}] section in {config}")
    for run, spec in cfg[suite].items():
        pipeline = Path(spec["pipeline"])
        nlp = spacy.load(pipeline)
        meta = training_meta(pipeline)
        for corpus in spec["tests"]:
            row: dict[str, Any] = {"run": run, "pipeline": str(pipeline)}
            row.update(
                evaluate_nlp(nlp, corpus, table, batch_size=int(settings["batch_size"]), limit=int(settings["limit"]))
            )
            row.update(meta)
            row.update(
                {
                    "system": spec["system"],
                    "protocol": spec["protocol"],
                    "train": spec["train"],
                    "profile": profile,
                    "eval_limit": int(settings["limit"]),
                }
            )
            path = out / f"{run}__{row['test']}.json"
            path.write_text(json.dumps(row, indent=2), encoding="utf8")
            written.append(path)
            ex, rx = row["exact"]["f"], row["relaxed"]["f"]
            print(f"{run} on {row['test']}: exact F1 {ex:.1f}, relaxed F1 {rx:.1f}")
    return written


# ------------------------------------------------------------------------------------ report


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
    rows: Sequence[dict[str, Any]], path: Path, report_cfg: dict[str, Any], refs: dict[str, Any] | None = None
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
        figsize=(float(report_cfg["chart_width"]), float(report_cfg["chart_height"])),
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
        ax.set_ylim(0, float(report_cfg["chart_ymax"]))
        ax.set_xticks(centers)
        ax.set_xticklabels(tests, rotation=20, ha="right")
        ax.set_title(f"protocol: {protocol}")
        ax.set_ylabel("exact-span F1 (%)")
        ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=int(report_cfg["chart_dpi"]))
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
    paths["md"].write_text(render_markdown(rows, refs, int(cfg["report"]["digits"])), encoding="utf8")
    render_chart(rows, paths["png"], cfg["report"], refs)
    return paths


# --------------------------------------------------------------------------------------- CLI


def _parse_tags(tags: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tag in tags:
        key, sep, value = tag.partition("=")
        if not sep or not key:
            raise ValueError(f"--tag expects KEY=VALUE, got {tag!r}")
        out[key] = value
    return out


def register(app: Any) -> None:
    """Add ``evaluate`` and ``report`` to the ``python -m spacy_kogner`` app."""

    def evaluate_cmd(
        pipeline: Path = typer.Argument(..., help="spaCy pipeline folder or package name", exists=False),
        corpus: Path = typer.Argument(..., help="Test corpus (.spacy, GLiNER .json, .jsonl or IOB .tsv)"),
        out: Path | None = typer.Option(None, "--out", help="Write the result row as JSON here"),
        labels_table: Path | None = typer.Option(None, help="Label → prompt table (default: from config)"),
        labels: str = typer.Option("", help="Comma-separated labels (default: the corpus's gold labels)"),
        spans_key: str = typer.Option("", help="Score doc.spans[KEY] instead of doc.ents"),
        config: Path = typer.Option(Path(DEFAULT_CONFIG), help="Evaluation config"),
        limit: int = typer.Option(0, help="Only the first N sentences (0 = all)"),
        train_metrics: Path | None = typer.Option(
            None, help="metrics.json of the training run (default: beside the pipeline)"
        ),
        tag: list[str] = typer.Option([], help="KEY=VALUE added to the row (system, protocol, train, ...)"),
        quantize: bool = typer.Option(False, "--quantize", help="Run the kogner pipe in int8 (CPU)"),
    ) -> None:
        """Exact-span and relaxed micro P/R/F1 of PIPELINE on CORPUS, overall and per label."""
        row = evaluate_pipeline(
            pipeline,
            corpus,
            config=config,
            labels_table=labels_table,
            labels=[x for x in labels.split(",") if x] or None,
            spans_key=spans_key or None,
            limit=limit,
            tags=_parse_tags(tag),
            train_metrics=train_metrics,
            quantize=quantize,
        )
        ex, rx = row["exact"], row["relaxed"]
        typer.echo(
            f"{row['test']}: exact P {ex['p']:.1f} R {ex['r']:.1f} F1 {ex['f']:.1f} "
            f"| relaxed F1 {rx['f']:.1f} "
            f"({row['n_sentences']} sentences, {row['sentences_per_s'] or 0:.1f} sent/s)"
        )
        for label, s in ex["per_label"].items():
            typer.echo(f"  {label:<20} P {s['p']:.1f} R {s['r']:.1f} F1 {s['f']:.1f}")
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(row, indent=2), encoding="utf8")
            typer.echo(f"Wrote {out}")

    def report_cmd(
        inputs: list[Path] = typer.Argument(..., help="Evaluation JSON files or folders holding them"),
        out_dir: Path = typer.Option(Path("results"), help="Where results.json/.md/.png go"),
        config: Path = typer.Option(Path(DEFAULT_CONFIG), help="Evaluation config (references, chart)"),
    ) -> None:
        """Collect evaluation JSONs into results.json, results.md (beside the paper) and a chart."""
        paths = write_report(inputs, out_dir, config)
        typer.echo("Wrote " + ", ".join(str(p) for p in paths.values()))

    def evaluate_suite_cmd(
        ctx: typer.Context,
        config: Path = typer.Argument(..., help="Evaluation config with [suite.*] entries"),
        out_dir: Path = typer.Argument(..., help="Folder for one JSON per pipeline x test corpus"),
        profile: str = typer.Option(..., help="Profile whose [profiles.NAME] settings apply"),
        suite: str = typer.Option("suite", help="Config section listing the runs ([suite] or [loco])"),
    ) -> None:
        """Evaluate every pipeline of the config's suite on its test corpora, in one process."""
        from .config import parse_overrides

        paths = evaluate_suite(config, out_dir, profile, parse_overrides(ctx.args), suite)
        typer.echo(f"Wrote {len(paths)} evaluation files to {out_dir}")

    app.command("evaluate")(evaluate_cmd)
    app.command("evaluate-suite", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
        evaluate_suite_cmd
    )
    app.command("report")(report_cmd)
