"""Small KGs for the teacher tests: a synthetic one built here and a real slice of Hetionet."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

from conftest import DATA

HETIONET = DATA / "kg" / "hetionet"
HETIONET_NODES = HETIONET / "hetionet-v1.0-nodes.tsv"
HETIONET_EDGES = [
    HETIONET / "hetionet-v1.0-edges-complete18.sif.gz",
    HETIONET / "hetionet-v1.0-edges-sample5k-6types.sif.gz",
]

GENE_PARTS = ["BRCA", "TP", "EGFR", "KRAS", "MYC", "CDK", "IL", "TNF", "APO", "HLA"]
DISEASE_PARTS = ["cardio", "neuro", "hepat", "nephr", "derma", "oste", "gastr", "pulmon"]
COMPOUND_PARTS = ["meth", "eth", "prop", "benz", "chlor", "fluor", "amin", "sulf"]


def make_small_kg(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """A ~240-node, 3-kind KG in Hetionet format with duplicates, mirror edges and isolated nodes."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    nodes: dict[str, list[str]] = {"Gene": [], "Disease": [], "Compound": []}
    lines = ["id\tname\tkind"]
    for i in range(120):
        node_id = f"Gene::{i}"
        nodes["Gene"].append(node_id)
        lines.append(f"{node_id}\t{rng.choice(GENE_PARTS)}{i}\tGene")
    for i in range(60):
        node_id = f"Disease::D{i}"
        nodes["Disease"].append(node_id)
        lines.append(f"{node_id}\t{rng.choice(DISEASE_PARTS)}itis type {i}\tDisease")
    for i in range(60):
        node_id = f"Compound::C{i}"
        nodes["Compound"].append(node_id)
        lines.append(f"{node_id}\t{rng.choice(COMPOUND_PARTS)}anol {i}\tCompound")
    nodes_path = folder / "nodes.tsv"
    nodes_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    # The last 10 genes stay isolated (no triples at all).
    genes = nodes["Gene"][:110]
    edges = ["source\tmetaedge\ttarget"]
    for _ in range(300):
        edges.append(f"{rng.choice(genes)}\tGiG\t{rng.choice(genes)}")
    for _ in range(200):
        edges.append(f"{rng.choice(nodes['Compound'])}\tCbG\t{rng.choice(genes)}")
    for _ in range(200):
        edges.append(f"{rng.choice(nodes['Disease'])}\tDaG\t{rng.choice(genes)}")
    for _ in range(100):
        edges.append(f"{rng.choice(nodes['Compound'])}\tCtD\t{rng.choice(nodes['Disease'])}")
    edges.append(edges[1])  # an exact duplicate
    src, rel, dst = edges[2].split("\t")
    edges.append(f"{dst}\t{rel}\t{src}")  # the mirror image of a symmetric edge
    edges_path = folder / "edges.sif.gz"
    with gzip.open(edges_path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(edges) + "\n")
    return nodes_path, edges_path


SLICE_KINDS = ("Disease", "Symptom", "Anatomy")
SLICE_RELATIONS = ("DpS", "DlA", "DrD")


def make_hetionet_slice(folder: Path) -> tuple[Path, Path]:
    """A real slice of the Hetionet mirror: Disease, Symptom, Anatomy and the edges among them."""
    folder.mkdir(parents=True, exist_ok=True)
    keep: set[str] = set()
    node_lines = []
    with open(HETIONET_NODES, encoding="utf-8") as handle:
        node_lines.append(next(handle).rstrip("\n"))
        for line in handle:
            parts = line.rstrip("\n").split("\t")
            if parts[2] in SLICE_KINDS:
                keep.add(parts[0])
                node_lines.append(line.rstrip("\n"))
    edge_lines = ["source\tmetaedge\ttarget"]
    with gzip.open(HETIONET_EDGES[0], "rt", encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            src, rel, dst = line.rstrip("\n").split("\t")
            if rel in SLICE_RELATIONS and src in keep and dst in keep:
                edge_lines.append(line.rstrip("\n"))
    nodes_path = folder / "nodes.tsv"
    edges_path = folder / "edges.sif"
    nodes_path.write_text("\n".join(node_lines) + "\n", encoding="utf-8")
    edges_path.write_text("\n".join(edge_lines) + "\n", encoding="utf-8")
    return nodes_path, edges_path
