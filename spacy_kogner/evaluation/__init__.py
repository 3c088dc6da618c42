"""Evaluation: span metrics, the harness that scores any pipeline on any corpus, and reports.

``metrics`` (exact and relaxed P/R/F1) · ``harness`` (predict, evaluate, suites) · ``report``
(results.json/.md/.png beside the paper's Table 2).

May import: ``data``, ``config``, ``run_summary`` (a run's ``metrics.json``).
"""
