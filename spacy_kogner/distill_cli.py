"""``python -m spacy_kogner distill CONFIG OUTPUT_DIR [--section.key value ...]``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .config import parse_overrides


def distill_cmd(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="Distillation config, e.g. configs/distill.cfg"),
    output_dir: Path = typer.Argument(..., help="Run folder: checkpoint, log.jsonl, model-best/, metrics.json"),
) -> None:
    """Train the student with L = a·L_lang + b·L_dist; resumes from OUTPUT_DIR/checkpoint.pt."""
    from .distill import distill

    metrics = distill(config, output_dir, parse_overrides(ctx.args))
    typer.echo(json.dumps(metrics, indent=2))


def register(app: typer.Typer) -> None:
    from .cli import OVERRIDES

    app.command("distill", context_settings=OVERRIDES)(distill_cmd)
