"""Training commands: ``distill`` (the KoGNER student) and ``train-baseline`` (spaCy baselines)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .app import OVERRIDES, PROFILE_OPTION, app, fail, overrides_of


@app.command("distill", context_settings=OVERRIDES)
def distill_cmd(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="Distillation config, e.g. configs/distill.cfg"),
    output_dir: Path = typer.Argument(..., help="Run folder: checkpoint, log.jsonl, model-best/, metrics.json"),
    profile: str = PROFILE_OPTION,
) -> None:
    """Train the student with L = a·L_lang + b·L_dist; resumes from OUTPUT_DIR/checkpoint.pt."""
    from ..training.distill import distill

    metrics = distill(config, output_dir, overrides_of(ctx), profile=profile or None)
    typer.echo(json.dumps(metrics, indent=2))


@app.command("kg-retrieval")
def kg_retrieval_cmd(
    run_dir: Path = typer.Argument(..., help="A finished distill run folder (config.cfg, checkpoint, retrieval.json)"),
) -> None:
    """Recompute a run's after-training KG retrieval (per kind too) from its last checkpoint."""
    from ..config import ConfigError
    from ..training.distill import rescore_retrieval

    try:
        after = rescore_retrieval(run_dir)["after"]
    except ConfigError as err:
        fail(str(err))
    typer.echo(json.dumps(after, indent=2))


@app.command("calibrate", context_settings=OVERRIDES)
def calibrate_cmd(
    ctx: typer.Context,
    pipeline: Path = typer.Argument(..., help="A saved pipeline with a kogner pipe (e.g. RUN/model-best)"),
    dev: Path = typer.Argument(..., help="Dev split in GLiNER JSON (a corpus folder's dev.json)"),
    output: Path = typer.Option(None, help="Where to save the calibrated pipeline (default: in place)"),
    calibration: Path = typer.Option(None, help="Spans for the prompts no dev label carries (dev_silver.json)"),
    config: Path = typer.Option(Path("configs/distill.cfg"), help="Distill config: the threshold grid and min spans"),
    profile: str = PROFILE_OPTION,
) -> None:
    """Tune a pipeline's decision thresholds on dev: the model's, then each prompt's own where dev
    (or the calibration split, for prompts no dev label has) holds enough spans (overrides:
    --training.calibrate_min_spans 100)."""
    from ..config import ConfigError, load_config
    from ..training.calibrate import calibrate_pipeline

    try:
        cfg = load_config(config, overrides_of(ctx), profile=profile or None)
        t, paths = cfg["training"], cfg["paths"]
        found = calibrate_pipeline(
            pipeline, dev, output or pipeline,
            grid=list(t["tune_threshold"]) or [t["eval_threshold"]], prefer=t["eval_threshold"],
            min_spans=t["calibrate_min_spans"], labels_path=paths["labels"],
            docs_per_call=t["eval_docs_per_call"], calibration_path=calibration or "",
            fallback=t["fallback_threshold"],
        )  # fmt: skip
    except ConfigError as err:
        fail(str(err))
    typer.echo(json.dumps(found, indent=2))


@app.command("train-baseline", context_settings=OVERRIDES)
def train_baseline_cmd(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="spaCy training config (configs/spacy_trf.cfg or configs/spacy_cnn.cfg)"),
    output: Path = typer.Argument(..., help="Output folder (model-best/, model-last/, metrics.json)"),
    gpu_id: int = typer.Option(-1, help="GPU id, -1 for CPU"),
    profile: str = PROFILE_OPTION,
) -> None:
    """``spacy train`` on the offline backbone; writes metrics.json (the project's run summary)."""
    from ..training.baseline import train_baseline

    output.mkdir(parents=True, exist_ok=True)
    summary = train_baseline(config, output, overrides_of(ctx), gpu_id, profile=profile or None)
    typer.echo(f"Baseline trained in {summary.wall_s:.0f} s: {output / 'model-best'}")


@app.command("build-link-index", context_settings=OVERRIDES)
def build_link_index_cmd(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="Linker index config, e.g. configs/link_index.cfg"),
    output: Path = typer.Argument(..., help="Index folder (nodes.tsv, vectors.npy, projector.safetensors, meta.json)"),
    pipeline_out: Path = typer.Option(None, help="Also save the config's pipeline with a kogner_linker pipe here"),
) -> None:
    """Fit the dense linker's projections on dictionary-linked spans and project the KG (overrides:
    --build.steps 800)."""
    from ..training.link_index import build_link_index

    metrics = build_link_index(config, output, overrides_of(ctx), pipeline_out)
    keys = ("nodes", "train_pairs", "dev_retrieval", "threshold", "threshold_at", "index_bytes", "seconds")
    typer.echo(json.dumps({k: metrics[k] for k in keys}, indent=2))
    if pipeline_out is not None:
        typer.echo(f"Pipeline with kogner_linker: {pipeline_out}")
