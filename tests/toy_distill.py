"""A toy corpus, a small real H store and fast overrides of configs/distill.cfg for trainer tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CFG = REPO / "configs" / "distill.cfg"

SENTENCES = [
    (["Patients", "with", "cystic", "fibrosis", "were", "treated", "."], [(2, 3, "Disease")]),
    (["Aspirin", "reduces", "fever", "."], [(0, 0, "Chemical"), (2, 2, "Disease")]),
    (["Breast", "cancer", "is", "common", "in", "women", "."], [(0, 1, "Disease")]),
    (["Ibuprofen", "was", "given", "for", "migraine", "."], [(0, 0, "Chemical"), (4, 4, "Disease")]),
    (["No", "entities", "here", "."], []),
    (["Cisplatin", "causes", "nephrotoxicity", "in", "rats", "."], [(0, 0, "Chemical"), (2, 2, "Disease")]),
]


def write_corpus(path: Path, link: bool) -> Path:
    nodes = {"cystic fibrosis": "Disease::1", "Aspirin": "Compound::1", "Breast cancer": "Disease::2",
             "Ibuprofen": "Compound::2", "Cisplatin": "Compound::3", "fever": "Symptom::1"}  # fmt: skip
    records = []
    for tokens, ner in SENTENCES:
        kge = [nodes.get(" ".join(tokens[s : e + 1])) if link else None for s, e, _ in ner]
        records.append({"tokenized_text": tokens, "ner": [list(x) for x in ner], "kge": kge,
                        "corpus": "toy", "labels": ["Chemical", "Disease"]})  # fmt: skip
    path.write_text(json.dumps(records))
    return path


def overrides(tmp: Path, **extra) -> dict:
    base = {
        "paths.train": str(write_corpus(tmp / "train.json", link=True)),
        "paths.dev": str(write_corpus(tmp / "dev.json", link=False)),
        "paths.teacher": "",
        "training.b": 0.0,
        "training.steps": 6,
        "training.batch_size": 3,
        "training.eval_every": 3,
        "training.checkpoint_every": 2,
        "training.warmup_ratio": 0.0,
        # the base config trains to convergence; these runs are a few fixed steps
        "training.epochs": 0,
        "training.evals_per_epoch": 0,
        "training.patience": 0,
        "training.bucket": 0,
        "training.precision": "fp32",
        "training.tune_threshold": [],
    }
    base.update(extra)
    return base


def write_teacher(folder: Path) -> Path:
    """A small real H store (random blocks) over the toy corpus's node ids."""
    from spacy_kogner.teacher.store import write_store

    ids = ["Disease::1", "Compound::1", "Disease::2", "Compound::2", "Compound::3", "Symptom::1", "Gene::9"]
    rng = np.random.default_rng(0)
    blocks = {
        "Z": rng.normal(size=(7, 8)),
        "Z_prime": rng.normal(size=(7, 4)),
        "Z_double_prime": rng.normal(size=(7, 4)),
    }
    write_store(folder, blocks, ids, ids, [i.split("::")[0] for i in ids], {"test": True})
    return folder
