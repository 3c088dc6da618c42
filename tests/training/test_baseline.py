"""The spaCy baselines: ``spacy train`` under our wall-time logger, with the shared run summary."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from spacy_kogner.data.readers import Sentence, Span, write_docbin
from spacy_kogner.run_summary import SUMMARY_FILE, RunSummary
from spacy_kogner.training.baseline import train_baseline

REPO = Path(__file__).resolve().parents[2]
SENTENCES = [
    (["Patients", "with", "cystic", "fibrosis", "were", "treated", "."], [(2, 4, "Disease")]),
    (["Aspirin", "reduces", "fever", "."], [(2, 3, "Disease")]),
    (["Breast", "cancer", "is", "common", "in", "women", "."], [(0, 2, "Disease")]),
    (["Migraine", "was", "treated", "with", "ibuprofen", "."], [(0, 1, "Disease")]),
] * 4


def corpus(folder: Path) -> tuple[Path, Path]:
    sents = [Sentence(list(t), [Span(s, e, lab) for s, e, lab in spans], "toy") for t, spans in SENTENCES]
    write_docbin(sents, folder / "train.spacy")
    write_docbin(sents[:4], folder / "dev.spacy")
    return folder / "train.spacy", folder / "dev.spacy"


def test_cnn_baseline_stops_at_its_wall_time_budget_and_keeps_the_best_model(tmp_path):
    train, dev = corpus(tmp_path)
    overrides = {
        "paths.train": str(train),
        "paths.dev": str(dev),
        "training.max_steps": 500,
        "training.eval_frequency": 2,
        "training.patience": 0,
        "training.logger.max_minutes": 1e-6,  # the first evaluation is past the budget
    }
    summary = train_baseline(REPO / "configs" / "spacy_cnn.cfg", tmp_path / "run", overrides, gpu_id=-1)
    assert summary.system == "spacy-cnn" and summary.details["ended_by"] == "max_minutes"
    assert summary.steps == 0 < summary.details["max_steps"]  # stopped at spaCy's first evaluation (step 0)
    assert (tmp_path / "run" / "model-best" / "meta.json").is_file()
    curve = [json.loads(x) for x in (tmp_path / "run" / "curve.jsonl").read_text().splitlines()]
    assert len(curve) == 1 and curve[0]["step"] == 0 and 0.0 <= curve[0]["dev_f"] <= 1.0
    assert RunSummary.read(tmp_path / "run" / SUMMARY_FILE) == summary


def test_cnn_baseline_without_a_budget_runs_its_steps(tmp_path):
    train, dev = corpus(tmp_path)
    overrides = {"paths.train": str(train), "paths.dev": str(dev), "training.max_steps": 6,
                 "training.eval_frequency": 3, "training.logger.max_minutes": 0}  # fmt: skip
    summary = train_baseline(REPO / "configs" / "spacy_cnn.cfg", tmp_path / "run", overrides, gpu_id=-1)
    assert summary.details["ended_by"].startswith("spacy") and summary.steps == 6
    assert [p["step"] for p in summary.details["curve"]] == [0, 3, 6]
    assert summary.details["threads"] == torch.get_num_threads()  # the summary says what the run used
