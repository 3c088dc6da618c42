"""Profile-sized views of the assets: the data every later workflow step reads.

Why a step of its own: a profile (smoke, quick, paper) must change *how much* data the workflow
touches without each command growing its own size options, and the pristine, checksummed assets
must stay untouched. ``python -m spacy_kogner slice-data configs/slices.cfg ASSETS OUT --profile NAME``
writes ``OUT/ner/<corpus>/<split>.tsv`` and ``OUT/kg/hetionet/*`` that later steps read:

* a size of 0 means "all": the file is symlinked, so the quick and paper profiles cost nothing;
* IOB corpora keep their first N sentences per split (whole sentences, ``-DOCSTART-`` lines kept,
  deterministic, so the slice is a prefix of the real corpus in document order);
* edge files keep about N edges of a *dense* subgraph: the edges among the file's highest-degree
  nodes (doubling their number until enough edges fall among them), then spread evenly over that
  set (files are sorted by metaedge, so a prefix would hold one edge type only). Dense matters:
  an even sample of a big graph is almost all degree-1 nodes, and TransR's seeded split needs
  every entity in its training triples; the node table keeps every node the edges touch plus all
  nodes of the kinds listed in ``keep_kinds`` (the KG reader rejects edges to unknown nodes).
"""

from __future__ import annotations

import gzip
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import load_config, read_section


@dataclass
class SliceSettings:
    """``[slice]`` of ``configs/slices.cfg``: how much of each asset a profile reads (0 = all)."""

    corpora: list[str]
    splits: list[str]
    max_sentences: int
    max_edges: int
    keep_kinds: list[str]
    kg_files: list[str]


def _link_or_copy(source: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink() or dest.exists():
        dest.unlink()
    os.symlink(source.resolve(), dest)


def slice_iob(source: Path, dest: Path, max_sentences: int) -> int:
    """Copy the first ``max_sentences`` sentences of an IOB file (all when 0); returns the count."""
    if max_sentences <= 0:
        _link_or_copy(source, dest)
        return -1
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink():
        dest.unlink()
    n, in_sentence = 0, False
    with source.open(encoding="utf8") as src, dest.open("w", encoding="utf8") as out:
        for line in src:
            stripped = line.strip()
            if not stripped:
                if in_sentence:
                    n += 1
                    in_sentence = False
                    out.write("\n")
                    if n >= max_sentences:
                        break
                continue
            if stripped.startswith("-DOCSTART-"):
                out.write(line if line.endswith("\n") else line + "\n")
                out.write("\n")
                continue
            in_sentence = True
            out.write(line if line.endswith("\n") else line + "\n")
        if in_sentence:
            out.write("\n")
            n += 1
    return n


def _open_text(path: Path, mode: str = "rt") -> Any:
    return gzip.open(path, mode, encoding="utf8") if path.suffix == ".gz" else path.open(mode, encoding="utf8")


def dense_edges(rows: list[str], target: int) -> list[str]:
    """About ``target`` SIF rows among the highest-degree nodes, spread evenly (see module doc)."""
    ends = [(r.split("\t")[0], r.split("\t")[-1]) for r in rows]
    degree: Counter[str] = Counter(n for pair in ends for n in pair)
    ranked = [n for n, _ in degree.most_common()]
    k = 2
    while True:
        keep = set(ranked[:k])
        induced = [r for r, (a, b) in zip(rows, ends, strict=True) if a in keep and b in keep]
        if len(induced) >= target or k >= len(ranked):
            break
        k *= 2
    step = max(1, len(induced) // target)
    return induced[::step][:target]


def slice_kg(source_dir: Path, dest_dir: Path, files: list[str], max_edges: int, keep_kinds: list[str]) -> dict:
    """Evenly sampled edges of every ``*.sif[.gz]`` file and the nodes they need (all when 0)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    if max_edges <= 0:
        for name in files:
            _link_or_copy(source_dir / name, dest_dir / name)
        return {"edges": "all", "nodes": "all"}
    edge_files = [f for f in files if ".sif" in f]
    node_files = [f for f in files if f.endswith("-nodes.tsv")]
    keep_nodes: set[str] = set()
    n_edges = 0
    per_file = max(1, max_edges // max(1, len(edge_files)))
    for name in edge_files:
        with _open_text(source_dir / name) as fh:
            header, *rows = fh.read().splitlines()
        picked = dense_edges(rows, per_file)
        for row in picked:
            parts = row.split("\t")
            keep_nodes.update((parts[0], parts[-1]))
        n_edges += len(picked)
        with _open_text(dest_dir / name, "wt") as out:
            out.write("\n".join([header, *picked]) + "\n")
    n_nodes = 0
    for name in node_files:
        with (source_dir / name).open(encoding="utf8") as fh:
            header, *rows = fh.read().splitlines()
        kept = [r for r in rows if r.split("\t")[0] in keep_nodes or r.split("\t")[-1] in keep_kinds]
        n_nodes += len(kept)
        (dest_dir / name).write_text("\n".join([header, *kept]) + "\n", encoding="utf8")
    for name in files:
        if name not in edge_files and name not in node_files:
            _link_or_copy(source_dir / name, dest_dir / name)
    return {"edges": n_edges, "nodes": n_nodes}


def slice_data(
    config: Path, assets: Path, out: Path, overrides: dict[str, Any] | None = None, profile: str | None = None
) -> dict:
    """Write the profile's view of ``assets`` into ``out`` (see the module docstring)."""
    cfg = read_section(SliceSettings, load_config(config, overrides, profile)["slice"], "slice")
    report: dict[str, Any] = {"ner": {}}
    for corpus in cfg.corpora:
        for split in cfg.splits:
            source = assets / "ner" / corpus / f"{split}.tsv"
            n = slice_iob(source, out / "ner" / corpus / f"{split}.tsv", cfg.max_sentences)
            report["ner"][f"{corpus}/{split}"] = "all" if n < 0 else n
    report["kg"] = slice_kg(
        assets / "kg" / "hetionet",
        out / "kg" / "hetionet",
        list(cfg.kg_files),
        cfg.max_edges,
        list(cfg.keep_kinds),
    )
    return report
