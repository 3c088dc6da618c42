"""The dense route's index: KG nodes projected into the distilled span space, and the projection
that brings a span vector there.

A linker index folder (what ``python -m spacy_kogner build-link-index`` writes and what a
``kogner_linker`` pipe carries in ``nlp.to_disk`` / ``spacy package``):

* ``nodes.tsv``: ``id<TAB>name<TAB>kind``, one line per node in row order (the dictionary's names too);
* ``vectors.npy``: float16 ``[M, shared]``, the L2-normalised projected teacher rows
  ``MLP_dist(H)`` (NumPy format, read with ``allow_pickle=False``);
* ``projector.safetensors``: ``MLP_span`` (residual), span vector → shared space;
* ``meta.json``: format tag, the fingerprint of the span model the projector was fit on, sizes,
  the NIL threshold tuned on dev, the label table (prompt and KG kinds per label), the dictionary
  settings and the build's metrics;
* ``synonyms.tsv`` (optional): extra ``id<TAB>name`` rows for the dictionary.

Nothing in it is code: a folder from elsewhere can give wrong links, never run anything.
Search is exact (one matrix product per kind group) up to ``exact_max_nodes`` candidate nodes and
approximate (usearch HNSW, an optional dependency) above: see the README for the measurement.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

INDEX_FORMAT = "kogner.linkindex.v1"
NODES_FILE = "nodes.tsv"
VECTORS_FILE = "vectors.npy"
PROJECTOR_FILE = "projector.safetensors"
META_FILE = "meta.json"
SYNONYMS_FILE = "synonyms.tsv"
INDEX_FILES = (NODES_FILE, VECTORS_FILE, PROJECTOR_FILE, META_FILE, SYNONYMS_FILE)


class LinkIndexError(ValueError):
    """A linker index that is missing, corrupt or does not belong to the model; names folder and file."""


def projection_mlp(inp: int, hidden: int, out: int, dropout: float) -> torch.nn.Sequential:
    """MLP_span / MLP_dist of the paper: Linear → GELU → Dropout → Linear."""
    return torch.nn.Sequential(
        torch.nn.Linear(inp, hidden), torch.nn.GELU(), torch.nn.Dropout(dropout), torch.nn.Linear(hidden, out)
    )


class SpanProjector(torch.nn.Module):
    """MLP_span with a residual on whitened vectors: ``w + MLP(w)``, ``w = (x - center) @ whiten``,
    the MLP's last layer starting at zero.

    GLiNER's span vectors are anisotropic: single words read alone have cosines of 0.98-0.9999
    with each other, so their ranking lives in the fifth decimal and is lost in a float16 index
    (measured, BC5CDR student, NCBI-disease + BC5CDR dev: centred only 59.9 % top-1, whitened
    80.3 %). The build fits ``center`` and ``whiten`` (PCA whitening) on its spans; training, if
    any, starts from that space and can only move from there as the loss asks."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.register_buffer("center", torch.zeros(dim))
        self.register_buffer("whiten", torch.eye(dim))
        self.mlp = projection_mlp(dim, hidden, dim, dropout)
        torch.nn.init.zeros_(self.mlp[3].weight)
        torch.nn.init.zeros_(self.mlp[3].bias)

    def fit_whitening(self, vectors: torch.Tensor, eps: float) -> None:
        """Centre on the mean and whiten with the covariance's eigenvectors; ``eps`` (relative to the
        largest eigenvalue) keeps near-empty directions from being blown up."""
        center = vectors.mean(0)
        values, vecs = torch.linalg.eigh(torch.cov((vectors - center).T.double()))
        self.center.copy_(center)
        self.whiten.copy_((vecs / torch.sqrt(values.clamp(min=0) + eps * values.max())).float())

    @property
    def dim(self) -> int:
        return int(self.mlp[0].in_features)

    @property
    def hidden(self) -> int:
        return int(self.mlp[0].out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.center) @ self.whiten
        return x + self.mlp(x)


@dataclass
class LinkIndex:
    """Nodes, their projected vectors, and the span projector, with the metadata that ties them to
    one span model."""

    node_ids: list[str]
    names: list[str]
    kinds: list[str]
    vectors: np.ndarray  # float16 [M, shared], rows L2-normalised
    projector: SpanProjector
    meta: dict[str, Any]
    synonyms: list[tuple[str, str]] = field(default_factory=list)
    exact_max_nodes: int = 200_000
    _groups: dict[tuple[str, ...], Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not (len(self.node_ids) == len(self.names) == len(self.kinds) == len(self.vectors)):
            raise LinkIndexError(
                f"linker index: {len(self.node_ids)} nodes but {len(self.vectors)} vectors; rebuild the index"
            )
        self.projector.eval()
        self._kind_rows: dict[str, np.ndarray] = {}
        kinds = np.asarray(self.kinds)
        for kind in dict.fromkeys(self.kinds):
            self._kind_rows[kind] = np.flatnonzero(kinds == kind)

    # ------------------------------------------------------------------------ properties
    @property
    def student(self) -> str:
        """Fingerprint of the span model whose vectors the projector reads."""
        return str(self.meta.get("student", ""))

    @property
    def span_dim(self) -> int:
        return self.projector.dim

    @property
    def threshold(self) -> float:
        return float(self.meta.get("threshold", 0.0))

    @property
    def labels(self) -> dict[str, dict[str, Any]]:
        """label → {"prompt": ..., "kg_kinds": [...]} as built."""
        return dict(self.meta.get("labels", {}))

    def nbytes(self) -> int:
        """Bytes the index holds in memory (vectors + projector weights)."""
        return int(self.vectors.nbytes + sum(p.numel() * p.element_size() for p in self.projector.parameters()))

    # ---------------------------------------------------------------------------- search
    @torch.inference_mode()
    def project(self, span_vectors: torch.Tensor) -> np.ndarray:
        """Span vectors ``[N, span_dim]`` → L2-normalised float32 ``[N, shared]``."""
        out = torch.nn.functional.normalize(self.projector(span_vectors.float()), dim=-1)
        return out.numpy()

    def _group(self, kinds: tuple[str, ...]) -> tuple[np.ndarray, Any, np.ndarray]:
        """Rows of the given kinds, their search structure (a float32 matrix or an ANN index) and
        each row's canonical row (``preferred_copies``: Hetionet has "Hypotension" as a Symptom
        and as a Side Effect; like the dictionary, the label's kind order decides)."""
        if kinds not in self._groups:
            rows = np.sort(np.concatenate([self._kind_rows.get(k, np.zeros(0, dtype=np.int64)) for k in kinds]))
            rank = {kind: i for i, kind in enumerate(kinds)}
            canonical = rows[preferred_copies([self.names[r] for r in rows], [self.kinds[r] for r in rows], rank)]
            if len(rows) > self.exact_max_nodes:
                self._groups[kinds] = (rows, _ann_index(self.vectors[rows]), canonical)
            else:
                self._groups[kinds] = (rows, self.vectors[rows].astype(np.float32), canonical)
        return self._groups[kinds]

    def canonical(self, row: int, kinds: Sequence[str]) -> int:
        """The node that stands for ``row``'s name among ``kinds`` (what ``search`` returns for it)."""
        rows, _, canonical = self._group(tuple(kinds))
        return int(canonical[int(np.searchsorted(rows, row))])

    def search(self, queries: np.ndarray, kinds: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` nodes among those of ``kinds`` for each normalised query: (rows ``[Q, k]``,
        cosine scores ``[Q, k]``), best first, one node per name (its kind-preferred copy); rows
        are -1 where fewer than ``k`` distinct names exist."""
        rows, structure, canonical = self._group(tuple(kinds))
        found, found_scores = _nearest(queries, structure, min(3 * k, len(rows)))
        out_rows = -np.ones((len(queries), k), dtype=np.int64)
        out_scores = np.full((len(queries), k), -1.0, dtype=np.float32)
        for qi in range(len(queries)):
            seen: list[int] = []
            for position, score in zip(found[qi], found_scores[qi], strict=True):
                c = int(canonical[position])
                if c in seen:
                    continue
                out_rows[qi, len(seen)], out_scores[qi, len(seen)] = c, score
                seen.append(c)
                if len(seen) == k:
                    break
        return out_rows, out_scores

    # ------------------------------------------------------------------------- save/load
    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / NODES_FILE, "w", encoding="utf8", newline="") as fh:
            for nid, name, kind in zip(self.node_ids, self.names, self.kinds, strict=True):
                fh.write(f"{_clean(nid)}\t{_clean(name)}\t{_clean(kind)}\n")
        np.save(folder / VECTORS_FILE, np.ascontiguousarray(self.vectors.astype(np.float16)), allow_pickle=False)
        save_file({k: v.contiguous() for k, v in self.projector.state_dict().items()}, str(folder / PROJECTOR_FILE))
        meta = {**self.meta, "format": INDEX_FORMAT, "nodes": len(self.node_ids)}
        meta["projector"] = {"span_dim": self.span_dim, "hidden": self.projector.hidden, "shared": self.span_dim}
        (folder / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf8")
        if self.synonyms:
            with open(folder / SYNONYMS_FILE, "w", encoding="utf8", newline="") as fh:
                fh.writelines(f"{_clean(nid)}\t{_clean(name)}\n" for nid, name in self.synonyms)

    @classmethod
    def load(cls, folder: str | Path, exact_max_nodes: int = 200_000) -> LinkIndex:
        """Read an index folder; anything missing, corrupt or inconsistent raises ``LinkIndexError``."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        for name in (NODES_FILE, VECTORS_FILE, PROJECTOR_FILE, META_FILE):
            if not (folder / name).is_file():
                raise LinkIndexError(f"linker index {folder}: {name} is missing; build it with build-link-index")
        try:
            meta = json.loads((folder / META_FILE).read_text(encoding="utf8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise LinkIndexError(f"linker index {folder / META_FILE}: not valid JSON ({err})") from None
        if not isinstance(meta, dict) or meta.get("format") != INDEX_FORMAT:
            raise LinkIndexError(f"linker index {folder / META_FILE}: not a {INDEX_FORMAT} index")
        node_ids, names, kinds = _read_nodes(folder / NODES_FILE)
        try:
            vectors = np.load(folder / VECTORS_FILE, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise LinkIndexError(f"linker index {folder / VECTORS_FILE}: unreadable ({err})") from None
        dims = meta.get("projector", {})
        try:
            projector = SpanProjector(int(dims["span_dim"]), int(dims["hidden"]), 0.0)
            projector.load_state_dict(load_file(str(folder / PROJECTOR_FILE)))
        except (KeyError, TypeError, ValueError, RuntimeError, SafetensorError) as err:
            raise LinkIndexError(f"linker index {folder / PROJECTOR_FILE}: does not match meta.json ({err})") from None
        if vectors.ndim != 2 or vectors.shape[1] != int(dims["shared"]):
            raise LinkIndexError(
                f"linker index {folder / VECTORS_FILE}: shape {vectors.shape}, expected [*, {dims['shared']}]"
            )
        synonyms: list[tuple[str, str]] = []
        if (folder / SYNONYMS_FILE).is_file():
            synonyms = [tuple(r[:2]) for r in _read_tsv(folder / SYNONYMS_FILE, 2)]  # type: ignore[misc]
        return cls(node_ids, names, kinds, vectors, projector, meta, synonyms, exact_max_nodes)


def _clean(text: str) -> str:
    return " ".join(str(text).split())


def _read_tsv(path: Path, columns: int) -> list[list[str]]:
    rows = []
    try:
        with open(path, encoding="utf8") as fh:
            for lineno, line in enumerate(fh, start=1):
                parts = line.rstrip("\n").split("\t")
                if len(parts) != columns:
                    raise LinkIndexError(f"{path}:{lineno}: expected {columns} tab-separated columns, got {len(parts)}")
                rows.append(parts)
    except UnicodeDecodeError as err:
        raise LinkIndexError(f"{path}: not UTF-8 ({err})") from None
    return rows


def _read_nodes(path: Path) -> tuple[list[str], list[str], list[str]]:
    rows = _read_tsv(path, 3)
    if not rows:
        raise LinkIndexError(f"{path}: no nodes")
    ids, names, kinds = (list(c) for c in zip(*rows, strict=True))
    return ids, names, kinds


def preferred_copies(names: Sequence[str], kinds: Sequence[str], rank: dict[str, int]) -> np.ndarray:
    """For each node, the position of the node that stands for its name: among nodes with the same
    case-folded name, the one whose kind ranks first (then the first position)."""
    first: dict[str, int] = {}
    keys = [" ".join(name.casefold().split()) for name in names]
    for i in sorted(range(len(keys)), key=lambda i: (rank[kinds[i]], i)):
        first.setdefault(keys[i], i)
    return np.array([first[key] for key in keys], dtype=np.int64)


def _nearest(queries: np.ndarray, structure: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``[Q, k]`` (into the group's rows) and cosines of each query's ``k`` nearest rows."""
    q = len(queries)
    if q == 0 or k == 0:
        return np.zeros((q, 0), dtype=np.int64), np.zeros((q, 0), dtype=np.float32)
    if isinstance(structure, np.ndarray):
        scores = queries.astype(np.float32) @ structure.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        return np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)
    found = structure.search(queries.astype(np.float16), k)
    keys = np.asarray(found.keys).reshape(q, -1)[:, :k].astype(np.int64)
    dist = np.asarray(found.distances).reshape(q, -1)[:, :k]
    return keys, (1.0 - dist).astype(np.float32)


def _ann_index(vectors: np.ndarray) -> Any:
    """An HNSW index (usearch, cosine, f16) over the rows; keys are row positions."""
    try:
        from usearch.index import Index
    except ImportError as err:  # pragma: no cover - depends on the optional extra
        raise LinkIndexError(
            f"{len(vectors)} candidate nodes need the approximate index: pip install 'spacy-kogner[ann]' "
            "(usearch), or raise exact_max_nodes to search exactly"
        ) from err
    index = Index(ndim=vectors.shape[1], metric="cos", dtype="f16")
    index.add(np.arange(len(vectors)), vectors.astype(np.float16))
    return index
