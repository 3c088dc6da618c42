"""Building, saving and loading the span model; CLI ``init-model``; clear load errors."""

from __future__ import annotations

import json
import subprocess

import pytest
import spacy

from spacy_kogner.pipeline.span_model import ModelLoadError, SpanModel

LOAD_AND_RUN = """
import spacy, sys
nlp = spacy.load(sys.argv[1])
nlp.get_pipe("kogner").configure(threshold=0.0)
text = "BRCA1 mutations cause breast cancer. Aspirin helps. Fever is common."
doc = nlp(text)
assert len(doc.spans["kogner"]) > 0 and len(doc.ents) > 0, "no spans"
texts = [f"Patient {i} had fever and took aspirin." for i in range(100)]
def spans(doc):
    return [(s.start, s.end, s.label_) for s in doc.spans["kogner"]]
one = [spans(nlp(t)) for t in texts]
many = [spans(d) for d in nlp.pipe(texts, batch_size=32)]
assert one == many
print("OK", len(doc.ents))
"""


def test_init_model_cli_then_offline_load(tmp_path, python_exe):
    out = tmp_path / "p"
    subprocess.run(
        [python_exe, "-m", "spacy_kogner", "init-model", str(out), "--labels", "Disease,Chemical"],
        check=True,
        capture_output=True,
    )
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    res = subprocess.run([python_exe, "-c", LOAD_AND_RUN, str(out)], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("OK")


def test_saved_model_does_not_need_the_encoder_folder(span_model, tmp_path):
    span_model.save(tmp_path / "m")
    cfg_file = tmp_path / "m" / "gliner_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["model_name"] = str(tmp_path / "no-such-encoder")
    cfg_file.write_text(json.dumps(cfg))
    loaded = SpanModel.load(tmp_path / "m")
    a = span_model.score_windows([["breast", "cancer"]], ["disease"]).probs
    b = loaded.score_windows([["breast", "cancer"]], ["disease"]).probs
    assert (a - b).abs().max() < 1e-5


def test_gliner_checkpoint_folder_is_a_model_source(span_model, tmp_path):
    span_model.save(tmp_path / "ckpt")
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("kogner", config={"model": str(tmp_path / "ckpt"), "labels": ["Disease"]})
    assert pipe.ensure_model().max_width == span_model.max_width


@pytest.mark.parametrize("damage", ["missing", "no_config", "no_weights", "bad_json", "bad_weights"])
def test_missing_or_corrupt_model_folder(span_model, tmp_path, damage):
    folder = tmp_path / "m"
    if damage != "missing":
        span_model.save(folder)
    weights = next(p for p in folder.glob("*") if p.suffix in (".bin", ".safetensors")) if folder.exists() else None
    if damage == "no_config":
        (folder / "gliner_config.json").unlink()
    elif damage == "no_weights":
        weights.unlink()
    elif damage == "bad_json":
        (folder / "gliner_config.json").write_text("{not json")
    elif damage == "bad_weights":
        weights.write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match=str(folder) if damage != "missing" else "not found|m"):
        if damage == "missing":
            SpanModel.from_source(str(folder))
        else:
            SpanModel.load(folder)


def test_a_saved_pipeline_folder_is_read_as_its_span_model(tmp_path, make_nlp, span_model):
    """A run's model-best (a spaCy pipeline) may be named wherever a GLiNER checkpoint is (init_model,
    pooled_init); a pipeline without exactly one kogner span model says what to pass instead."""
    import torch

    nlp = make_nlp()
    nlp.to_disk(tmp_path / "pipe")
    loaded = SpanModel.from_source(str(tmp_path / "pipe"))
    want, got = span_model.gliner.state_dict(), loaded.gliner.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    spacy.blank("en").to_disk(tmp_path / "blank")
    with pytest.raises(ModelLoadError, match="has 0 kogner span models"):
        SpanModel.from_source(str(tmp_path / "blank"))


def test_corrupt_pipeline_folder_names_what_is_missing(tmp_path, make_nlp):
    nlp = make_nlp()
    nlp.to_disk(tmp_path / "pipe")
    (tmp_path / "pipe" / "kogner" / "kogner.json").unlink()
    with pytest.raises(ModelLoadError, match="kogner.json"):
        spacy.load(tmp_path / "pipe")


def test_spacy_evaluate_cli_scores_the_pipeline(tmp_path, make_nlp, python_exe):
    """`spacy evaluate PIPELINE corpus.spacy` reports ents_p/r/f and per-type scores."""
    from spacy.tokens import DocBin, Span

    nlp = make_nlp(threshold=0.0)
    nlp.to_disk(tmp_path / "pipe")
    gold = nlp.make_doc("Aspirin reduces fever in children .")
    gold.ents = [Span(gold, 0, 1, label="Chemical"), Span(gold, 2, 3, label="Disease")]
    DocBin(docs=[gold]).to_disk(tmp_path / "gold.spacy")
    res = subprocess.run(
        [python_exe, "-m", "spacy", "evaluate", str(tmp_path / "pipe"), str(tmp_path / "gold.spacy"),
         "--output", str(tmp_path / "scores.json")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert {"ents_p", "ents_r", "ents_f", "ents_per_type"} <= set(scores)
