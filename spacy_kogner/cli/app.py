"""The one typer app behind ``python -m spacy_kogner`` and its one override helper.

Command modules (``cli/<group>.py``) add their commands with ``@app.command``; commands that
read a config take ``--profile NAME`` and spaCy-style ``--section.key value`` overrides, both
applied by ``load_command_config``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import typer

app = typer.Typer(
    name="spacy_kogner",
    help="KoGNER: knowledge-graph distilled GLiNER NER for spaCy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# context_settings of a command that accepts ``--section.key value`` overrides after its arguments
OVERRIDES = {"allow_extra_args": True, "ignore_unknown_options": True}
PROFILE_OPTION = typer.Option("", "--profile", help="Profile override file configs/profiles/NAME/<step>.cfg")


def overrides_of(ctx: typer.Context) -> dict[str, Any]:
    """The ``--section.key value`` pairs after a command's arguments."""
    from ..config import parse_overrides

    return parse_overrides(ctx.args)


def load_command_config(path: str | Path, ctx: typer.Context, profile: str = "") -> Any:
    """Base config < profile file < command-line overrides (``config.load_config``)."""
    from ..config import load_config, resolve_config_path

    return load_config(resolve_config_path(path), overrides_of(ctx), profile or None)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a one-line error (no traceback) and exit non-zero."""
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)
