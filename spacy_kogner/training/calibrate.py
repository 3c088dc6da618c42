"""Decision thresholds chosen on dev: one for the model, and one per prompt where dev can tell.

A span model's scores are not equally calibrated across prompts. A prompt trained on thousands of
gold spans and a prompt trained only on KG silver (a pool without BC5CDR learns "chemical" from
dictionary matches alone) land on different score scales, and one threshold tuned on the gold
labels' dev spans cuts the silver-only prompt's real mentions away (measured: a leave-BC5CDR-out
student found 6.9 % of BC5CDR's chemicals at its dev-tuned 0.5). So, after the model threshold:

* every prompt with at least ``min_spans`` gold dev spans gets the threshold that maximises its own
  dev F1 (the others held at the model threshold);
* a prompt no gold dev label carries (a silver-only prompt) is calibrated the same way on the
  *calibration* split (``dev_silver.json`` of a pooled corpus: the dev sentences' silver spans);
* a prompt with too few spans in either is reported, not tuned: a gold dev prompt keeps the
  dev-tuned model threshold, a silver-only one takes the fallback below.

A prompt that none of this evidence covers (a label the user names at run time, a held-out corpus's
label) falls back to the component's ``threshold``. With ``fallback = "calibration"`` and a
calibration split, that is the one threshold with the best joint F1 over the silver-only prompts,
and every gold dev prompt is pinned to its own (or the dev-tuned model) threshold: a prompt the
student learnt from weak evidence scores on the silver prompts' scale, not on the scale of prompts
trained on thousands of gold spans (measured: every silver-only prompt of two leave-one-out students
calibrated 0.1-0.2 below their dev-tuned model threshold). ``fallback = "dev"`` keeps the dev-tuned
model threshold for them.

The thresholds land in the pipeline's ``prompt_thresholds`` (``pipeline/component.py``). All of it
reads dev data only; no test split is touched.

The scoring is shared with training's evaluation: ``score_records`` runs a pipeline once at the
lowest threshold with every (span, label) kept, and ``decode`` then applies any threshold rule
exactly as the component does (best label per span, greedy flat by score).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..evaluation.metrics import Counts, Scores, exact_scores
from .batches import Record

Scored = list[dict[tuple[int, int, str], float]]
MakePipeline = Callable[[list[str], float], Any]
# what a prompt without its own threshold gets (module docstring)
FALLBACKS = ("calibration", "dev")


def score_records(
    make_pipeline: MakePipeline, records: Sequence[Record], threshold: float, docs_per_call: int
) -> Scored:
    """Every (start, end exclusive, label) scored above ``threshold`` in each record.

    Records are prompted in groups that share a label set (a gold corpus's labels; a calibration
    sentence's matched silver prompts), with ``make_pipeline(labels, threshold)``."""
    from spacy.tokens import Doc

    out: Scored = [{} for _ in records]
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault(tuple(sorted(set(r.labels))), []).append(i)
    for labels, idx in groups.items():
        if not labels:
            continue
        nlp = make_pipeline(list(labels), threshold)
        nlp.get_pipe("kogner").configure(flat=False, multi_label=True, prompt_thresholds={})
        docs = [Doc(nlp.vocab, words=records[i].tokens) for i in idx]
        for i, doc in zip(idx, nlp.pipe(docs, batch_size=docs_per_call), strict=True):
            group = doc.spans["kogner"]
            out[i] = {(s.start, s.end, s.label_): sc for s, sc in zip(group, group.attrs["scores"], strict=True)}
    return out


def decode(records: Sequence[Record], scored: Scored, cut: Callable[[str], float]) -> Scores:
    """Exact-span scores of the entities the component would output with threshold ``cut(label)``."""
    from ..pipeline.windows import best_label_per_span, greedy_flat

    gold = [(i, s, e + 1, lbl) for i, r in enumerate(records) for s, e, lbl in r.ner]
    pred = []
    for i, spans in enumerate(scored):
        labels = sorted({lbl for (_, _, lbl) in spans})
        hits = {(s, e - 1, labels.index(lbl)): sc for (s, e, lbl), sc in spans.items() if sc > cut(lbl)}
        items = sorted(best_label_per_span(hits).items(), key=lambda kv: (-kv[1], kv[0]))
        keep = greedy_flat(items, len(records[i].tokens))
        pred.extend((i, items[k][0][0], items[k][0][1] + 1, labels[items[k][0][2]]) for k in keep)
    return exact_scores(gold, pred)


@dataclass
class Calibration:
    """The component's threshold (for prompts without their own), the per-prompt ones that differ
    from it, and the dev evidence."""

    threshold: float
    # the best one threshold for the gold dev labels (``threshold`` too unless the fallback moved it)
    dev_threshold: float
    # the best joint threshold of the silver-only prompts (None: no calibration split was tuned)
    silver_threshold: float | None
    prompt_thresholds: dict[str, float]
    dev_f: float
    # dev micro F1 with every prompt at its own threshold (``dev_f``: all at ``dev_threshold``)
    dev_f_calibrated: float
    by_threshold: dict[str, float]
    by_prompt: dict[str, dict[str, Any]]


def _best(grid: Sequence[float], f_of: Callable[[float], float], prefer: float) -> float:
    """The grid value with the best F1; ties go to the one closest to ``prefer``."""
    return max(grid, key=lambda t: (round(f_of(t), 6), -abs(t - prefer)))


def _f_where(records: Sequence[Record], scored: Scored, t: float, base: float, chosen: Callable[[str], bool]) -> float:
    """Micro F1 over the labels ``chosen`` picks, those cut at ``t`` and every other at ``base``."""
    scores = decode(records, scored, lambda lbl: t if chosen(lbl) else base)
    total = Counts()
    for label, counts in scores.per_label.items():
        if chosen(label):
            total.add(counts)
    return float(total.as_dict()["f"])


def _joint_best(
    records: Sequence[Record],
    scored: Scored,
    grid: Sequence[float],
    base: float,
    prompt_of: Callable[[str], str],
    prompts: set[str],
) -> float:
    """The one threshold with the best micro F1 over the labels of ``prompts`` together (every
    other label held at ``base``); ties go to the one closest to ``base``."""

    def chosen(lbl: str) -> bool:
        return prompt_of(lbl).casefold() in prompts

    by = {t: _f_where(records, scored, t, base, chosen) for t in grid}
    return _best(grid, by.__getitem__, base)


def tune_prompts(
    records: Sequence[Record],
    scored: Scored,
    grid: Sequence[float],
    base: float,
    prompt_of: Callable[[str], str],
    min_spans: int,
    source: str,
    skip: set[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per prompt of the records' gold labels (bar ``skip``): the threshold with its best own F1,
    every other label held at ``base``; prompts with fewer than ``min_spans`` spans are reported,
    not tuned."""
    spans: dict[str, int] = {}
    for r in records:
        for _, _, lbl in r.ner:
            spans[lbl] = spans.get(lbl, 0) + 1
    out: dict[str, dict[str, Any]] = {}
    for label, n in sorted(spans.items()):
        prompt = prompt_of(label).casefold()
        if prompt in (skip or set()) or prompt in out:
            continue
        entry: dict[str, Any] = {"label": label, "spans": n, "source": source}
        if n >= min_spans:
            by = {t: _f_where(records, scored, t, base, label.__eq__) for t in grid}
            best = _best(grid, by.__getitem__, base)
            entry.update(threshold=best, f_at_base=round(by[base], 2), f=round(by[best], 2))
        out[prompt] = entry
    return out


def calibrate(
    dev: Sequence[Record],
    dev_scored: Scored,
    grid: Sequence[float],
    prefer: float,
    prompt_of: Callable[[str], str],
    min_spans: int,
    calibration: Sequence[Record] = (),
    calibration_scored: Scored | None = None,
    fallback: str = "calibration",
) -> Calibration:
    """The model threshold (best dev micro F1, ties to ``prefer``), then per-prompt thresholds:
    from gold dev for its labels, from the calibration split for prompts no gold dev label has,
    then the fallback for every other prompt (module docstring). ``min_spans = 0`` keeps one
    threshold for all. Grid values are rounded to 6 decimals: a config read through ujson gives
    0.30000000000000004 for "0.3"."""
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
    grid = sorted({round(float(t), 6) for t in grid})
    prefer = round(float(prefer), 6)
    by_t = {t: decode(dev, dev_scored, lambda _lbl, t=t: t).total.as_dict()["f"] for t in grid}
    threshold = _best(grid, by_t.__getitem__, prefer)
    by_prompt: dict[str, dict[str, Any]] = {}
    silver_threshold = None
    pinned: dict[str, float] = {}
    if min_spans > 0:
        by_prompt = tune_prompts(dev, dev_scored, grid, threshold, prompt_of, min_spans, "dev")
        if calibration and calibration_scored is not None:
            gold_prompts = {prompt_of(lbl).casefold() for r in dev for lbl in r.labels}
            by_prompt.update(
                tune_prompts(
                    calibration, calibration_scored, grid, threshold, prompt_of, min_spans, "calibration", gold_prompts
                )
            )
            silver = {p for p, e in by_prompt.items() if e["source"] == "calibration" and "threshold" in e}
            if silver and fallback == "calibration":
                silver_threshold = _joint_best(calibration, calibration_scored, grid, threshold, prompt_of, silver)
                # the gold dev prompts keep the dev evidence whatever the fallback becomes
                pinned = dict.fromkeys(gold_prompts, threshold)
    tuned = pinned | {p: e["threshold"] for p, e in by_prompt.items() if "threshold" in e}
    final = silver_threshold if silver_threshold is not None else threshold
    own = {p: t for p, t in tuned.items() if t != final}
    calibrated = decode(dev, dev_scored, lambda lbl: own.get(prompt_of(lbl).casefold(), final))
    return Calibration(
        threshold=final,
        dev_threshold=threshold,
        silver_threshold=silver_threshold,
        prompt_thresholds=dict(sorted(own.items())),
        dev_f=by_t[threshold] / 100,
        dev_f_calibrated=calibrated.total.as_dict()["f"] / 100,
        by_threshold={str(t): round(v / 100, 4) for t, v in by_t.items()},
        by_prompt=by_prompt,
    )


def calibrate_pipeline(
    pipeline_dir: str | Path,
    dev_path: str | Path,
    out_dir: str | Path,
    *,
    grid: Sequence[float],
    prefer: float,
    min_spans: int,
    labels_path: str | Path,
    docs_per_call: int,
    calibration_path: str | Path = "",
    fallback: str = "calibration",
) -> dict[str, Any]:
    """Calibrate a saved pipeline's thresholds on ``dev_path`` (GLiNER JSON, as training writes it)
    and, for the prompts no dev label carries, on ``calibration_path``; save it to ``out_dir``
    with only ``threshold`` and ``prompt_thresholds`` changed. Returns the evidence."""
    import spacy

    from ..config import ConfigError
    from ..data.labels import label_prompt, load_label_table
    from .batches import read_records

    if not (Path(pipeline_dir) / "config.cfg").is_file():
        raise ConfigError(f"{pipeline_dir} is not a saved spaCy pipeline (no config.cfg)")
    nlp = spacy.load(pipeline_dir)
    if "kogner" not in nlp.pipe_names:
        raise ConfigError(f"{pipeline_dir} has no kogner pipe (pipes: {nlp.pipe_names})")
    pipe = nlp.get_pipe("kogner")
    before = dict(pipe.cfg)
    table = load_label_table(labels_path)

    def prompt_of(label: str) -> str:
        return label_prompt(label, table)

    def make_pipeline(labels: list[str], threshold: float) -> Any:
        pipe.configure(labels=[{"label": lbl, "prompt": prompt_of(lbl)} for lbl in labels], threshold=threshold)
        return nlp

    grid = sorted(set(grid) | {prefer})
    dev = read_records(dev_path)
    calibration = read_records(calibration_path) if calibration_path else []
    found = calibrate(
        dev,
        score_records(make_pipeline, dev, grid[0], docs_per_call),
        grid,
        prefer,
        prompt_of,
        min_spans,
        calibration,
        score_records(make_pipeline, calibration, grid[0], docs_per_call) if calibration else None,
        fallback,
    )
    # built again from its config.cfg with the thresholds replaced (not merged, as load-time
    # overrides of a dict setting are), so that the saved config.cfg says what kogner.json does
    tuned = {"threshold": found.threshold, "prompt_thresholds": found.prompt_thresholds}
    config = spacy.util.load_config(Path(pipeline_dir) / "config.cfg")
    config["components"]["kogner"].update(tuned)
    final = spacy.util.load_model_from_config(config, meta=spacy.util.get_model_meta(pipeline_dir))
    final.from_disk(pipeline_dir)
    final.get_pipe("kogner").configure(**tuned)
    final.to_disk(out_dir)
    return {"before": {k: before[k] for k in ("threshold", "prompt_thresholds")}, **dataclasses.asdict(found)}
