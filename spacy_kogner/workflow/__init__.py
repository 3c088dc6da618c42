"""Workflow helpers behind ``project.yml``: assets from a mirror, profile slices, packaging, the
inference benchmark, and corpus-scale annotation (``annotate/``).

May import every other folder except ``cli``.
"""
