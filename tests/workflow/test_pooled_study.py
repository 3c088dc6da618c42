"""The pooled study's summary: in-domain vs single, leave-one-out vs the paper, held-out labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spacy_kogner.config import ConfigError, load_config
from spacy_kogner.run_summary import RunSummary
from spacy_kogner.workflow.pooled import run_study


def _row(per_label: dict[str, float]) -> dict:
    total = sum(per_label.values()) / len(per_label)
    return {"exact": {"p": total, "r": total, "f": total, "per_label": {k: {"f": v} for k, v in per_label.items()}}}


def test_summary_from_finished_runs(tmp_path: Path) -> None:
    paths = {k: str(tmp_path / k) for k in ("corpora", "training", "results")}
    cfg = tmp_path / "pooled.cfg"
    text = Path("configs/pooled.cfg").read_text(encoding="utf8")
    cfg.write_text(text, encoding="utf8")
    overrides = {
        "pooled.corpora": ["NCBI-disease", "JNLPBA"],
        "study.heldout": ["JNLPBA"],
        "study.single_runs": str(tmp_path / "single/{corpus}"),
        **{f"paths.{k}": v for k, v in paths.items()},
    }
    results = Path(paths["results"]) / "pooled"
    results.mkdir(parents=True)
    for run in ("pooled/kogner", "loco/JNLPBA"):
        (Path(paths["training"]) / run).mkdir(parents=True)
        RunSummary(system="kogner", steps=10, seed=1, wall_s=120, best_dev_f=0.5, train_sentences=7).write(
            Path(paths["training"]) / run
        )
    (results / "pooled__NCBI-disease.json").write_text(json.dumps(_row({"Disease": 80.0})))
    (results / "pooled__JNLPBA.json").write_text(json.dumps(_row({"protein": 70.0, "cell_line": 50.0})))
    (results / "loco__JNLPBA__JNLPBA.json").write_text(
        json.dumps(_row({"protein": 40.0, "cell_line": 20.0, "DNA": 10.0}))
    )
    # the leave-one-out run trained with gold Disease + silver "gene or gene product" and "protein"
    stats = Path(paths["corpora"]) / "loco" / "JNLPBA" / "stats.json"
    stats.parent.mkdir(parents=True)
    stats.write_text(json.dumps({"label_sets": {"NCBI-disease": ["Disease", "protein"]}}))
    single = tmp_path / "single" / "NCBI-disease"
    single.mkdir(parents=True)
    (single / "test.json").write_text(json.dumps({"exact": {"f": 81.5}}))

    summary = run_study(cfg, overrides, summary_only=True)
    assert summary["indomain"] == {"NCBI-disease": 80.0, "JNLPBA": 60.0}
    assert summary["single"] == {"NCBI-disease": 81.5}  # JNLPBA has no single-corpus run here
    assert summary["loco"] == {"JNLPBA": pytest.approx(23.33, abs=0.01)}
    # protein was a training prompt of the run; cell_line and DNA never were
    assert summary["heldout_labels"] == {"DNA (JNLPBA)": 10.0, "cell_line (JNLPBA)": 20.0}
    assert summary["paper_table2"]["JNLPBA"] == 32.8 and summary["not_run"] == []
    md = (Path(paths["results"]) / "pooled.md").read_text(encoding="utf8")
    assert "| NCBI-disease | 80.00 | 81.5 | -1.50 |" in md
    assert "| JNLPBA | 23.33 | 32.8 | -9.47 |" in md
    assert summary["loco_per_label"] == {"JNLPBA": {"protein": 40.0, "cell_line": 20.0, "DNA": 10.0}}
    assert "| JNLPBA | cell_line | 20.00 |" in md
    assert json.loads((Path(paths["results"]) / "pooled.json").read_text())["loco"] == summary["loco"]


def test_only_names_a_run_of_the_study(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a run of the study"):
        run_study("configs/pooled.cfg", {"paths.results": str(tmp_path)}, only="loco/BC99")
    assert load_config("configs/pooled.cfg")["study"]["heldout"]


def test_a_leave_one_out_run_is_built_trained_and_scored_on_the_held_out_corpus(tmp_path: Path) -> None:
    """Real code end to end on toy data: corpus A (Disease) pooled without B (Chemical) brings in
    Compound silver as "chemical"; the study trains the student and scores it on B's test split."""
    import re

    from toy_distill import CFG, SENTENCES, write_teacher
    from typer.testing import CliRunner

    from spacy_kogner.cli import app
    from spacy_kogner.data.readers import Sentence, Span, write_gliner_json, write_iob

    def corpus(label: str) -> list[Sentence]:
        return [Sentence(t, [Span(s, e + 1, lbl) for s, e, lbl in ner if lbl == label], "x") for t, ner in SENTENCES]

    for name, label in (("A", "Disease"), ("B", "Chemical")):
        folder = tmp_path / "gold" / name
        folder.mkdir(parents=True)
        for split in ("train", "dev"):
            write_gliner_json([Sentence(s.tokens, s.spans, name) for s in corpus(label)], folder / f"{split}.json")
    (tmp_path / "sources" / "B").mkdir(parents=True)
    write_iob(corpus("Chemical"), tmp_path / "sources" / "B" / "test.tsv")
    nodes = "id\tname\tkind\n" + "".join(f"Compound::{i}\t{n}\tCompound\n" for i, n in
                                         ((1, "Aspirin"), (2, "Ibuprofen"), (3, "Cisplatin")))  # fmt: skip
    (tmp_path / "nodes.tsv").write_text(nodes, encoding="utf8")
    distill_cfg = CFG.read_text(encoding="utf8")
    for key, value in (("batch_size", "3"), ("precision", '"fp32"'), ("tune_threshold", "[]"), ("bucket", "0")):
        distill_cfg = re.sub(rf"^{key} = .*$", f"{key} = {value}", distill_cfg, count=1, flags=re.M)
    (tmp_path / "distill.cfg").write_text(distill_cfg, encoding="utf8")
    overrides = {
        "pooled.corpora": ["A", "B"],
        "pooled.gold_dir": str(tmp_path / "gold/{corpus}"),
        "study.heldout": ["B"],
        "study.distill_config": str(tmp_path / "distill.cfg"),
        "study.loco_steps": 4,
        "study.loco_eval_every": 2,
        "study.single_runs": str(tmp_path / "none/{corpus}"),
        "paths.sources": str(tmp_path / "sources"),
        "paths.corpora": str(tmp_path / "corpora"),
        "paths.training": str(tmp_path / "training"),
        "paths.results": str(tmp_path / "results"),
        "paths.teacher": str(write_teacher(tmp_path / "teacher")),
    }
    # the study builds corpora from the teacher's KG; this teacher has none, so build it here
    result = CliRunner().invoke(app, ["pooled-corpus", str(tmp_path / "corpora/loco/B"), "--corpora", "A",
                                      "--pooled.gold_dir", str(tmp_path / "gold/{corpus}"),
                                      "--kg-nodes", str(tmp_path / "nodes.tsv")])  # fmt: skip
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "corpora/loco/B/stats.json").read_text())
    assert "Compound" in stats["silver_kinds"] and stats["silver_spans"]["chemical"] == 3

    assert run_study("configs/pooled.cfg", overrides, only="loco/B") == {}
    assert (tmp_path / "training/loco/B/model-best").is_dir()
    row = json.loads((tmp_path / "results/pooled/loco__B__B.json").read_text())
    assert row["test_corpus"] == "B" and row["labels"] == ["Chemical"] and row["n_gold"] == 3
    summary = run_study("configs/pooled.cfg", overrides, summary_only=True)
    assert set(summary["loco"]) == {"B"} and summary["heldout_labels"] == {}  # "chemical" was silver-trained
