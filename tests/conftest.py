"""Shared fixtures: one real GLiNER span model on the shipped MiniLM encoder per test session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KOGNER_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data"


@pytest.fixture(scope="session")
def span_model():
    import torch

    from spacy_kogner.pipeline.span_model import SpanModel

    torch.manual_seed(0)  # the untrained head is random: seed it so that test runs are repeatable
    return SpanModel.build("default", max_width=12)


@pytest.fixture()
def make_nlp(span_model):
    """A blank English pipeline with a ``kogner`` pipe sharing the session's model."""
    import spacy

    def factory(**config):
        nlp = spacy.blank("en")
        config.setdefault("labels", ["Disease", "Chemical"])
        pipe = nlp.add_pipe("kogner", config=config)
        pipe.model = span_model
        return nlp

    return factory


@pytest.fixture(scope="session")
def python_exe() -> str:
    return sys.executable
