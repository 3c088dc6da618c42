"""The one error type of ``annotate``: a message the CLI prints as a single line (no traceback)."""

from __future__ import annotations


class AnnotateError(Exception):
    """Wrong input, a refused resume, a missing optional dependency or a lost worker.

    Bad *documents* are never raised: they are counted and listed per shard (see ``shards.py``)."""
