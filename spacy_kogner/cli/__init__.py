"""``python -m spacy_kogner``: one typer app (``app.py``), one module per command group.

May import every other folder of the package (lazily, inside commands, so ``--help`` is fast).
"""

from . import annotate, data, evaluation, pipeline, teacher, training, workflow  # noqa: F401  (register commands)
from .app import app

__all__ = ["app"]
