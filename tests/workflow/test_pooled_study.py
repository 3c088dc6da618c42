"""The pooled study's summary: in-domain vs single, leave-one-out vs the paper, held-out labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spacy_kogner.config import ConfigError, load_config
from spacy_kogner.pipeline.span_model import ModelLoadError
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
    assert summary["runs"]["pooled"]["init"] == "default"  # no config.cfg: a fresh student
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
    tuning = (("tune_threshold", "[0.3, 0.6]"), ("calibrate_min_spans", "1"))
    for key, value in (("batch_size", "3"), ("precision", '"fp32"'), ("bucket", "0"), *tuning):
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
    # the dev sentences' silver spans calibrate "chemical", which no gold dev label carries
    assert stats["dev_silver_spans"] == {"chemical": 3}

    assert run_study("configs/pooled.cfg", overrides, only="loco/B") == {}
    assert (tmp_path / "training/loco/B/model-best").is_dir()
    row = json.loads((tmp_path / "results/pooled/loco__B__B.json").read_text())
    assert row["test_corpus"] == "B" and row["labels"] == ["Chemical"] and row["n_gold"] == 3
    details = json.loads((tmp_path / "training/loco/B/metrics.json").read_text())["details"]
    assert details["calibration"]["chemical"]["source"] == "calibration"
    assert details["calibration"]["disease"]["source"] == "dev"
    # [study] source_balance reaches the run; a pool of one gold corpus has nothing to balance
    assert details["source_balance"] == load_config("configs/pooled.cfg")["study"]["source_balance"]
    assert details["epoch_sources"] == {"A": len(SENTENCES)}
    summary = run_study("configs/pooled.cfg", overrides, summary_only=True)
    assert summary["runs"]["loco/B"]["prompt_thresholds"] == details["prompt_thresholds"]
    assert summary["runs"]["loco/B"]["source_balance"] == details["source_balance"]
    # [study] seed is the run's training seed
    assert summary["runs"]["loco/B"]["seed"] == load_config("configs/pooled.cfg")["study"]["seed"]
    assert set(summary["loco"]) == {"B"} and summary["heldout_labels"] == {}  # "chemical" was silver-trained

    # [study] pooled_init: the model the pooled student starts from (here the leave-one-out student);
    # pooled_continue_minutes: a second stage continues stage 1's best checkpoint; the leave-one-out
    # runs keep distill.cfg's init_model
    result = CliRunner().invoke(app, ["pooled-corpus", str(tmp_path / "corpora/pooled"), "--corpora", "A,B",
                                      "--pooled.gold_dir", str(tmp_path / "gold/{corpus}"),
                                      "--kg-nodes", str(tmp_path / "nodes.tsv")])  # fmt: skip
    assert result.exit_code == 0, result.output
    (tmp_path / "sources" / "A").mkdir(parents=True)
    write_iob(corpus("Disease"), tmp_path / "sources" / "A" / "test.tsv")
    start = tmp_path / "training/loco/B/model-best/kogner/model"
    pooled = {**overrides, "study.pooled_steps": 2, "study.pooled_eval_every": 1, "study.pooled_minutes": 0,
              "study.speed_corpus": "A", "study.speed_labels": [1, 2]}  # fmt: skip
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="neither"):
        run_study("configs/pooled.cfg", {**pooled, "study.pooled_init": str(tmp_path / "empty")}, only="pooled")
    pooled.update({"study.pooled_init": str(start), "study.pooled_continue_minutes": 5})
    assert run_study("configs/pooled.cfg", pooled, only="pooled") == {}
    first = load_config(tmp_path / "training/pooled/stage1/config.cfg")
    assert first["paths"]["init_model"] == str(start) and first["training"]["max_minutes"] == 0
    second = load_config(tmp_path / "training/pooled/kogner/config.cfg")
    stage1_model = str(tmp_path / "training/pooled/stage1/model-best")
    assert second["paths"]["init_model"] == stage1_model and second["training"]["max_minutes"] == 5
    assert load_config(tmp_path / "training/loco/B/config.cfg")["paths"]["init_model"] == "default"
    summary = run_study("configs/pooled.cfg", pooled, summary_only=True)
    assert list(summary["runs"]) == ["pooled", "pooled/stage1", "loco/B"]
    assert summary["runs"]["pooled"]["init"] == stage1_model and summary["runs"]["pooled/stage1"]["init"] == str(start)
    assert set(summary["indomain"]) == {"A", "B"} and set(summary["speed"]) >= {"1", "2"}


EARLIER = {  # a committed summary of an earlier session (before runs logged epochs and how they ended)
    "indomain": {"NCBI-disease": 70.99, "JNLPBA": 64.86},
    "single": {"NCBI-disease": 83.28, "JNLPBA": 69.77},
    "loco": {"JNLPBA": 21.85, "NCBI-disease": 25.53},
    "loco_per_label": {"JNLPBA": {"protein": 32.97, "DNA": 0.0}, "NCBI-disease": {"Disease": 25.53}},
    "heldout_labels": {"DNA (JNLPBA)": 0.0, "protein (JNLPBA)": 32.97},
    "runs": {
        name: {"steps": 400, "train_minutes": 25.0, "cpu": "Old CPU", "train_sentences": 9, "best_dev_f": 0.5}
        for name in ("pooled", "loco/JNLPBA", "loco/NCBI-disease")
    },
    "speed": {"corpus": "NCBI-disease", "sentences": 500, "threads": 2, "1": 72.2},
}


def test_a_run_finished_here_replaces_its_earlier_entries_and_the_others_are_kept(tmp_path: Path) -> None:
    paths = {k: str(tmp_path / k) for k in ("corpora", "training", "results")}
    (tmp_path / "earlier.json").write_text(json.dumps(EARLIER), encoding="utf8")
    overrides = {
        "pooled.corpora": ["NCBI-disease", "JNLPBA"],
        "study.heldout": ["JNLPBA", "NCBI-disease"],
        "study.single_runs": str(tmp_path / "single/{corpus}"),
        "paths.earlier": str(tmp_path / "earlier.json"),
        **{f"paths.{k}": v for k, v in paths.items()},
    }
    run = Path(paths["training"]) / "loco/JNLPBA"
    run.mkdir(parents=True)
    details = {"budget_clock_s": 1440.0, "epochs": 0.9, "ended_by": "schedule", "threads": 2, "precision": "fp32",
               "threshold": 0.5, "prompt_thresholds": {"protein": 0.55, "chemical": 0.3},
               "source_balance": 0.5}  # fmt: skip
    RunSummary(system="kogner", steps=700, seed=1, wall_s=1500, best_dev_f=0.6, train_sentences=7,
               cpu="New CPU", details=details).write(run)  # fmt: skip
    # the run continued an earlier student (its config.cfg says what it started from)
    (run / "config.cfg").write_text('[paths]\ninit_model = "stage1/model"\n', encoding="utf8")
    results = Path(paths["results"])
    (results / "pooled").mkdir(parents=True)
    (results / "pooled" / "loco__JNLPBA__JNLPBA.json").write_text(json.dumps(_row({"protein": 50.0, "RNA": 10.0})))
    (Path(paths["corpora"]) / "loco/JNLPBA").mkdir(parents=True)
    (Path(paths["corpora"]) / "loco/JNLPBA/stats.json").write_text(json.dumps({"label_sets": {"x": ["protein"]}}))
    # the in-domain study's summary beside it has a newer NCBI-disease student than the earlier file
    (results / "indomain.json").write_text(json.dumps({"NCBI-disease": {"kogner": 84.42}}))

    summary = run_study("configs/pooled.cfg", overrides, summary_only=True)
    assert summary["loco"] == {"JNLPBA": 30.0, "NCBI-disease": 25.53}
    assert summary["loco_per_label"]["JNLPBA"] == {"protein": 50.0, "RNA": 10.0}
    # the earlier held-out scores of JNLPBA are gone (DNA is not in the new row), NCBI-disease had none
    assert summary["heldout_labels"] == {"RNA (JNLPBA)": 10.0}
    assert summary["runs"]["loco/JNLPBA"]["steps"] == 700 and "earlier" not in summary["runs"]["loco/JNLPBA"]
    assert summary["runs"]["loco/JNLPBA"]["init"] == "stage1/model"
    assert summary["runs"]["loco/JNLPBA"]["train_minutes"] == 24.0 and summary["runs"]["loco/JNLPBA"]["epochs"] == 0.9
    assert summary["runs"]["pooled"]["earlier"] is True and summary["indomain"] == EARLIER["indomain"]
    assert summary["single"] == {"NCBI-disease": 84.42, "JNLPBA": 69.77}
    assert summary["speed"] == EARLIER["speed"] and summary["not_run"] == []
    # the study's order (heldout = JNLPBA, NCBI-disease), whichever session an entry comes from
    assert list(summary["loco"]) == ["JNLPBA", "NCBI-disease"]
    assert list(summary["runs"]) == ["pooled", "loco/JNLPBA", "loco/NCBI-disease"]
    md = (results / "pooled.md").read_text(encoding="utf8")
    assert (
        "| loco/JNLPBA | 1 | stage1/model | 700 | 0.90 | schedule | 24.0 | 2 | fp32 | 0.5 | 7 | 60.00 "
        "| 0.5; chemical 0.3, protein 0.55 | New CPU |" in md
    )
    # a run from before source balance existed pooled its sources as they are (1.0)
    assert "| pooled (*earlier*) | – | – | 400 | – | – | 25.0 | – | – | 1.0 | 9 | 50.00 | – | Old CPU |" in md
    # summarising the summary again changes nothing
    again = run_study("configs/pooled.cfg", {**overrides, "paths.earlier": str(results / "pooled.json")},
                      summary_only=True)  # fmt: skip
    assert {k: again[k] for k in ("indomain", "loco", "heldout_labels")} == {
        k: summary[k] for k in ("indomain", "loco", "heldout_labels")
    }


@pytest.mark.parametrize(
    ("text", "error"),
    [(None, "no summary at"), ("{not json", "is not JSON"), ('{"indomain": {}}', "is not a pooled.json")],
)
def test_a_bad_earlier_summary_is_refused(tmp_path: Path, text: str | None, error: str) -> None:
    path = tmp_path / "earlier.json"
    if text is not None:
        path.write_text(text, encoding="utf8")
    overrides = {"paths.earlier": str(path), **{f"paths.{k}": str(tmp_path / k) for k in ("training", "results")}}
    with pytest.raises(ConfigError, match=error):
        run_study("configs/pooled.cfg", overrides, summary_only=True)
