"""``annotate``: run a kogner pipeline over a corpus into resumable Parquet entity shards."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import app, fail


@app.command("annotate")
def annotate_cmd(
    model: str = typer.Argument(
        ..., metavar="MODEL", help="spaCy pipeline folder or installed package with a kogner pipe"
    ),
    input_path: Path = typer.Argument(
        ..., metavar="INPUT", help="text (a document a line), JSONL, Parquet, PubTator or BioC XML"
    ),
    out_dir: Path = typer.Argument(..., metavar="OUTPUT_DIR", help="Shards + manifest.json; rerun to resume"),
    format: str = typer.Option(
        "auto", "--format", help="text, jsonl, parquet, pubtator or bioc (default: from the suffix)"
    ),
    engine: str = typer.Option("local", help="local (one process), processes (--workers) or ray (--actors)"),
    shard_size: int = typer.Option(10_000, help="Documents per output shard (the unit of resume)"),
    batch_size: int = typer.Option(64, help="Documents per nlp.pipe batch"),
    max_chars: int = typer.Option(1_000_000, help="Longer documents are reported as bad and skipped"),
    threads: int = typer.Option(1, help="torch threads per pipeline copy (part of the output identity)"),
    device: str = typer.Option("", help="Override the kogner pipe's device: cpu, cuda, cuda:N, auto"),
    workers: int = typer.Option(2, help="--engine processes: worker processes"),
    actors: int = typer.Option(2, help="--engine ray: annotator actors"),
    gpus_per_actor: float = typer.Option(0.0, help="--engine ray: GPUs per actor (sets --device cuda if unset)"),
    address: str = typer.Option("", help="--engine ray: cluster address (default: a local Ray on this machine)"),
    ray_temp_dir: str = typer.Option("", help="--engine ray: temp/log folder of a local Ray"),
    ray_window: int = typer.Option(0, help="--engine ray: chunks per Ray Data run (0 = 256 per actor)"),
    overwrite: bool = typer.Option(False, help="Start over in an OUTPUT_DIR made by another run"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar (docs/s, ETA)"),
) -> None:
    """Annotate INPUT with MODEL into Parquet shards of entities in OUTPUT_DIR (resumable)."""
    from ..workflow.annotate import AnnotateError, AnnotateSettings, EngineOptions, annotate_corpus

    if engine == "ray" and gpus_per_actor and not device:
        device = "cuda"  # an actor given a GPU should use it
    settings = AnnotateSettings(
        format=format,
        shard_size=shard_size,
        batch_size=batch_size,
        max_chars=max_chars,
        threads=threads,
        device=device,
    )
    options = EngineOptions(
        engine=engine,
        workers=workers,
        actors=actors,
        gpus_per_actor=gpus_per_actor,
        address=address,
        ray_temp_dir=ray_temp_dir,
        ray_window_chunks=ray_window,
    )
    try:
        manifest = annotate_corpus(
            model, input_path, out_dir, settings, options, overwrite=overwrite, progress=progress, log=typer.echo
        )
    except AnnotateError as err:
        fail(f"annotate: {err}")
    typer.echo(f"manifest: {out_dir / 'manifest.json'} (complete: {manifest['complete']})")
