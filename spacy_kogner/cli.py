"""The typer app behind ``python -m spacy_kogner``.

Each feature module owns its commands and registers them here, so this file only wires them
together (no logic of its own lives here).
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="spacy_kogner",
    help="KoGNER: knowledge-graph distilled GLiNER NER for spaCy.",
    no_args_is_help=True,
    add_completion=False,
)

OVERRIDES = {"allow_extra_args": True, "ignore_unknown_options": True}


def _register() -> None:
    from . import model_cli

    model_cli.register(app)
    from . import assets, baseline, evaluate, packaging, slices

    assets.register(app)
    baseline.register(app)
    evaluate.register(app)
    packaging.register(app)
    slices.register(app)
    from . import distill_cli

    distill_cli.register(app)
    from .data import cli as data_cli

    data_cli.register(app)
    from .teacher import cli as teacher_cli

    teacher_cli.register(app)


_register()
