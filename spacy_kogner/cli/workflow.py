"""Workflow commands: ``fetch-assets``, ``slice-data`` and ``package``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import typer

from .app import OVERRIDES, PROFILE_OPTION, app, fail, overrides_of

MIRROR_HELP = "Mirror folder (default: $KOGNER_ASSETS_MIRROR; empty = download)"


@app.command("fetch-assets")
def fetch_assets_cmd(
    project_dir: Path = typer.Argument(Path("."), help="Project folder holding project.yml"),
    mirror: str = typer.Option("", help=MIRROR_HELP),
    copy: bool = typer.Option(False, help="Copy files instead of symlinking them"),
    extra: bool = typer.Option(False, help="Also fetch assets marked extra"),
) -> None:
    """Link/copy assets from the mirror (or download them) and verify every md5 checksum."""
    from ..workflow.assets import AssetError, fetch_assets

    try:
        for asset, what in fetch_assets(project_dir, mirror or None, copy=copy, extra=extra):
            typer.echo(f"{asset.dest}: {what}")
    except AssetError as err:
        fail(f"fetch-assets: {err}")


@app.command("slice-data", context_settings=OVERRIDES)
def slice_data_cmd(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="Slice config, e.g. configs/slices.cfg"),
    assets: Path = typer.Argument(Path("assets"), help="The fetched assets folder"),
    out: Path = typer.Argument(..., help="Where the profile's view of the data goes"),
    profile: str = PROFILE_OPTION,
) -> None:
    """Write the profile-sized view of the assets (symlinks where a size is 0 = all)."""
    from ..workflow.slices import slice_data

    if out.exists() and not out.is_dir():
        raise typer.BadParameter(f"{out} exists and is not a folder")
    if out.is_dir():
        shutil.rmtree(out)
    report = slice_data(config, assets, out, overrides_of(ctx), profile or None)
    for key, value in report["ner"].items():
        typer.echo(f"ner/{key}: {value} sentences")
    typer.echo(f"kg: {report['kg']}")


@app.command("package")
def package_cmd(
    pipeline: Path = typer.Argument(..., help="Trained pipeline folder (model-best)"),
    out_dir: Path = typer.Argument(..., help="Where the package folder and wheel go"),
    name: str = typer.Option(..., help="Package name without the language prefix"),
    version: str = typer.Option(..., help="Package version"),
    check_text: str = typer.Option("", help="Install the wheel in a fresh venv and annotate this text"),
    venv_dir: Path | None = typer.Option(None, help="Fresh venv for the check (default: OUT_DIR/venv-check)"),
) -> None:
    """Build a wheel of PIPELINE with spacy package; optionally install it offline and annotate."""
    from ..workflow.packaging import build_wheel, check_install

    wheel = build_wheel(pipeline, out_dir, name, version)
    typer.echo(f"Built {wheel}")
    report: dict[str, Any] = {"wheel": str(wheel)}
    if check_text:
        lang = json.loads((pipeline / "meta.json").read_text(encoding="utf8")).get("lang", "en")
        result = check_install(wheel, f"{lang}_{name}", venv_dir or out_dir / "venv-check", check_text)
        report["check"] = result
        typer.echo(f"Installed {lang}_{name} offline in a fresh venv: ents {result['ents']}")
    (out_dir / "package.json").write_text(json.dumps(report, indent=2), encoding="utf8")


@app.command("indomain-study", context_settings=OVERRIDES)
def indomain_study_cmd(
    ctx: typer.Context,
    config: Path = typer.Argument(Path("configs/indomain.cfg"), help="Study config"),
    profile: str = PROFILE_OPTION,
    only: str = typer.Option("", help="Train and score one CORPUS[:SYSTEM] pair only (no summary)"),
    summary_only: bool = typer.Option(
        False, "--summary-only", help="Write the summary from the finished runs; train nothing"
    ),
) -> None:
    """Per corpus: KoGNER student vs spaCy CNN ner vs spaCy trf+ner, same data and cap, full test split."""
    from ..workflow.indomain import run_study

    table = run_study(config, overrides_of(ctx), profile or None, only, summary_only=summary_only)
    for corpus, entry in table.items():
        scores = ", ".join(f"{s} {entry[s]:.1f}" for s in ("kogner", "spacy_cnn", "spacy_trf") if s in entry)
        typer.echo(f"{corpus}: {scores}")


@app.command("pooled-study", context_settings=OVERRIDES)
def pooled_study_cmd(
    ctx: typer.Context,
    config: Path = typer.Argument(Path("configs/pooled.cfg"), help="Pooled corpus + study config"),
    only: str = typer.Option("", help="Build, train and score one run only: pooled or loco/<corpus>"),
    summary_only: bool = typer.Option(
        False, "--summary-only", help="Write the summary from the finished runs; train nothing"
    ),
) -> None:
    """One student for every label: pooled vs single-corpus, leave-one-corpus-out, held-out labels, speed."""
    from ..workflow.pooled import render_markdown, run_study

    summary = run_study(config, overrides_of(ctx), only, summary_only=summary_only)
    if summary:
        typer.echo(render_markdown(summary))


@app.command("kg-study", context_settings=OVERRIDES)
def kg_study_cmd(
    ctx: typer.Context,
    config: Path = typer.Argument(Path("configs/kg_study.cfg"), help="Study config"),
    only: str = typer.Option("", help="Train one regime only"),
    summary_only: bool = typer.Option(
        False, "--summary-only", help="Write the summary from the finished runs; train nothing"
    ),
) -> None:
    """Does the KG help? b = 0 vs KG shares, paired by seed, per regime; kg_study.json/.md/.png."""
    from ..workflow.kg_study import render_markdown, run_study

    summary = run_study(config, overrides_of(ctx), only, summary_only=summary_only)
    typer.echo(render_markdown(summary))
