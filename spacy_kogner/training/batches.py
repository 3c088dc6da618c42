"""Training records and the order they are batched in.

A record is one sentence with its gold spans, their KG links and its corpus's label set (pooled
corpora keep negatives per corpus). The batch of a step is a pure function of (seed, step), so a
resumed run needs no data-loader state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import ConfigError
from ..data.readers import corpus_label_sets, read_gliner_records


@dataclass
class Record:
    """One training sentence: tokens, gold spans (inclusive ends), KG links, the corpus label set."""

    tokens: list[str]
    ner: list[tuple[int, int, str]]
    kge: list[str | None]
    labels: list[str]
    corpus: str


def read_records(path: str | Path, limit: int = 0) -> list[Record]:
    """Training-ready GLiNER JSON (see ``spacy_kogner.data.readers``) with per-corpus label sets.

    Read by the corpus reader, so a file that is not UTF-8, not JSON or holds a bad record fails
    with a ``CorpusFormatError`` naming the file, the line and the record index."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Training corpus not found: {path}")
    pairs = read_gliner_records(path, path.stem)
    seen_sets = corpus_label_sets(sent for _, sent in pairs)
    records = []
    for rec, sent in pairs:
        labels = list(rec.get("labels") or seen_sets.get(sent.corpus, []))
        records.append(
            Record(
                tokens=sent.tokens,
                ner=[(s.start, s.end - 1, s.label) for s in sent.spans],
                kge=[s.kge for s in sent.spans],
                labels=labels,
                corpus=sent.corpus,
            )
        )
    return records[:limit] if limit else records


def batch_order(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Indices of the examples of ``step``: a pure function of (seed, step), so resume needs no state."""
    per_epoch = max(1, n // batch_size)
    epoch, offset = divmod(step, per_epoch)
    perm = np.random.default_rng(seed + epoch).permutation(n)
    return perm[offset * batch_size : (offset + 1) * batch_size].tolist()
