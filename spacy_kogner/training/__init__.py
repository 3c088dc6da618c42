"""Training: the KoGNER distillation trainer and the spaCy baselines.

``distill`` (the loop) · ``batches`` (records and their order) · ``heads`` (MLP_span, MLP_dist,
L_dist) · ``checkpoint`` (safe, resumable state) · ``baseline`` (``spacy train`` wrappers).

May import: ``pipeline``, ``data``, ``teacher`` (its H store), ``evaluation.metrics``, ``config``,
``repro``, ``run_summary``.
"""
