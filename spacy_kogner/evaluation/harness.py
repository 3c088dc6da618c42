"""One evaluation harness for every pipeline and every test corpus.

KoGNER, its b = 0 ablation and the spaCy baseline are scored by the same code on the same
sentences, so their numbers can stand side by side (and beside the paper's Table 2).

* **Metrics** from ``metrics.py``: exact (the headline) and relaxed span F1.
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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import load_config, read_section
from ..data.labels import label_prompt, load_label_table
from ..data.readers import Sentence, read_corpus
from .metrics import SpanKey, exact_scores, relaxed_scores

DEFAULT_CONFIG = "configs/evaluate.cfg"


@dataclass
class EvaluateSettings:
    """``[evaluate]`` of ``configs/evaluate.cfg``."""

    batch_size: int
    limit: int
    labels_table: str


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


def training_meta(pipeline: Path, summary_path: Path | None = None) -> dict[str, Any]:
    """Steps, seed, training wall time and linked share of the run that made ``pipeline``, read
    from the run's ``metrics.json`` (one schema for every trainer, ``training/summary.py``)."""
    from ..run_summary import SUMMARY_FILE, RunSummary

    meta: dict[str, Any] = {"steps": None, "seed": None, "train_wall_s": None, "linked_share": None}
    candidates = [summary_path] if summary_path else [pipeline.parent / SUMMARY_FILE, pipeline / SUMMARY_FILE]
    for path in candidates:
        if path is not None and path.is_file():
            summary = RunSummary.read(path)
            meta.update(
                steps=summary.steps,
                seed=summary.seed,
                train_wall_s=summary.wall_s,
                linked_share=summary.details.get("linked_share"),
                cpu=summary.cpu,
            )
            break
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
        "words_per_s": sum(len(s.tokens) for s in sentences) / seconds if seconds else None,
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
    precision: str = "",
) -> dict[str, Any]:
    """Score one pipeline on one corpus; returns the JSON-ready result row.

    ``quantize`` loads the ``kogner`` pipe with int8 on, ``precision`` ("fp32", "bf16", "auto";
    "" = as saved) with that inference precision: to measure what each opt-in costs in F1."""
    import spacy

    cfg = read_section(EvaluateSettings, load_config(config)["evaluate"], "evaluate")
    table = load_label_table(labels_table or cfg.labels_table)
    overrides: dict[str, Any] = {"components.kogner.quantize": True} if quantize else {}
    if precision:
        overrides["components.kogner.precision"] = precision
    nlp = spacy.load(pipeline, config=overrides)
    row: dict[str, Any] = {"pipeline": str(pipeline), "quantize": quantize}
    if precision:
        row["precision"] = precision
    row.update(
        evaluate_nlp(
            nlp,
            corpus,
            table,
            batch_size=cfg.batch_size,
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

    cfg = load_config(config, overrides, profile)
    settings = read_section(EvaluateSettings, cfg["evaluate"], "evaluate")
    table = load_label_table(settings.labels_table)
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
            row.update(evaluate_nlp(nlp, corpus, table, batch_size=settings.batch_size, limit=settings.limit))
            row.update(meta)
            row.update(
                {
                    "system": spec["system"],
                    "protocol": spec["protocol"],
                    "train": spec["train"],
                    "profile": profile,
                    "eval_limit": settings.limit,
                }
            )
            path = out / f"{run}__{row['test']}.json"
            path.write_text(json.dumps(row, indent=2), encoding="utf8")
            written.append(path)
            ex, rx = row["exact"]["f"], row["relaxed"]["f"]
            print(f"{run} on {row['test']}: exact F1 {ex:.1f}, relaxed F1 {rx:.1f}")
    return written
