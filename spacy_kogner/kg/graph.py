"""The knowledge graph G = (V, E) the teacher is built from, read from plain tables.

Everything downstream (Z, Z', Z'', the H store, span linking) addresses nodes by *row*: row i of
every matrix belongs to ``node_ids[i]``. This module is the single place where that order is fixed,
so a KG read twice from the same files gives the same rows.

Edge policy (decided here once, so the GNN and TransR see the same facts):

* **Duplicates** (same source, relation, target) are dropped; the first occurrence is kept.
* **Inverse edges of symmetric relations** (e.g. Hetionet's ``GiG`` "Gene interacts Gene") are
  folded: ``(b, r, a)`` becomes ``(a, r, b)`` with ``a`` the smaller row, then de-duplicated. An
  undirected fact stored in both directions would otherwise leak a TransR test triple through its
  mirror image in the training split. Directed relations keep their direction; no inverse edges
  are *added* to the KG. (The GNN makes its own message passing undirected, see ``gnn.py``.)
* **Self-loops** are kept by default (they are facts, e.g. a gene regulating itself); set
  ``drop_self_loops`` to remove them.
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import read_section, require
from ..textio import open_text, where_not_utf8

PathLike = str | Path

HETIONET_NODE_COLUMNS = ("id", "name", "kind")
HETIONET_EDGE_COLUMNS = ("source", "metaedge", "target")
# Hetionet metaedge abbreviations: source kind letters, lowercase verb letters, target kind letters;
# a '>' marks a directed same-kind relation (``Gr>G``). Same kind on both sides without '>' means
# the relation is undirected.
_DIRECTED_MARK = ">"


class KGError(ValueError):
    """A KG table that cannot be read, with the file (and line) that caused it."""


def _infer_sep(path: Path) -> str:
    """Comma for ``.csv`` (also ``.csv.gz``), tab for everything else (TSV, SIF)."""
    suffixes = [s.lower() for s in path.suffixes]
    return "," if ".csv" in suffixes else "\t"


def _read_table(path: PathLike, columns: Sequence[str], sep: str | None) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, [values of columns])`` for each data row of a delimited table.

    Errors name the file and line: a missing file, an empty file, a missing column, a short row,
    a file that is not UTF-8 (a leading BOM is dropped, so it never sticks to the first column name).
    """
    path = Path(path)
    if not path.exists():
        raise KGError(f"KG file not found: {path}")
    try:
        yield from _read_rows(path, columns, sep or _infer_sep(path))
    except UnicodeDecodeError as err:
        line, message = where_not_utf8(path, err)
        raise KGError(f"{path}:{line}: {message}" if line else f"{path}: {message}") from None


def _read_rows(path: Path, columns: Sequence[str], sep: str) -> Iterator[tuple[int, list[str]]]:
    with open_text(path, newline="") as handle:
        quoting = csv.QUOTE_MINIMAL if sep == "," else csv.QUOTE_NONE
        reader = csv.reader(handle, delimiter=sep, quoting=quoting)
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise KGError(f"{path}: empty file (expected a header line with columns {list(columns)})")
        header = [h.strip() for h in header]
        missing = [c for c in columns if c not in header]
        if missing:
            raise KGError(f"{path}:1: missing column(s) {missing}; header has {header}")
        positions = [header.index(c) for c in columns]
        width = max(positions) + 1
        n_rows = 0
        for line_no, row in enumerate(reader, start=2):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) < width:
                raise KGError(f"{path}:{line_no}: expected at least {width} fields, got {len(row)}: {row!r}")
            n_rows += 1
            yield line_no, [row[p] for p in positions]
        if n_rows == 0:
            raise KGError(f"{path}: empty file (a header but no data rows)")


@dataclass
class KnowledgeGraph:
    """Nodes (id, name, kind) and typed directed edges, in a fixed row order.

    ``edge_index[:, j] = (source_row, target_row)`` and ``edge_type[j]`` indexes ``relations``.
    ``stats`` records what the edge policy removed (see the module docstring).
    """

    node_ids: list[str]
    names: list[str]
    kinds: list[str]
    edge_index: np.ndarray
    edge_type: np.ndarray
    relations: list[str]
    index: dict[str, int] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.index:
            self.index = {node_id: row for row, node_id in enumerate(self.node_ids)}
        self.edge_index = np.asarray(self.edge_index, dtype=np.int64).reshape(2, -1)
        self.edge_type = np.asarray(self.edge_type, dtype=np.int64).reshape(-1)

    @property
    def num_nodes(self) -> int:
        return len(self.node_ids)

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    @property
    def kind_names(self) -> list[str]:
        """Distinct node kinds in sorted order: the GNN's class list."""
        return sorted(set(self.kinds))

    def kind_labels(self) -> np.ndarray:
        """Each node's kind as an index into ``kind_names`` (int64 [M])."""
        lookup = {kind: i for i, kind in enumerate(self.kind_names)}
        return np.array([lookup[k] for k in self.kinds], dtype=np.int64)

    def triples(self) -> np.ndarray:
        """``(head_row, relation, tail_row)`` as int64 [E, 3], the TransR input."""
        return np.stack([self.edge_index[0], self.edge_type, self.edge_index[1]], axis=1)

    def degree(self) -> np.ndarray:
        """Undirected degree of each node (both endpoints of every edge count)."""
        return np.bincount(self.edge_index.reshape(-1), minlength=self.num_nodes)

    def fingerprint(self) -> str:
        """Hash of the graph's content (nodes in row order and edges): the cache key of every stage."""
        digest = hashlib.sha256()
        for values in (self.node_ids, self.names, self.kinds, self.relations):
            digest.update("\x1f".join(values).encode("utf-8"))
            digest.update(b"\x1e")
        digest.update(np.ascontiguousarray(self.edge_index).tobytes())
        digest.update(np.ascontiguousarray(self.edge_type).tobytes())
        return digest.hexdigest()

    def node_fingerprint(self) -> str:
        """Hash of the node table only (ids, names, kinds): the cache key of the text features Z."""
        digest = hashlib.sha256()
        for values in (self.node_ids, self.names, self.kinds):
            digest.update("\x1f".join(values).encode("utf-8"))
            digest.update(b"\x1e")
        return digest.hexdigest()

    # ------------------------------------------------------------------ readers

    @classmethod
    def from_hetionet(
        cls,
        nodes_path: PathLike,
        edge_paths: PathLike | Sequence[PathLike],
        *,
        drop_self_loops: bool = False,
        nodes_only: bool = False,
    ) -> KnowledgeGraph:
        """Read Hetionet's nodes TSV (``id name kind``) and one or more SIF edge files.

        The SIF files may be plain or ``.gz``: the upstream complete file or the mirror's partial
        files, read together. Symmetric metaedges are detected from the abbreviation (same kind on
        both ends, no ``>``).
        """
        id_col, name_col, kind_col = HETIONET_NODE_COLUMNS
        src_col, rel_col, dst_col = HETIONET_EDGE_COLUMNS
        return cls.from_tables(
            nodes_path,
            edge_paths,
            id_col=id_col,
            name_col=name_col,
            kind_col=kind_col,
            source_col=src_col,
            target_col=dst_col,
            relation_col=rel_col,
            sep="\t",
            symmetric_relations=_hetionet_symmetric,
            drop_self_loops=drop_self_loops,
            nodes_only=nodes_only,
        )

    @classmethod
    def from_tables(
        cls,
        nodes_path: PathLike,
        edges_path: PathLike | Sequence[PathLike],
        *,
        id_col: str,
        name_col: str,
        kind_col: str,
        source_col: str,
        target_col: str,
        relation_col: str,
        sep: str | None = None,
        symmetric_relations: Iterable[str] | Any = (),
        drop_self_loops: bool = False,
        nodes_only: bool = False,
    ) -> KnowledgeGraph:
        """Read any KG given as a node table and one or more edge tables with named columns.

        ``sep=None`` infers the delimiter from the file name (``.csv`` → comma, else tab).
        ``symmetric_relations`` is a collection of relation names, or a predicate on the name, whose
        edges are undirected (their mirror images are folded, see the module docstring).
        """
        node_ids: list[str] = []
        names: list[str] = []
        kinds: list[str] = []
        index: dict[str, int] = {}
        first_line: dict[str, int] = {}
        nodes_path = Path(nodes_path)
        for line_no, (node_id, name, kind) in _read_table(nodes_path, (id_col, name_col, kind_col), sep):
            node_id = node_id.strip()
            if not node_id:
                raise KGError(f"{nodes_path}:{line_no}: empty node id in column '{id_col}'")
            if node_id in index:
                raise KGError(
                    f"{nodes_path}:{line_no}: duplicate node id '{node_id}' (first seen on line {first_line[node_id]})"
                )
            index[node_id] = len(node_ids)
            first_line[node_id] = line_no
            node_ids.append(node_id)
            names.append(name.strip())
            kinds.append(kind.strip())

        if isinstance(edges_path, str | Path):
            edges_path = [edges_path]
        edge_files = [Path(p) for p in edges_path]
        if nodes_only:
            edge_files = []
        elif not edge_files:
            raise KGError("No edge files given")
        if callable(symmetric_relations):
            is_symmetric = symmetric_relations
        else:
            is_symmetric = set(symmetric_relations).__contains__
        relation_ids: dict[str, int] = {}
        heads: list[int] = []
        rels: list[int] = []
        tails: list[int] = []
        for path in edge_files:
            for line_no, (src, rel, dst) in _read_table(path, (source_col, relation_col, target_col), sep):
                src, rel, dst = src.strip(), rel.strip(), dst.strip()
                head = index.get(src)
                tail = index.get(dst)
                if head is None or tail is None:
                    missing = src if head is None else dst
                    raise KGError(f"{path}:{line_no}: edge to unknown node '{missing}' (not in {nodes_path})")
                if not rel:
                    raise KGError(f"{path}:{line_no}: empty relation in column '{relation_col}'")
                rel_id = relation_ids.setdefault(rel, len(relation_ids))
                heads.append(head)
                rels.append(rel_id)
                tails.append(tail)

        relations = list(relation_ids)
        h = np.asarray(heads, dtype=np.int64)
        r = np.asarray(rels, dtype=np.int64)
        t = np.asarray(tails, dtype=np.int64)
        stats = {"edges_read": int(h.size)}
        symmetric = np.array([bool(is_symmetric(name)) for name in relations] or [False], dtype=bool)
        fold = symmetric[r] & (h > t) if h.size else np.zeros(0, dtype=bool)
        h[fold], t[fold] = t[fold], h[fold].copy()
        stats["symmetric_relations"] = int(symmetric[: len(relations)].sum())
        stats["mirror_edges_folded"] = int(fold.sum())
        if drop_self_loops:
            keep = h != t
            stats["self_loops_dropped"] = int((~keep).sum())
            h, r, t = h[keep], r[keep], t[keep]
        stats["self_loops_kept"] = int((h == t).sum())
        n, n_rel = max(len(node_ids), 1), max(len(relations), 1)
        key = (h * n_rel + r) * n + t
        _, first = np.unique(key, return_index=True)
        first.sort()
        stats["duplicate_edges_dropped"] = int(h.size - first.size)
        h, r, t = h[first], r[first], t[first]
        return cls(
            node_ids=node_ids,
            names=names,
            kinds=kinds,
            edge_index=np.stack([h, t]),
            edge_type=r,
            relations=relations,
            index=index,
            sources=[str(nodes_path)] + [str(p) for p in edge_files],
            stats=stats,
        )

    # ------------------------------------------------------------------ summary

    def summary(self) -> dict[str, Any]:
        """Counts by kind and relation, isolated nodes, largest connected component share."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        degree = self.degree()
        isolated = degree == 0
        isolated_by_kind = Counter(k for k, iso in zip(self.kinds, isolated, strict=True) if iso)
        m = self.num_nodes
        adjacency = coo_matrix(
            (np.ones(self.num_edges, dtype=np.int8), (self.edge_index[0], self.edge_index[1])), shape=(m, m)
        )
        n_comp, labels = connected_components(adjacency, directed=False)
        largest = int(np.bincount(labels).max()) if m else 0
        rel_counts = np.bincount(self.edge_type, minlength=len(self.relations))
        return {
            "nodes": m,
            "edges": self.num_edges,
            "nodes_by_kind": dict(Counter(self.kinds).most_common()),
            "edges_by_relation": {rel: int(c) for rel, c in zip(self.relations, rel_counts, strict=True)},
            "isolated_nodes": int(isolated.sum()),
            "isolated_by_kind": dict(isolated_by_kind.most_common()),
            "connected_components": int(n_comp),
            "largest_component_share": largest / m if m else 0.0,
            "edge_policy": dict(self.stats),
        }


def _hetionet_symmetric(metaedge: str) -> bool:
    """True for undirected same-kind Hetionet metaedges (``GiG``, ``CrC``), false for ``Gr>G``."""
    if _DIRECTED_MARK in metaedge:
        return False
    lower = [i for i, ch in enumerate(metaedge) if ch.islower()]
    if not lower:
        return False
    return metaedge[: lower[0]] == metaedge[lower[-1] + 1 :]


TABLE_COLUMN_KEYS = ("id_col", "name_col", "kind_col", "source_col", "target_col", "relation_col")
KG_FORMATS = ("hetionet", "tables")


@dataclass
class KGSettings:
    """The ``[kg]`` section: which tables make the graph and how to read them.

    ``format = "hetionet"`` needs ``nodes`` and ``edges`` (a path or a list of paths);
    ``format = "tables"`` also needs the six ``*_col`` names and may set ``sep`` and
    ``symmetric_relations``."""

    nodes: str
    edges: Any
    format: str = "hetionet"
    id_col: str = ""
    name_col: str = ""
    kind_col: str = ""
    source_col: str = ""
    target_col: str = ""
    relation_col: str = ""
    sep: str = ""
    symmetric_relations: list[str] = field(default_factory=list)
    drop_self_loops: bool = False

    def __post_init__(self) -> None:
        require(self.format in KG_FORMATS, f"[kg] format must be one of {KG_FORMATS}, got {self.format!r}")
        require(bool(self.nodes), "[kg] needs 'nodes'")
        require(bool(self.edges), "[kg] needs 'edges'")
        if isinstance(self.edges, (str, Path)):
            self.edges = [str(self.edges)]
        require(
            isinstance(self.edges, list) and all(isinstance(e, (str, Path)) for e in self.edges),
            f"[kg] edges must be a path or a list of paths, got {self.edges!r}",
        )
        if self.format == "tables":
            missing = [k for k in TABLE_COLUMN_KEYS if not getattr(self, k)]
            require(not missing, f"[kg] format 'tables' needs column names {missing}")


def load_kg(cfg_section: dict[str, Any] | KGSettings, nodes_only: bool = False) -> KnowledgeGraph:
    """Build a KG from a ``[kg]`` config section (see ``KGSettings``); ``nodes_only`` reads the node
    table and no edge (what name matching needs: the silver matcher's nodes, in seconds)."""
    kg = cfg_section if isinstance(cfg_section, KGSettings) else read_section(KGSettings, dict(cfg_section), "kg")
    if kg.format == "hetionet":
        return KnowledgeGraph.from_hetionet(
            kg.nodes, kg.edges, drop_self_loops=kg.drop_self_loops, nodes_only=nodes_only
        )
    return KnowledgeGraph.from_tables(
        kg.nodes,
        kg.edges,
        **{k: getattr(kg, k) for k in TABLE_COLUMN_KEYS},
        sep=kg.sep or None,
        symmetric_relations=list(kg.symmetric_relations),
        drop_self_loops=kg.drop_self_loops,
        nodes_only=nodes_only,
    )
