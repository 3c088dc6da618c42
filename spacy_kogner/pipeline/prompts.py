"""Output labels and the natural-language prompts the span model sees for them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


class KognerConfigError(ValueError):
    """A component setting that cannot work, with what to do instead."""


@dataclass(frozen=True)
class LabelSpec:
    """One output label and the natural-language prompt the model sees for it."""

    label: str
    prompt: str


def parse_labels(labels: Iterable[Any]) -> list[LabelSpec]:
    """Accept ``"Disease"``, ``{"label": "Disease", "prompt": "disease or syndrome"}`` or
    ``("Disease", "disease or syndrome")``; reject empty or duplicate labels."""
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Iterable):
        raise KognerConfigError(f"labels must be a list, got {labels!r}")
    specs: list[LabelSpec] = []
    for item in labels:
        if isinstance(item, str):
            label, prompt = item, item
        elif isinstance(item, dict):
            unknown = set(item) - {"label", "prompt"}
            if "label" not in item or unknown:
                raise KognerConfigError(f"A label dict needs 'label' (and optionally 'prompt'), got {item!r}")
            label = item["label"]
            prompt = item.get("prompt") or label
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            label, prompt = item
        else:
            raise KognerConfigError(f"Cannot read label {item!r}: use a string or {{'label': .., 'prompt': ..}}")
        if not isinstance(label, str) or not isinstance(prompt, str) or not label.strip() or not prompt.strip():
            raise KognerConfigError(f"Empty label or prompt in {item!r}")
        specs.append(LabelSpec(label.strip(), prompt.strip()))
    seen: set[str] = set()
    for spec in specs:
        if spec.label in seen:
            raise KognerConfigError(f"Duplicate label {spec.label!r}")
        seen.add(spec.label)
    if len({s.prompt for s in specs}) != len(specs):
        raise KognerConfigError(f"Two labels share one prompt: {[s.prompt for s in specs]}")
    return specs
