"""Teacher commands: ``teacher`` (build H) and ``kg-info`` (summarise a KG)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .app import OVERRIDES, PROFILE_OPTION, app, load_command_config


@app.command("teacher", context_settings=OVERRIDES)
def teacher_command(
    ctx: typer.Context,
    config_path: Path = typer.Argument(..., help="Teacher config, e.g. configs/teacher.cfg"),
    output_dir: Path = typer.Argument(..., help="Folder for H.npy, index.tsv, meta.json, metrics.json"),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars"),
    profile: str = PROFILE_OPTION,
) -> None:
    """Build the KG teacher H = [Z, Z', Z''] (resumes finished stages); overrides: --gnn.lr 0.01."""
    from ..teacher.stages import run_teacher

    cfg = load_command_config(config_path, ctx, profile)
    metrics = run_teacher(cfg, output_dir, progress=not quiet, log=typer.echo)
    gnn, transr = metrics["gnn"], metrics["transr"]
    typer.echo(json.dumps({"gnn_test_acc": gnn["test_acc"], "transr": transr["test_filtered"]}, indent=2))


@app.command("kg-info")
def kg_info_command(
    paths: list[Path] = typer.Argument(None, help="Nodes TSV, then one or more edge files (Hetionet format)"),
    config_path: Path = typer.Option(None, "--config", help="Read the [kg] section of this config instead"),
) -> None:
    """Summarise a KG: node/edge counts by kind and relation, isolated nodes, largest component."""
    from ..kg.graph import KnowledgeGraph, load_kg

    if config_path is not None:
        from ..config import load_config

        kg = load_kg(load_config(config_path)["kg"])
    else:
        if not paths or len(paths) < 2:
            raise typer.BadParameter("give the nodes file and at least one edge file")
        kg = KnowledgeGraph.from_hetionet(paths[0], paths[1:])
    typer.echo(json.dumps(kg.summary(), indent=2))
