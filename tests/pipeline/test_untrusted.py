"""A pipeline folder, its bytes and its settings are data: what is refused, and how it is named.

Loading a pipeline must never run code it carries (unless the user set ``trust_remote_code``),
never write outside a temporary folder, and blame a bad value on the file and key that hold it.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
import spacy
import srsly

from spacy_kogner.pipeline.component import KognerConfigError, _is_component_file
from spacy_kogner.pipeline.span_model import ModelLoadError, SpanModel

ESCAPE = "escaped"


@pytest.fixture(scope="module")
def component_files(span_model) -> dict[str, bytes]:
    """What ``to_bytes`` of a real component holds (file name → content)."""
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("kogner", config={"labels": ["Disease"]})
    pipe.model = span_model
    return srsly.msgpack_loads(pipe.to_bytes())


@pytest.mark.parametrize(
    "key",
    [
        f"../{ESCAPE}.json",
        "ABSOLUTE",
        f"model/../../{ESCAPE}.json",
        f"model/sub/{ESCAPE}.json",
        f"model/{ESCAPE}.py",
        "model/..",
        f"kogner.json/../{ESCAPE}.json",
    ],
)
def test_from_bytes_refuses_paths_and_code(component_files, tmp_path, monkeypatch, key):
    """One bad name among the real files refuses the whole load, before anything is written."""
    temp_root = tmp_path / "temp"
    temp_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp_root))  # from_bytes unpacks below here
    if key == "ABSOLUTE":
        key = str(tmp_path / "abs" / f"{ESCAPE}.json")
    payload = srsly.msgpack_dumps({**component_files, key: b'{"planted": true}'})
    pipe = spacy.blank("en").add_pipe("kogner")
    with pytest.raises(ModelLoadError, match="never writes"):
        pipe.from_bytes(payload)
    assert not [p for p in tmp_path.rglob(f"{ESCAPE}*")], "a file was written from a refused name"
    assert list(temp_root.iterdir()) == []  # nothing unpacked, nothing left behind


def test_python_modules_are_component_files_only_when_trusted():
    assert not _is_component_file("model/custom.py")
    assert _is_component_file("model/custom.py", trust_remote_code=True)
    for name in ("../custom.py", "model/../custom.py", "model/sub/custom.py", "model/bad-name.py", "custom.py"):
        assert not _is_component_file(name, trust_remote_code=True), name


def plant_code(pipe_dir: Path, marker: Path, inside: bool) -> Path:
    """A module that writes ``marker`` when imported, named by the model's ``encoder_config.auto_map``
    the way transformers resolves it (``_name_or_path`` is where the module file lies)."""
    model_dir = pipe_dir / "kogner" / "model"
    code_dir = model_dir if inside else pipe_dir.parent / "code"
    code_dir.mkdir(exist_ok=True)
    (code_dir / "custom.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('imported')\n"
        "from transformers import BertConfig, BertModel\n"
        "class CustomModel(BertModel):\n"
        "    config_class = BertConfig\n"
    )
    cfg_file = model_dir / "gliner_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["encoder_config"]["auto_map"] = {"AutoModel": "custom.CustomModel"}
    cfg["encoder_config"]["_name_or_path"] = str(code_dir)
    cfg_file.write_text(json.dumps(cfg))
    return code_dir / "custom.py"


@pytest.mark.parametrize("inside", [True, False], ids=["module-in-model-folder", "module-elsewhere"])
def test_spacy_load_does_not_import_code_a_pipeline_names(make_nlp, tmp_path, inside):
    marker = tmp_path / "marker"
    make_nlp().to_disk(tmp_path / "pipe")
    plant_code(tmp_path / "pipe", marker, inside)
    with pytest.raises(ModelLoadError, match="trust_remote_code = true") as err:
        spacy.load(tmp_path / "pipe")
    assert ("custom.py" if inside else "auto_map") in str(err.value)
    assert not marker.exists(), "loading the pipeline imported the module it names"


@pytest.mark.parametrize(
    ("inside", "override"), [(True, False), (False, True)], ids=["module-in-model-folder", "module-elsewhere"]
)
def test_a_pipeline_cannot_grant_itself_trust(make_nlp, tmp_path, inside, override):
    """``spacy.load`` builds the component from the folder's own config.cfg: a trust_remote_code =
    true written there is the author's, not the user's, and must not open the door (also when the
    user passes it too: the two cannot be told apart)."""
    marker = tmp_path / "marker"
    make_nlp().to_disk(tmp_path / "pipe")
    plant_code(tmp_path / "pipe", marker, inside)
    cfg = tmp_path / "pipe" / "config.cfg"
    cfg.write_text(cfg.read_text().replace("trust_remote_code = false", "trust_remote_code = true"))
    assert "trust_remote_code = true" in cfg.read_text()
    config = {"components": {"kogner": {"trust_remote_code": True}}} if override else {}
    with pytest.raises(ModelLoadError, match=f"trust_remote_code is ignored: {cfg} sets it"):
        spacy.load(tmp_path / "pipe", config=config)
    assert not marker.exists(), "a pipeline folder granted itself the right to run its code"


TRUSTED = """
import sys, spacy, srsly
pipe_dir, copy_dir = sys.argv[1], sys.argv[2]
trust = {"components": {"kogner": {"trust_remote_code": True}}}
nlp = spacy.load(pipe_dir, config=trust)
pipe = nlp.get_pipe("kogner")
print(type(pipe.model.gliner.model.token_rep_layer.bert_layer.model).__name__)
assert nlp("Aspirin treats fever").spans["kogner"] is not None
nlp.to_disk(copy_dir)  # the module travels with the saved copy ...
data = pipe.to_bytes()
assert "model/custom.py" in srsly.msgpack_loads(data)  # ... and with its bytes
spacy.blank("en").add_pipe("kogner", config={"trust_remote_code": True}).from_bytes(data)
try:
    spacy.blank("en").add_pipe("kogner").from_bytes(data)
except OSError as err:
    print("untrusted bytes refused:", "trust_remote_code" in str(err))
"""


def test_trust_remote_code_imports_the_module_and_keeps_it(make_nlp, tmp_path, python_exe):
    """The opt-in works offline: the module is imported, used as the encoder, and saved again.
    (Run in a subprocess with its own module cache, so the import does not outlive the test.)"""
    marker = tmp_path / "marker"
    make_nlp().to_disk(tmp_path / "pipe")
    module = plant_code(tmp_path / "pipe", marker, inside=True)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [python_exe, "-c", TRUSTED, str(tmp_path / "pipe"), str(tmp_path / "copy")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker.read_text() == "imported"
    assert proc.stdout.splitlines()[0] == "CustomModel"
    assert "untrusted bytes refused: True" in proc.stdout
    assert (tmp_path / "copy" / "kogner" / "model" / "custom.py").read_bytes() == module.read_bytes()


@pytest.mark.parametrize(("key", "value"), [("max_len", "384"), ("max_width", "twelve"), ("hidden_size", 0)])
def test_a_gliner_config_value_of_the_wrong_type_names_file_and_key(span_model, tmp_path, key, value):
    span_model.save(tmp_path / "m")
    cfg_file = tmp_path / "m" / "gliner_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg[key] = value
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=f"{cfg_file}: '{key}' must be a positive integer, got {value!r}"):
        SpanModel.load(tmp_path / "m")


def test_a_threshold_string_is_blamed_on_its_type(make_nlp, tmp_path):
    nlp = make_nlp()
    pipe = nlp.get_pipe("kogner")
    with pytest.raises(KognerConfigError, match="threshold must be a float, got str '0.5'"):
        pipe.configure(threshold="0.5")
    nlp.to_disk(tmp_path / "pipe")
    cfg_file = tmp_path / "pipe" / "kogner" / "kogner.json"
    cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text()), "threshold": "0.5"}))
    with pytest.raises(ModelLoadError, match=f"{cfg_file}: threshold must be a float, got str '0.5'"):
        spacy.load(tmp_path / "pipe")
