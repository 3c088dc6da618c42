"""The H store: H = [Z, Z', Z''] ∈ R^{M×r} on disk, and a memory-mapping loader.

Layout of a store folder (what ``python -m spacy_kogner teacher`` writes):

* ``H.npy``: float32 [M, r], NumPy format, so ``np.load(mmap_mode="r")`` maps it without
  reading it (the distillation loop touches only the rows of linked spans).
* ``index.tsv``: ``row id name kind``, one line per node in row order.
* ``meta.json``: block dimensions and their column ranges, the KG files' hashes, encoder, seeds,
  and the teacher metrics.
"""

from __future__ import annotations

import csv
import json
import re
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

from ..textio import open_text, where_not_utf8

H_FILE = "H.npy"
INDEX_FILE = "index.tsv"
META_FILE = "meta.json"
INDEX_COLUMNS = ("row", "id", "name", "kind")
_SPACES = re.compile(r"\s+")


class StoreError(FileNotFoundError):
    """A store folder that is missing, incomplete or inconsistent; names folder and file."""


def teacher_kg_section(folder: str | Path) -> dict[str, Any]:
    """The ``[kg]`` config section a teacher store was built from (its ``meta.json``): linking and
    silver matching read the same graph as the teacher rows H they are distilled against."""
    path = Path(folder) / META_FILE
    if not path.is_file():
        raise StoreError(f"Teacher store {folder}: {META_FILE} not found (build it with `teacher` first)")
    return json.loads(path.read_text(encoding="utf-8"))["config"]["kg"]


def normalise_name(name: str) -> str:
    """The key of name lookups: Unicode NFKC, case-folded, whitespace collapsed, trimmed."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", name).casefold()).strip()


def block_layout(dims: dict[str, int]) -> dict[str, list[int]]:
    """Column range ``[start, stop)`` of each block of H, in order Z, Z', Z''."""
    layout, start = {}, 0
    for name, dim in dims.items():
        layout[name] = [start, start + int(dim)]
        start += int(dim)
    return layout


def write_store(
    folder: str | Path,
    blocks: dict[str, np.ndarray],
    node_ids: list[str],
    names: list[str],
    kinds: list[str],
    meta: dict[str, Any],
) -> Path:
    """Concatenate the blocks into H and write H.npy, index.tsv and meta.json into ``folder``.

    Files are written under temporary names and renamed, so a crash never leaves a store that
    looks complete but is not.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    m = len(node_ids)
    for name, block in blocks.items():
        if block.shape[0] != m:
            raise ValueError(f"Block {name} has {block.shape[0]} rows, the KG has {m} nodes")
    h = np.concatenate([np.asarray(b, dtype=np.float32) for b in blocks.values()], axis=1)
    dims = {name: int(b.shape[1]) for name, b in blocks.items()}
    tmp = folder / (H_FILE + ".tmp.npy")
    np.save(tmp, h)
    tmp.replace(folder / H_FILE)
    tmp_index = folder / (INDEX_FILE + ".tmp")
    with open(tmp_index, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        writer.writerow(INDEX_COLUMNS)
        for row, (node_id, name, kind) in enumerate(zip(node_ids, names, kinds, strict=True)):
            writer.writerow((row, node_id, name, kind))
    tmp_index.replace(folder / INDEX_FILE)
    full_meta = dict(meta)
    full_meta.update(
        {
            "shape": [int(h.shape[0]), int(h.shape[1])],
            "dtype": "float32",
            "dims": dims,
            "block_order": list(dims),
            "blocks": block_layout(dims),
            "files": {"H": H_FILE, "index": INDEX_FILE},
        }
    )
    tmp_meta = folder / (META_FILE + ".tmp")
    # Not sort_keys: "dims" keeps block order Z, Z', Z'' (also spelled out in "block_order").
    tmp_meta.write_text(json.dumps(full_meta, indent=2), encoding="utf-8")
    tmp_meta.replace(folder / META_FILE)
    return folder


def _read_index(path: Path) -> tuple[list[str], list[str], list[str]]:
    """``index.tsv``: rows in order and every node id once. A duplicate id would make the later
    row silently win every lookup (``row_of``), so it is an error naming both lines."""
    node_ids: list[str] = []
    names: list[str] = []
    kinds: list[str] = []
    first_line: dict[str, int] = {}
    folder = path.parent
    with open_text(path, newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        if header is None or tuple(header) != INDEX_COLUMNS:
            raise StoreError(f"Teacher store {folder}: {INDEX_FILE} must start with {list(INDEX_COLUMNS)}")
        for line_no, row in enumerate(reader, start=2):
            if len(row) != len(INDEX_COLUMNS) or row[0] != str(len(node_ids)):
                raise StoreError(f"Teacher store {folder}: {INDEX_FILE}:{line_no} is malformed: {row!r}")
            node_id = row[1]
            if node_id in first_line:
                raise StoreError(
                    f"{path}:{line_no}: duplicate node id {node_id!r} (first on line {first_line[node_id]}); "
                    "each node has one row of H"
                )
            first_line[node_id] = line_no
            node_ids.append(node_id)
            names.append(row[2])
            kinds.append(row[3])
    return node_ids, names, kinds


class HStore:
    """A read-only view of a teacher output folder: H memory-mapped, plus id and name lookups."""

    def __init__(
        self,
        folder: Path,
        H: np.ndarray,
        node_ids: list[str],
        names: list[str],
        kinds: list[str],
        meta: dict[str, Any],
    ) -> None:
        self.folder = folder
        self.H = H
        self.node_ids = node_ids
        self.names = names
        self.kinds = kinds
        self.meta = meta
        self.index = {node_id: row for row, node_id in enumerate(node_ids)}
        self._by_name: dict[str, list[int]] = {}
        for row, name in enumerate(names):
            self._by_name.setdefault(normalise_name(name), []).append(row)

    @classmethod
    def load(cls, folder: str | Path) -> HStore:
        """Open a store folder; H is memory-mapped (nothing is read until rows are used)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise StoreError(f"Teacher store folder not found: {folder}")
        for name in (H_FILE, INDEX_FILE, META_FILE):
            if not (folder / name).is_file():
                raise StoreError(f"Teacher store {folder} is incomplete: missing {name}")
        try:
            meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise StoreError(f"Teacher store {folder}: {META_FILE} is not valid JSON ({err})") from err
        try:
            H = np.load(folder / H_FILE, mmap_mode="r")
        except (ValueError, OSError) as err:
            raise StoreError(f"Teacher store {folder}: cannot read {H_FILE} ({err})") from err
        index_path = folder / INDEX_FILE
        try:
            node_ids, names, kinds = _read_index(index_path)
        except UnicodeDecodeError as err:
            line, message = where_not_utf8(index_path, err)
            raise StoreError(f"{index_path}:{line}: {message}" if line else f"{index_path}: {message}") from None
        if H.ndim != 2 or H.shape[0] != len(node_ids) or H.dtype != np.float32:
            raise StoreError(
                f"Teacher store {folder}: {H_FILE} has shape {H.shape} {H.dtype}, "
                f"expected float32 [{len(node_ids)}, r] to match {INDEX_FILE}"
            )
        if list(meta.get("shape", H.shape)) != list(H.shape):
            raise StoreError(f"Teacher store {folder}: {META_FILE} shape {meta.get('shape')} != {H_FILE} {H.shape}")
        return cls(folder, H, node_ids, names, kinds, meta)

    @property
    def dim(self) -> int:
        """r, the width of H."""
        return int(self.H.shape[1])

    def __len__(self) -> int:
        return len(self.node_ids)

    def row_of(self, node_id: str) -> int | None:
        """Row of a node id, or None for an id the KG does not have."""
        return self.index.get(node_id)

    def lookup_name(self, name: str) -> list[int]:
        """Rows whose name equals ``name`` after ``normalise_name`` (several nodes may share one)."""
        return list(self._by_name.get(normalise_name(name), []))

    def block(self, name: str) -> np.ndarray:
        """One block of H by name (``"Z"``, ``"Z_prime"``, ``"Z_double_prime"``), as a view."""
        start, stop = self.meta["blocks"][name]
        return self.H[:, start:stop]

    def rows(self, rows: list[int] | np.ndarray) -> np.ndarray:
        """Rows of H copied into memory (float32 [len(rows), r])."""
        return np.asarray(self.H[np.asarray(rows, dtype=np.int64)], dtype=np.float32)
