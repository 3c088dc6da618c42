"""The ``kogner.scorer.v1`` scorer: entity scores plus exact-span scores of the span group.

``spacy evaluate`` and ``nlp.evaluate`` call it through the component's ``score``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from spacy.pipeline.ner import ner_score
from spacy.scorer import Scorer
from spacy.training import Example
from spacy.util import registry

DEFAULT_SPANS_KEY = "kogner"


def kogner_score(examples: Iterable[Example], spans_key: str = DEFAULT_SPANS_KEY, **kwargs: Any) -> dict:
    """Entity scores (``ents_p/r/f``, ``ents_per_type``) plus exact-span scores of the span group."""
    examples = list(examples)
    scores = ner_score(examples, **kwargs)
    scores.update(
        Scorer.score_spans(
            examples,
            f"spans_{spans_key}",
            getter=lambda doc, _attr: doc.spans.get(spans_key, []),
            has_annotation=lambda doc: spans_key in doc.spans,
            allow_overlap=True,
        )
    )
    return scores


@registry.scorers("kogner.scorer.v1")
def make_kogner_scorer() -> Callable:
    return kogner_score
