"""KnowledgeGraph reading: row order, edge policy, clear errors, generic tables, kg-info."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from kg_fixtures import HETIONET_EDGES, HETIONET_NODES, make_small_kg
from typer.testing import CliRunner

from spacy_kogner.config import ConfigError
from spacy_kogner.kg.graph import KGError, KnowledgeGraph, load_kg


@pytest.fixture()
def small_kg_files(tmp_path):
    return make_small_kg(tmp_path / "kg")


def test_small_kg_rows_and_edge_policy(small_kg_files):
    nodes, edges = small_kg_files
    kg = KnowledgeGraph.from_hetionet(nodes, [edges])
    assert kg.num_nodes == 240
    assert kg.node_ids[0] == "Gene::0" and kg.index["Compound::C0"] == 180
    assert all(kg.index[node_id] == row for row, node_id in enumerate(kg.node_ids))
    assert kg.edge_index.dtype == np.int64 and kg.edge_index.shape == (2, kg.num_edges)
    assert kg.edge_type.shape == (kg.num_edges,)
    assert set(kg.relations) == {"GiG", "CbG", "DaG", "CtD"}
    # No duplicate triples survive; symmetric GiG edges are stored with head row <= tail row.
    triples = {tuple(t) for t in kg.triples().tolist()}
    assert len(triples) == kg.num_edges
    gig = kg.relations.index("GiG")
    assert np.all(kg.edge_index[0, kg.edge_type == gig] <= kg.edge_index[1, kg.edge_type == gig])
    assert kg.stats["duplicate_edges_dropped"] >= 1
    assert kg.stats["mirror_edges_folded"] >= 1
    # Directed relations keep their direction.
    ctd = kg.relations.index("CtD")
    heads = {kg.kinds[h] for h in kg.edge_index[0, kg.edge_type == ctd]}
    assert heads == {"Compound"}
    summary = kg.summary()
    assert summary["nodes_by_kind"] == {"Gene": 120, "Disease": 60, "Compound": 60}
    assert summary["isolated_by_kind"].get("Gene", 0) >= 10
    assert 0 < summary["largest_component_share"] <= 1


def test_self_loops_kept_or_dropped(tmp_path):
    nodes = tmp_path / "n.tsv"
    nodes.write_text("id\tname\tkind\na\tA\tX\nb\tB\tX\n")
    edges = tmp_path / "e.sif"
    edges.write_text("source\tmetaedge\ttarget\na\tXrX\ta\na\tXrX\tb\nb\tXrX\ta\n")
    kept = KnowledgeGraph.from_hetionet(nodes, edges)
    assert kept.num_edges == 2 and kept.stats["self_loops_kept"] == 1
    dropped = KnowledgeGraph.from_hetionet(nodes, edges, drop_self_loops=True)
    assert dropped.num_edges == 1 and dropped.stats["self_loops_dropped"] == 1


@pytest.mark.parametrize(
    "nodes_text, edges_text, message",
    [
        ("id\tname\n", "source\tmetaedge\ttarget\na\tXrX\ta\n", "missing column(s) ['kind']"),
        ("id\tname\tkind\na\tA\tX\n", "source\tmetaedge\ttarget\na\tXrX\tzzz\n", "e.sif:2: edge to unknown node 'zzz'"),
        ("id\tname\tkind\na\tA\tX\nb\tB\tX\na\tA2\tX\n", "source\tmetaedge\ttarget\na\tXrX\tb\n", "n.tsv:4: duplicate"),
        ("", "source\tmetaedge\ttarget\na\tXrX\ta\n", "empty file"),
        ("id\tname\tkind\na\tA\tX\n", "source\tmetaedge\ttarget\n", "e.sif: empty file"),
        ("id\tname\tkind\na\tA\tX\n", "source\ttarget\na\ta\n", "missing column(s) ['metaedge']"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, nodes_text, edges_text, message):
    (tmp_path / "n.tsv").write_text(nodes_text)
    (tmp_path / "e.sif").write_text(edges_text)
    with pytest.raises(KGError) as err:
        KnowledgeGraph.from_hetionet(tmp_path / "n.tsv", [tmp_path / "e.sif"])
    assert message in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(KGError, match="not found"):
        KnowledgeGraph.from_hetionet(tmp_path / "nope.tsv", [tmp_path / "e.sif"])


def test_generic_csv_tables_with_named_columns(tmp_path):
    nodes = tmp_path / "entities.csv"
    nodes.write_text('uid,label,type\nn1,"aspirin, low dose",Drug\nn2,headache,Disease\nn3,fever,Disease\n')
    edges = tmp_path / "rel.csv.gz"
    with gzip.open(edges, "wt") as handle:
        handle.write("h,r,t\nn1,treats,n2\nn1,treats,n3\nn2,similar,n3\nn3,similar,n2\n")
    kg = KnowledgeGraph.from_tables(
        nodes,
        edges,
        id_col="uid",
        name_col="label",
        kind_col="type",
        source_col="h",
        target_col="t",
        relation_col="r",
        symmetric_relations=["similar"],
    )
    assert kg.names[0] == "aspirin, low dose"
    assert kg.num_edges == 3  # the two "similar" edges are one undirected fact
    cfg = {
        "format": "tables",
        "nodes": str(nodes),
        "edges": [str(edges)],
        "id_col": "uid",
        "name_col": "label",
        "kind_col": "type",
        "source_col": "h",
        "target_col": "t",
        "relation_col": "r",
        "sep": ",",
        "symmetric_relations": ["similar"],
    }
    assert load_kg(cfg).fingerprint() == kg.fingerprint()
    with pytest.raises(ConfigError, match="Unknown key"):
        load_kg({**cfg, "nodez": "x"})
    with pytest.raises(ConfigError, match="column names"):
        load_kg({k: v for k, v in cfg.items() if k != "id_col"})


def test_hetionet_mirror_slice():
    """The real node table with the mirror's sampled edge file (one of the two edge files)."""
    kg = KnowledgeGraph.from_hetionet(HETIONET_NODES, [HETIONET_EDGES[1]])
    assert kg.num_nodes == 47031
    assert kg.num_edges == 30000
    assert sorted(kg.relations) == sorted(["AeG", "CcSE", "GpBP", "GpCC", "GpMF", "GpPW"])
    row = kg.index["Disease::DOID:1612"]
    assert kg.names[row] == "breast cancer" and kg.kinds[row] == "Disease"
    # Every edge endpoint is a real node of the declared kinds (GpBP: Gene -> Biological Process).
    gpbp = kg.relations.index("GpBP")
    assert {kg.kinds[t] for t in kg.edge_index[1, kg.edge_type == gpbp]} == {"Biological Process"}


def test_kg_info_cli(small_kg_files):
    from spacy_kogner.cli import app

    nodes, edges = small_kg_files
    result = CliRunner().invoke(app, ["kg-info", str(nodes), str(edges)])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["nodes"] == 240 and "largest_component_share" in info and "isolated_nodes" in info


def test_a_table_that_is_not_utf8_names_file_line_and_byte(tmp_path):
    nodes = tmp_path / "n.tsv"
    nodes.write_bytes("id\tname\tkind\na\tA\tX\nb\tcaf\u00e9\tX\n".encode("latin-1"))
    edges = tmp_path / "e.sif"
    edges.write_text("source\tmetaedge\ttarget\na\tXrX\tb\n")
    with pytest.raises(KGError) as err:
        KnowledgeGraph.from_hetionet(nodes, [edges])
    offset = nodes.read_bytes().index(b"\xe9")
    assert str(err.value) == f"{nodes}:3: not valid UTF-8 (byte 0xe9 at offset {offset}); re-encode the file as UTF-8"
    nodes.write_text("id\tname\tkind\na\tA\tX\nb\tB\tX\n")
    gz = tmp_path / "e.sif.gz"
    with gzip.open(gz, "wb") as handle:
        handle.write("source\tmetaedge\ttarget\na\tXrX\tb\n".encode("utf-16"))
    with pytest.raises(KGError, match=r"e\.sif\.gz:1: not valid UTF-8 \(byte 0xff at offset 0 of the decompressed"):
        KnowledgeGraph.from_hetionet(nodes, [gz])


def test_a_bom_does_not_hide_the_first_column(tmp_path):
    nodes = tmp_path / "n.tsv"
    nodes.write_bytes(b"\xef\xbb\xbf" + b"id\tname\tkind\na\tA\tX\nb\tB\tX\n")
    edges = tmp_path / "e.sif"
    edges.write_bytes(b"\xef\xbb\xbf" + b"source\tmetaedge\ttarget\na\tXrX\tb\n")
    kg = KnowledgeGraph.from_hetionet(nodes, [edges])
    assert kg.node_ids == ["a", "b"] and kg.num_edges == 1
