"""The benchmark's plumbing on a few real NCBI-disease sentences (its timings are not tested)."""

from __future__ import annotations

import json

import pytest
from conftest import DATA

NCBI_TEST = DATA / "ner" / "NCBI-disease" / "test.tsv"


@pytest.mark.skipif(not NCBI_TEST.is_file(), reason="needs the shared data mirror")
def test_bench_runs_every_variant_and_writes_json(tmp_path, span_model):
    from spacy_kogner.workflow.bench import run_bench

    span_model.save(tmp_path / "model")  # a private copy: the int8 stage quantises in place
    out = tmp_path / "bench.json"
    result = run_bench(out, NCBI_TEST, str(tmp_path / "model"), ["Disease"], limit=6, batch_sizes=[2, 4])
    assert json.loads(out.read_text()) == result
    names = list(result["rows"])
    assert any(n.startswith("gliner.inference bs=2") for n in names) and any("bs=4" in n for n in names)
    assert any("nlp.pipe" in n for n in names) and "kogner nlp.pipe int8 (opt-in)" in names
    assert all(row["sent_per_s"] > 0 and row["peak_rss_mb"] > 0 for row in result["rows"].values())
    assert result["sentences"] == 6 and result["pipe_equals_one_at_a_time"] is True
    assert 0.0 <= result["int8_entity_agreement_with_fp32_pipe"] <= 1.0
    assert any(n.startswith("kogner nlp.pipe bf16 autocast") for n in names)
    assert 0.0 <= result["bf16_entity_agreement_with_fp32_pipe"] <= 1.0 and result["cpu"]
