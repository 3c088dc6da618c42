"""Cutting documents into model windows and merging the windows' span hits back into documents.

A doc is cut into overlapping windows of at most ``max_window_tokens`` words *and* at most the
encoder's subword budget (what the label prompts leave of it); consecutive windows overlap by at
least the model's maximum span width, so every candidate span lies whole inside some window. A
span seen in two windows is kept once, with its higher score. Pure functions of token lists and
tensors: the component calls them, the tests exercise them without a model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

# (first token, last token inclusive, label index) → score
SpanHits = dict[tuple[int, int, int], float]


@dataclass(frozen=True)
class Window:
    """One model input: the doc it came from, the doc token index of each word, and the words."""

    doc: int
    token_index: list[int]
    words: list[str]


def cut_windows(
    doc: int,
    token_index: Sequence[int],
    words: Sequence[str],
    *,
    max_words: int,
    stride: int,
    subword_budget: int,
    subword_count: Callable[[str], int],
) -> list[Window]:
    """Overlapping windows over one doc's words (see the module docstring)."""
    if not words:
        return []
    overlap = min(max_words - stride, max_words - 1)
    out: list[Window] = []
    start, n = 0, len(words)
    while True:
        end, used = start, 0
        while end < n and end - start < max_words:
            cost = max(1, subword_count(words[end]))
            if end > start and used + cost > subword_budget:
                break
            used += cost
            end += 1
        out.append(Window(doc, list(token_index[start:end]), list(words[start:end])))
        if end >= n:
            return out
        start = max(start + 1, min(start + stride, end - overlap))


def group_prompts(prompts: Sequence[str], cost: Callable[[list[str]], int], limit: int) -> list[tuple[int, list[str]]]:
    """Split the label prompts into consecutive groups whose prompt cost fits ``limit`` subwords.

    A uni-encoder model reads every prompt in front of every window; with many or long labels the
    prompts alone would fill the encoder, leaving windows of a word or silently cutting labels
    off. Each group is scored on its own (one more pass over the windows per group), so every
    label is scored and windows keep at least the subwords the prompts leave free. Returns
    ``(index of the group's first label, prompts)`` pairs. A single prompt that alone exceeds the
    limit cannot be scored at all and is an error naming it."""
    groups: list[tuple[int, list[str]]] = []
    current: list[str] = []
    start = 0
    for i, prompt in enumerate(prompts):
        if cost([prompt]) > limit:
            raise ValueError(
                f"The label prompt {prompt[:60]!r}{'...' if len(prompt) > 60 else ''} takes {cost([prompt])} subwords "
                f"alone, more than the {limit} the encoder leaves for prompts; shorten it"
            )
        if current and cost(current + [prompt]) > limit:
            groups.append((start, current))
            current, start = [], i
        current.append(prompt)
    if current:
        groups.append((start, current))
    return groups


def collect_hits(
    windows: Sequence[Window],
    probs: torch.Tensor,
    valid: torch.Tensor,
    threshold: float | torch.Tensor,
    found: list[SpanHits],
    label_offset: int = 0,
) -> None:
    """Add every span above ``threshold`` of a scored window batch to ``found[doc]`` (max score wins).

    ``probs`` is ``[B, L, K, C]`` and ``valid`` ``[B, L, K]``; one ``nonzero`` per batch, no
    Python loop over candidate spans. ``label_offset`` shifts label indices when the labels were
    scored in groups. ``threshold`` is one value or one per label of the batch (``[C]``)."""
    hits = (probs > threshold) & valid.unsqueeze(-1)
    where = hits.nonzero().tolist()
    values = probs[hits].tolist()
    for (wi, start, width, label), score in zip(where, values, strict=True):
        window = windows[wi]
        key = (window.token_index[start], window.token_index[start + width], label + label_offset)
        spans = found[window.doc]
        if score > spans.get(key, -1.0):
            spans[key] = score


def best_label_per_span(found: SpanHits) -> SpanHits:
    """One label per (start, end): the highest-scoring one."""
    best: dict[tuple[int, int], tuple[int, float]] = {}
    for (s, e, c), score in found.items():
        if (s, e) not in best or score > best[(s, e)][1]:
            best[(s, e)] = (c, score)
    return {(s, e, c): score for (s, e), (c, score) in best.items()}


def greedy_flat(items: Sequence[tuple[tuple[int, int, int], float]], n_tokens: int) -> list[int]:
    """Indices of a non-overlapping subset, highest score first (ties: earlier, shorter, lower label).

    This is how both the flat span group and ``doc.ents`` are chosen: by score, never by length."""
    order = sorted(range(len(items)), key=lambda i: (-items[i][1], items[i][0]))
    taken = [False] * n_tokens
    keep = []
    for i in order:
        (s, e, _), _score = items[i]
        if not any(taken[s : e + 1]):
            taken[s : e + 1] = [True] * (e + 1 - s)
            keep.append(i)
    return keep
