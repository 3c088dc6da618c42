"""Evaluation commands: ``evaluate`` (one pipeline, one corpus), ``evaluate-suite`` and ``report``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from .app import OVERRIDES, app, overrides_of

DEFAULT_CONFIG = "configs/evaluate.cfg"


def _parse_tags(tags: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tag in tags:
        key, sep, value = tag.partition("=")
        if not sep or not key:
            raise ValueError(f"--tag expects KEY=VALUE, got {tag!r}")
        out[key] = value
    return out


@app.command("evaluate")
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
    precision: str = typer.Option("", help="Run the kogner pipe in fp32, bf16 or auto (default: as saved)"),
) -> None:
    """Exact-span and relaxed micro P/R/F1 of PIPELINE on CORPUS, overall and per label."""
    from ..evaluation.harness import evaluate_pipeline

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
        precision=precision,
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


@app.command("report")
def report_cmd(
    inputs: list[Path] = typer.Argument(..., help="Evaluation JSON files or folders holding them"),
    out_dir: Path = typer.Option(Path("results"), help="Where results.json/.md/.png go"),
    config: Path = typer.Option(Path(DEFAULT_CONFIG), help="Evaluation config (references, chart)"),
) -> None:
    """Collect evaluation JSONs into results.json, results.md (beside the paper) and a chart."""
    from ..evaluation.report import write_report

    paths = write_report(inputs, out_dir, config)
    typer.echo("Wrote " + ", ".join(str(p) for p in paths.values()))


@app.command("evaluate-suite", context_settings=OVERRIDES)
def evaluate_suite_cmd(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="Evaluation config with [suite.*] entries"),
    out_dir: Path = typer.Argument(..., help="Folder for one JSON per pipeline x test corpus"),
    profile: str = typer.Option(..., help="Profile whose configs/profiles/NAME/evaluate.cfg applies"),
    suite: str = typer.Option("suite", help="Config section listing the runs ([suite] or [loco])"),
) -> None:
    """Evaluate every pipeline of the config's suite on its test corpora, in one process."""
    from ..evaluation.harness import evaluate_suite

    paths = evaluate_suite(config, out_dir, profile, overrides_of(ctx), suite)
    typer.echo(f"Wrote {len(paths)} evaluation files to {out_dir}")


@app.command("evaluate-linking")
def evaluate_linking_cmd(
    pipeline: Path = typer.Argument(..., help="A pipeline with kogner and kogner_linker pipes"),
    corpora: str = typer.Argument("NCBI-disease,BC5CDR", help="Comma-separated corpus names or folders"),
    out: Path = typer.Option(Path("results/linking"), help="Writes OUT.json, OUT.md and OUT_dense_sample.tsv"),
    split: str = typer.Option("test", help="Split whose gold mentions are linked"),
    mirror: str = typer.Option("../shared/data/ner", help="Where corpus names are looked up"),
    linking: str = typer.Option("configs/linking.cfg", help="The reference dictionary linker's config"),
    labels: str = typer.Option("configs/labels.cfg", help="Label table"),
    sample: int = typer.Option(150, help="Dense-only links written for a hand check"),
    note: str = typer.Option("", help="A line for the .md (machine, settings)"),
) -> None:
    """Accuracy@1, recall@5, NIL precision and mentions/s of dictionary, dense, both and TF-IDF linking."""
    from ..workflow.linking_eval import evaluate_linking, write_linking

    table, picked = evaluate_linking(pipeline, corpora.split(","), split, mirror, linking, labels, sample)
    write_linking(table, picked, out, note)
    typer.echo(out.with_suffix(".md").read_text(encoding="utf8"))
