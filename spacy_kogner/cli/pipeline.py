"""Commands that build and measure pipelines: ``init-model`` and ``bench``."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import app


@app.command("init-model")
def init_model(
    out_dir: Path = typer.Argument(..., help="Folder to write the spaCy pipeline to"),
    encoder: str = typer.Option(
        "default", help="'default' (shipped MiniLM), a HF encoder id/path, a GLiNER checkpoint, or a saved pipeline"
    ),
    labels: str = typer.Option("", help="Comma-separated labels, e.g. Disease,Chemical"),
    max_width: int = typer.Option(12, help="Longest candidate span in tokens (new models only)"),
    lang: str = typer.Option("en", help="spaCy language of the blank pipeline"),
) -> None:
    """Write ``spacy.blank(lang)`` + ``kogner`` to OUT_DIR, loadable offline with ``spacy.load``."""
    import spacy

    nlp = spacy.blank(lang)
    label_list = [x.strip() for x in labels.split(",") if x.strip()]
    pipe = nlp.add_pipe("kogner", config={"model": encoder, "labels": label_list, "max_width": max_width})
    pipe.ensure_model()  # build (or load) the model now, so errors show here and weights get saved
    nlp.to_disk(out_dir)
    typer.echo(f"Wrote pipeline to {out_dir} (labels: {label_list or 'none yet'})")


@app.command("bench")
def bench(
    out: Path = typer.Option(Path("results/bench.json"), help="Where to write the JSON results"),
    corpus: Path = typer.Option(Path("../shared/data/ner/NCBI-disease/test.tsv"), help="IOB TSV test split"),
    model: str = typer.Option("default", help="Pipeline folder, GLiNER checkpoint, or encoder"),
    labels: str = typer.Option("Disease", help="Comma-separated labels"),
    limit: int = typer.Option(0, help="Use only the first N sentences (0 = all)"),
    batch_sizes: str = typer.Option("1,8,16,32,64", help="Raw GLiNER batch sizes to try"),
    int8: bool = typer.Option(True, "--int8/--no-int8", help="Also time the opt-in int8 pipe (last)"),
    bf16: bool = typer.Option(True, "--bf16/--no-bf16", help="Also time the pipe with bf16 autocast"),
) -> None:
    """Sentences/s and peak RSS: raw GLiNER vs our ``nlp.pipe`` vs one-at-a-time vs encoder alone."""
    from ..workflow.bench import run_bench

    run_bench(
        out,
        corpus,
        model,
        [x for x in labels.split(",") if x],
        limit,
        [int(b) for b in batch_sizes.split(",")],
        int8=int8,
        bf16=bf16,
    )
