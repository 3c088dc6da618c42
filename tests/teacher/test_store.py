"""The H store: write, memory-mapped load, id/name lookups, and clear errors for broken folders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spacy_kogner.teacher.store import HStore, StoreError, normalise_name, write_store


@pytest.fixture()
def store_dir(tmp_path):
    rng = np.random.default_rng(0)
    blocks = {
        "Z": rng.normal(size=(4, 6)).astype(np.float32),
        "Z_prime": rng.normal(size=(4, 3)).astype(np.float32),
        "Z_double_prime": rng.normal(size=(4, 2)).astype(np.float32),
    }
    ids = ["Gene::1", "Disease::D1", "Disease::D2", "Compound::C1"]
    names = ["BRCA1", "Breast  Cancer", "breast cancer", "aspirin"]
    kinds = ["Gene", "Disease", "Disease", "Compound"]
    write_store(tmp_path / "store", blocks, ids, names, kinds, {"seed": 0})
    return tmp_path / "store", blocks


def test_roundtrip_and_lookups(store_dir):
    folder, blocks = store_dir
    store = HStore.load(folder)
    assert isinstance(store.H, np.memmap) and store.H.dtype == np.float32
    assert store.H.shape == (4, 11) and store.dim == 11 and len(store) == 4
    assert store.meta["dims"] == {"Z": 6, "Z_prime": 3, "Z_double_prime": 2}
    assert store.meta["blocks"]["Z_prime"] == [6, 9]
    assert store.meta["block_order"] == list(store.meta["dims"]) == ["Z", "Z_prime", "Z_double_prime"]
    np.testing.assert_array_equal(store.block("Z_double_prime"), blocks["Z_double_prime"])
    assert store.row_of("Disease::D1") == 1 and store.row_of("nope") is None
    assert store.index["Compound::C1"] == 3
    assert store.lookup_name("BREAST cancer ") == [1, 2]
    assert store.lookup_name("unknown") == []
    np.testing.assert_array_equal(store.rows([3, 0]), np.concatenate(list(blocks.values()), axis=1)[[3, 0]])
    assert normalise_name("  Ａspirin\tTablets ") == "aspirin tablets"


@pytest.mark.parametrize("missing", ["H.npy", "index.tsv", "meta.json"])
def test_missing_file_is_named(store_dir, missing):
    folder, _ = store_dir
    (folder / missing).unlink()
    with pytest.raises(StoreError) as err:
        HStore.load(folder)
    assert str(folder) in str(err.value) and missing in str(err.value)


def test_missing_folder_and_corrupt_files(store_dir, tmp_path):
    with pytest.raises(StoreError, match="not found"):
        HStore.load(tmp_path / "nowhere")
    folder, _ = store_dir
    (folder / "meta.json").write_text("{not json")
    with pytest.raises(StoreError, match="meta.json"):
        HStore.load(folder)
    (folder / "meta.json").write_text(json.dumps({"shape": [4, 11]}))
    np.save(folder / "H.npy", np.zeros((3, 11), dtype=np.float32))
    with pytest.raises(StoreError, match="index.tsv"):
        HStore.load(folder)


def _rewrite_index(folder, rows):
    (folder / "index.tsv").write_bytes(b"".join(rows))


def test_a_duplicate_node_id_is_an_error_naming_file_and_lines(store_dir):
    """A second row for one id would silently win every lookup of that id."""
    folder, _ = store_dir
    rows = (folder / "index.tsv").read_bytes().splitlines(keepends=True)
    rows[4] = rows[4].replace(b"Compound::C1", b"Disease::D1")
    _rewrite_index(folder, rows)
    with pytest.raises(StoreError) as err:
        HStore.load(folder)
    assert str(err.value).startswith(f"{folder / 'index.tsv'}:5: duplicate node id 'Disease::D1' (first on line 3)")


def test_an_index_that_is_not_utf8_or_not_numbered_is_named(store_dir):
    folder, _ = store_dir
    rows = (folder / "index.tsv").read_bytes().splitlines(keepends=True)
    _rewrite_index(folder, rows[:3] + ["2\tDisease::D2\tcaf\u00e9\tDisease\n".encode("latin-1")] + rows[4:])
    offset = (folder / "index.tsv").read_bytes().index(b"\xe9")
    with pytest.raises(StoreError) as err:
        HStore.load(folder)
    assert str(err.value) == (
        f"{folder / 'index.tsv'}:4: not valid UTF-8 (byte 0xe9 at offset {offset}); re-encode the file as UTF-8"
    )
    _rewrite_index(folder, rows[:3] + [b"two\tDisease::D2\tx\tDisease\n"] + rows[4:])
    with pytest.raises(StoreError, match=r"index\.tsv:4 is malformed"):
        HStore.load(folder)
