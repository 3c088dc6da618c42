"""Workflow helpers behind ``project.yml``: assets from a mirror, profile slices, packaging and
the inference benchmark.

May import every other folder except ``cli``.
"""
