"""The in-domain study's summary: finished runs merged with an earlier committed summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spacy_kogner.config import ConfigError, load_config
from spacy_kogner.run_summary import RunSummary
from spacy_kogner.workflow.indomain import run_study

EARLIER = {  # the shape committed before runs logged steps, epochs and curves into the summary
    "NCBI-disease": {
        "train_minutes": {"kogner": 46.1, "spacy_cnn": 30.5}, "words_per_s": {"kogner": 1013.0, "spacy_cnn": 11396.0},
        "precision": {"kogner": 86.96, "spacy_cnn": 82.68}, "recall": {"kogner": 79.9, "spacy_cnn": 75.1},
        "kogner": 83.28, "spacy_cnn": 78.71, "cpu": "Old CPU",
    },
    "BC2GM": {
        "train_minutes": {"kogner": 53.9}, "words_per_s": {"kogner": 815.0}, "precision": {"kogner": 75.4},
        "recall": {"kogner": 69.14}, "kogner": 72.13, "cpu": "Old CPU",
    },
}  # fmt: skip


def _finished_student(tmp_path: Path, corpus: str, f: float) -> None:
    """What a finished student run leaves: its run summary, curve and the harness's score row."""
    run = tmp_path / "training" / corpus / "kogner"
    (run / "model-best").mkdir(parents=True)
    details = {"budget_clock_s": 2700.0, "epochs": 3.54, "ended_by": "schedule", "threads": 2}
    RunSummary(system="kogner", steps=1400, seed=1, wall_s=3300.0, cpu="New CPU", details=details).write(run)
    curve = [
        {"step": 200, "elapsed_s": 300.0, "dev_f": 0.61, "test_f": 0.6},
        {"step": 1400, "elapsed_s": 2700.0, "dev_f": 0.75},
    ]
    (run / "curves.json").write_text(json.dumps(curve), encoding="utf8")
    score = {"exact": {"p": f + 1, "r": f - 1, "f": f}, "words_per_s": 2000.0, "pipeline": str(run / "model-best")}
    (tmp_path / "results" / "indomain").mkdir(parents=True)
    (tmp_path / "results" / "indomain" / f"{corpus}__kogner.json").write_text(json.dumps(score), encoding="utf8")


def _overrides(tmp_path: Path, earlier: str) -> dict:
    return {
        "study.corpora": ["NCBI-disease", "BC2GM"],
        "paths.training": str(tmp_path / "training"),
        "paths.results": str(tmp_path / "results"),
        "paths.earlier": earlier,
    }


def test_a_fresh_run_replaces_its_earlier_result_and_the_others_are_kept(tmp_path):
    _finished_student(tmp_path, "BC2GM", 74.5)
    (tmp_path / "earlier.json").write_text(json.dumps(EARLIER), encoding="utf8")
    table = run_study("configs/indomain.cfg", _overrides(tmp_path, str(tmp_path / "earlier.json")), summary_only=True)
    assert table["BC2GM"]["kogner"] == 74.5 and table["BC2GM"]["steps"]["kogner"] == 1400
    assert table["BC2GM"]["train_minutes"]["kogner"] == 45.0  # the budget clock, not the 55-min wall
    assert table["BC2GM"]["wall_minutes"]["kogner"] == 55.0
    assert table["BC2GM"]["curve"]["kogner"][0] == {"minutes": 5.0, "dev_f": 0.61, "test_f": 0.6}
    assert table["NCBI-disease"]["kogner"] == 83.28 and table["NCBI-disease"]["spacy_cnn"] == 78.71
    assert table["NCBI-disease"]["cpus"]["spacy_cnn"] == "Old CPU" and table["NCBI-disease"]["steps"]["kogner"] is None
    md = (tmp_path / "results" / "indomain.md").read_text(encoding="utf8")
    assert (
        "| BC2GM | KoGNER student | 75.5 | 73.5 | **74.5** | 45.0 | 55.0 | 1400 | 3.5 | schedule | 2 | 2,000 | New CPU"
        in md
    )
    assert "| NCBI-disease | spaCy CNN ner | 82.7 | 75.1 | **78.7** | 30.5 | – |" in md
    assert "measured on 2 CPUs (New CPU; Old CPU)" in md
    assert table["BC2GM"]["cpu"] == "New CPU"  # one box for the row: its name, not a per-system list
    assert (
        "Not run (no finished run summary and test score): NCBI-disease / spaCy trf+ner (MiniLM), BC2GM / spaCy CNN ner"
        in md
    )
    assert (tmp_path / "results" / "indomain_curves.png").is_file()
    # the merged summary is itself a valid earlier summary: merging it again changes nothing
    again = run_study("configs/indomain.cfg", _overrides(tmp_path, str(tmp_path / "results" / "indomain.json")),
                      summary_only=True)  # fmt: skip
    assert again == table


def test_a_row_from_two_boxes_names_each_systems_cpu(tmp_path):
    _finished_student(tmp_path, "NCBI-disease", 84.0)  # New CPU, beside the earlier CNN row's Old CPU
    (tmp_path / "earlier.json").write_text(json.dumps(EARLIER), encoding="utf8")
    table = run_study("configs/indomain.cfg", _overrides(tmp_path, str(tmp_path / "earlier.json")), summary_only=True)
    assert table["NCBI-disease"]["cpu"] == "kogner: New CPU; spacy_cnn: Old CPU"
    assert table["BC2GM"]["cpu"] == "Old CPU"


def test_without_an_earlier_summary_only_finished_runs_count(tmp_path):
    _finished_student(tmp_path, "BC2GM", 74.5)
    table = run_study("configs/indomain.cfg", _overrides(tmp_path, ""), summary_only=True)
    assert "kogner" not in table["NCBI-disease"] and table["BC2GM"]["kogner"] == 74.5


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no summary at"), ("{not json", "is not JSON"), ("[1, 2]", "is not an indomain.json")],
)
def test_a_missing_or_corrupt_earlier_summary_is_refused(tmp_path, content, message):
    path = tmp_path / "earlier.json"
    if content is not None:
        path.write_text(content, encoding="utf8")
    with pytest.raises(ConfigError, match=message):
        run_study("configs/indomain.cfg", _overrides(tmp_path, str(path)), summary_only=True)


def test_a_student_started_from_another_model_says_so(tmp_path):
    _finished_student(tmp_path, "BC2GM", 74.5)
    start = "training/pooled/kogner/model-best"
    (tmp_path / "training/BC2GM/kogner/config.cfg").write_text(f'[paths]\ninit_model = "{start}"\n', encoding="utf8")
    table = run_study("configs/indomain.cfg", _overrides(tmp_path, ""), summary_only=True)
    assert table["BC2GM"]["init"] == {"kogner": start}
    md = (tmp_path / "results" / "indomain.md").read_text(encoding="utf8")
    assert f"KoGNER students not started from the shipped encoder: BC2GM from `{start}`." in md
    # a fresh student (no init_model in its config) gets no such line
    (tmp_path / "training/BC2GM/kogner/config.cfg").write_text("[paths]\n", encoding="utf8")
    run_study("configs/indomain.cfg", _overrides(tmp_path, ""), summary_only=True)
    assert "not started from" not in (tmp_path / "results" / "indomain.md").read_text(encoding="utf8")


def test_study_init_model_is_what_the_students_start_from(tmp_path):
    from toy_distill import SENTENCES

    from spacy_kogner.data.readers import Sentence, Span, write_iob
    from spacy_kogner.pipeline.span_model import ModelLoadError

    sentences = [Sentence(t, [Span(s, e + 1, lbl) for s, e, lbl in ner], "toy") for t, ner in SENTENCES]
    (tmp_path / "sources" / "toy").mkdir(parents=True)
    for split in ("train", "dev", "test"):
        write_iob(sentences, tmp_path / "sources" / "toy" / f"{split}.tsv")
    (tmp_path / "empty").mkdir()
    overrides = {**_overrides(tmp_path, ""), "study.corpora": ["toy"], "study.init_model": str(tmp_path / "empty"),
                 "paths.sources": str(tmp_path / "sources"), "paths.corpora": str(tmp_path / "corpora")}  # fmt: skip
    # the run reaches the student's loader with the study's init_model: an empty folder is refused, named
    with pytest.raises(ModelLoadError, match="neither"):
        run_study("configs/indomain.cfg", overrides, only="toy:kogner")
    assert load_config(tmp_path / "training/toy/kogner/config.cfg")["paths"]["init_model"] == str(tmp_path / "empty")
