"""Training records and the order they are batched in.

A record is one sentence with its gold spans, their KG links and its corpus's label set (pooled
corpora keep negatives per corpus). The batch of a step is a pure function of (seed, step), so a
resumed run needs no data-loader state.

**Length buckets.** Each epoch's shuffled order is cut into chunks of ``bucket`` batches; inside a
chunk sentences are sorted by length and cut into batches, and the batches of the epoch are then
shuffled again. A batch therefore holds sentences of similar length (little padding: the span
head's cost grows with the padded length times the span width), while which sentences meet in a
batch and the order of batches stay random. ``bucket = 0`` is plain shuffling.

**Source balance.** A pooled corpus mixes sources of very different sizes (BC5CDR 4,560 training
sentences beside JNLPBA's 16,807), and a label learnt from one small source gets few steps of a
short budget. With ``balance = alpha < 1`` each epoch draws source s's share of sentences in
proportion to ``n_s ** alpha`` (1 = as the pool holds them, 0.5 = square-root "temperature"
sampling, 0 = every source alike): a small source's sentences repeat within the epoch (each once
before any twice), a large one's are a fresh random subset each epoch. The epoch keeps its length.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from ..config import ConfigError
from ..data.readers import corpus_label_sets, read_gliner_records

T = TypeVar("T")


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


class BatchPlan:
    """Which records make the batch of each step: a pure function of (seed, step)."""

    def __init__(
        self,
        lengths: list[int],
        batch_size: int,
        seed: int,
        bucket: int = 0,
        sources: list[str] | None = None,
        balance: float = 1.0,
    ) -> None:
        if not 0.0 <= balance <= 1.0:
            raise ConfigError(f"source balance must be in [0, 1], got {balance}")
        if sources is not None and len(sources) != len(lengths):
            raise ValueError(f"{len(sources)} sources for {len(lengths)} sentences")
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.bucket = bucket
        self.per_epoch = max(1, len(lengths) // batch_size)
        self.balance = balance
        self.names = sorted(set(sources or []))
        self.members = [np.flatnonzero(np.asarray(sources) == name) for name in self.names]
        # one source, or alpha = 1: every sentence once per epoch, exactly as without sources
        self.balanced = balance < 1.0 and len(self.names) > 1

    def shares(self) -> dict[str, int]:
        """Sentences each source contributes to an epoch (largest remainders make up the total)."""
        sizes = np.array([len(m) for m in self.members], dtype=float)
        if not self.balanced:
            return dict(zip(self.names, sizes.astype(int).tolist(), strict=True))
        n = len(self.lengths)
        exact = n * sizes**self.balance / (sizes**self.balance).sum()
        counts = np.floor(exact).astype(int)
        counts[np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]] += 1
        return dict(zip(self.names, counts.tolist(), strict=True))

    def _draw(self, epoch: int) -> np.ndarray:
        """This epoch's sentence indices, shuffled: each once, or each source's share of them."""
        rng = np.random.default_rng(self.seed + epoch)
        if not self.balanced:
            return rng.permutation(len(self.lengths))
        picked = []
        for group, count in zip(self.members, self.shares().values(), strict=True):
            reps = -(-count // len(group))
            tiled = np.concatenate([group[rng.permutation(len(group))] for _ in range(reps)])
            picked.append(tiled[:count])
        drawn = np.concatenate(picked)
        return drawn[rng.permutation(len(drawn))]

    def __call__(self, step: int) -> list[int]:
        epoch, offset = divmod(step, self.per_epoch)
        return self._epoch(epoch)[offset].tolist()

    @functools.lru_cache(maxsize=2)  # noqa: B019 - one plan object per run; epochs are reused step after step
    def _epoch(self, epoch: int) -> list[np.ndarray]:
        n, size = len(self.lengths), self.batch_size
        perm = self._draw(epoch)
        if self.bucket <= 1 or n <= size:
            return [perm[i * size : (i + 1) * size] for i in range(self.per_epoch)]
        used = perm[: self.per_epoch * size]
        chunk = size * self.bucket
        batches: list[np.ndarray] = []
        for start in range(0, len(used), chunk):
            idx = used[start : start + chunk]
            idx = idx[np.argsort(self.lengths[idx], kind="stable")]
            batches += [idx[i : i + size] for i in range(0, len(idx), size)]
        order = np.random.default_rng([self.seed, epoch, 1]).permutation(len(batches))
        return [batches[i] for i in order]


class Prefetcher:
    """Builds the next step's batch in a background thread while the current step runs.

    Collation (tokenising, span enumeration, padding) is Python work; on a GPU it sits on the
    critical path between two steps while the device idles. With ``enabled`` the batch of step
    ``n + 1`` is built while step ``n`` computes (torch releases the GIL inside its kernels). Batches
    are pure functions of the step (``make(step)``), so prefetching changes no result. ``wait``
    finishes the pending build before anything else uses the tokenizer (an evaluation), since a
    fast tokenizer must not be entered from two threads at once."""

    def __init__(self, make: Callable[[int], T], stop: int, enabled: bool) -> None:
        self.make, self.stop = make, stop
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kogner-batches") if enabled else None
        self.pending: tuple[int, Future[T]] | None = None

    def get(self, step: int) -> T:
        if self.pending is not None and self.pending[0] == step:
            batch = self.pending[1].result()
        else:
            self.wait()
            batch = self.make(step)
        self.pending = None
        if self.pool is not None and step + 1 < self.stop:
            self.pending = (step + 1, self.pool.submit(self.make, step + 1))
        return batch

    def wait(self) -> None:
        """Finish the build in flight (its result is kept for ``get``)."""
        if self.pending is not None:
            self.pending[1].exception()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        self.pending = None
