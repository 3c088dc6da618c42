"""Span metrics: exact and relaxed (overlap) micro P/R/F1, overall and per label.

* **Exact** matching: a predicted span counts only if its start, end and label equal a gold
  span's. This is the paper's metric and every headline number.
* **Relaxed** (overlap) matching, reported separately: a prediction is correct if it overlaps a
  gold span of the same label, a gold span is found if some prediction of its label overlaps it
  (GLiNER-BioMed reports only this; it flatters boundary errors, so it never replaces exact).

Spans are ``(sentence index, start, end exclusive, label)`` tuples. Imports nothing else from
the package.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# (sentence index, start, end exclusive, label)
SpanKey = tuple[int, int, int, str]


@dataclass
class Counts:
    """True/false positives and false negatives of one label (or of all labels)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, other: Counts) -> None:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn

    def as_dict(self) -> dict[str, float | int]:
        """P/R/F1 as percentages plus the raw counts (so results can be re-aggregated)."""
        p = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        r = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        return {"p": 100 * p, "r": 100 * r, "f": 100 * f, "tp": self.tp, "fp": self.fp, "fn": self.fn}


@dataclass
class Scores:
    """Micro scores over all labels and the per-label breakdown."""

    total: Counts = field(default_factory=Counts)
    per_label: dict[str, Counts] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.total.as_dict())
        out["per_label"] = {k: v.as_dict() for k, v in sorted(self.per_label.items())}
        return out


def _by_label(spans: Iterable[SpanKey]) -> dict[str, list[SpanKey]]:
    out: dict[str, list[SpanKey]] = {}
    for span in spans:
        out.setdefault(span[3], []).append(span)
    return out


def exact_scores(gold: Iterable[SpanKey], pred: Iterable[SpanKey], labels: Sequence[str] = ()) -> Scores:
    """Exact-span micro P/R/F1: a prediction is right only if boundaries and label all agree."""
    gold_set, pred_set = set(gold), set(pred)
    gold_by, pred_by = _by_label(gold_set), _by_label(pred_set)
    scores = Scores()
    for label in sorted(set(labels) | set(gold_by) | set(pred_by)):
        g, p = set(gold_by.get(label, [])), set(pred_by.get(label, []))
        counts = Counts(tp=len(g & p), fp=len(p - g), fn=len(g - p))
        scores.per_label[label] = counts
        scores.total.add(counts)
    return scores


def _relaxed_counts(n_pred: int, good_pred: int, n_gold: int, found_gold: int) -> dict[str, float | int]:
    p = good_pred / n_pred if n_pred else 0.0
    r = found_gold / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {
        "p": 100 * p,
        "r": 100 * r,
        "f": 100 * f,
        "matched_pred": good_pred,
        "fp": n_pred - good_pred,
        "matched_gold": found_gold,
        "fn": n_gold - found_gold,
    }


def relaxed_scores(gold: Iterable[SpanKey], pred: Iterable[SpanKey], labels: Sequence[str] = ()) -> dict[str, Any]:
    """Overlap matching, micro over labels and per label.

    Precision counts predictions that overlap a same-label gold span; recall counts gold spans
    overlapped by a same-label prediction. The two sides need not pair one-to-one (one long
    prediction may cover two gold spans), which is why both matched counts are reported.
    """
    gold_by, pred_by = _by_label(set(gold)), _by_label(set(pred))

    def overlaps(a: SpanKey, others: list[SpanKey]) -> bool:
        return any(a[1] < b[2] and b[1] < a[2] for b in others)

    def by_sent(spans: list[SpanKey]) -> dict[int, list[SpanKey]]:
        out: dict[int, list[SpanKey]] = {}
        for span in spans:
            out.setdefault(span[0], []).append(span)
        return out

    totals = [0, 0, 0, 0]
    per_label = {}
    for label in sorted(set(labels) | set(gold_by) | set(pred_by)):
        g, p = gold_by.get(label, []), pred_by.get(label, [])
        g_sent, p_sent = by_sent(g), by_sent(p)
        parts = [
            len(p),
            sum(overlaps(x, g_sent.get(x[0], [])) for x in p),
            len(g),
            sum(overlaps(x, p_sent.get(x[0], [])) for x in g),
        ]
        per_label[label] = _relaxed_counts(*parts)
        totals = [a + b for a, b in zip(totals, parts, strict=True)]
    out: dict[str, Any] = dict(_relaxed_counts(*totals))
    out["per_label"] = per_label
    return out
