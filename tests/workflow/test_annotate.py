"""``annotate`` on real inputs with the real pipe, Ray and process pools (no mocks).

The corpus: 40 "abstracts" of 4 NCBI-disease test sentences each, annotated by the session's
untrained span model (seeded) saved as a pipeline, at a threshold where entities appear. Shards of
6 documents in chunks of 4 give multi-chunk shards and a short last shard.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import DATA, REPO

NCBI_TEST = DATA / "ner" / "NCBI-disease" / "test.tsv"
pytestmark = pytest.mark.skipif(not NCBI_TEST.is_file(), reason="needs the shared data mirror")

LABELS = ["Disease", "Chemical"]
THRESHOLD = 0.4995  # the seeded untrained head scores around 0.5: a few spans a document pass
SHARD_SIZE, BATCH_SIZE = 6, 4


@pytest.fixture(scope="module")
def abstracts() -> list[str]:
    from spacy_kogner.data.readers import read_corpus

    sentences = read_corpus(NCBI_TEST)
    return [" ".join(" ".join(s.tokens) for s in sentences[i * 4 : (i + 1) * 4]) for i in range(40)]


@pytest.fixture(scope="module")
def pipeline_dir(span_model, tmp_path_factory) -> Path:
    """What ``make_nlp(labels=LABELS, threshold=THRESHOLD)`` builds, saved (module scope)."""
    import spacy

    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("kogner", config={"labels": LABELS, "threshold": THRESHOLD})
    pipe.model = span_model
    path = tmp_path_factory.mktemp("annotate") / "pipeline"
    nlp.to_disk(path)
    return path


@pytest.fixture(scope="module")
def corpus(abstracts, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("annotate") / "abstracts.jsonl"
    path.write_text("".join(json.dumps({"id": f"doc{i}", "text": t}) + "\n" for i, t in enumerate(abstracts)))
    return path


def _settings(**kw):
    from spacy_kogner.workflow.annotate import AnnotateSettings

    return AnnotateSettings(**{"shard_size": SHARD_SIZE, "batch_size": BATCH_SIZE, **kw})


def _annotate(pipeline_dir, corpus, out, engine="local", settings=None, **options):
    from spacy_kogner.workflow.annotate import EngineOptions, annotate_corpus

    return annotate_corpus(
        str(pipeline_dir), corpus, out, settings or _settings(), EngineOptions(engine=engine, **options), progress=False
    )


@pytest.fixture(scope="module")
def reference(pipeline_dir, corpus, tmp_path_factory) -> Path:
    """The uninterrupted local run every other run is compared with."""
    out = tmp_path_factory.mktemp("annotate") / "local"
    _annotate(pipeline_dir, corpus, out)
    return out


def _shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("entities-*.parquet"))}


def _assert_same_output(out: Path, reference: Path) -> None:
    ours, theirs = _shard_bytes(out), _shard_bytes(reference)
    assert list(ours) == list(theirs)
    different = [name for name in ours if ours[name] != theirs[name]]
    assert not different, f"shards differ from the reference: {different}"
    m_out, m_ref = (json.loads((d / "manifest.json").read_text()) for d in (out, reference))
    assert m_out["shards"] == m_ref["shards"] and m_out["totals"] == m_ref["totals"] and m_out["complete"]


def test_local_run_writes_the_pipes_entities_sorted_with_scores(reference, pipeline_dir, abstracts):
    """The table is what ``nlp.pipe`` puts in ``doc.ents`` (same chunks), with the span group's scores."""
    import pyarrow.parquet as pq
    import spacy

    from spacy_kogner.workflow.annotate.shards import read_entities

    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["complete"] and len(manifest["shards"]) == 7  # 40 documents / 6
    assert [s["docs"] for s in manifest["shards"].values()] == [6] * 6 + [4]
    assert manifest["totals"] == {
        "docs": 40,
        "rows": manifest["totals"]["rows"],
        "bad": 0,
        "shards": 7,
        "input_docs": 40,
    }
    table = read_entities(reference)
    rows = table.to_pylist()
    assert 20 < len(rows) == manifest["totals"]["rows"]
    assert sum(pq.read_metadata(reference / s["file"]).num_rows for s in manifest["shards"].values()) == len(rows)
    keys = [(r["doc_index"], r["start"], r["end"], r["label"]) for r in rows]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)

    nlp = spacy.load(pipeline_dir)
    expected = []
    checked = 2 * SHARD_SIZE  # the pipe run again on the first two shards' chunks
    for shard in range(0, checked, SHARD_SIZE):
        texts = abstracts[shard : shard + SHARD_SIZE]
        for c in range(0, len(texts), BATCH_SIZE):
            for i, doc in enumerate(nlp.pipe(texts[c : c + BATCH_SIZE], batch_size=BATCH_SIZE)):
                group = doc.spans["kogner"]
                scores = {
                    (s.start_char, s.end_char, s.label_): sc for s, sc in zip(group, group.attrs["scores"], strict=True)
                }
                for ent in doc.ents:
                    key = (ent.start_char, ent.end_char, ent.label_)
                    expected.append((shard + c + i, *key, ent.text, pytest.approx(scores[key], abs=1e-6)))
    got = [
        (r["doc_index"], r["start"], r["end"], r["label"], r["text"], r["score"])
        for r in rows
        if r["doc_index"] < checked
    ]
    assert sorted(got, key=lambda x: x[:4]) == sorted(expected, key=lambda x: x[:4])
    for r in rows:
        assert abstracts[r["doc_index"]][r["start"] : r["end"]] == r["text"]
        assert r["doc_id"] == f"doc{r['doc_index']}" and r["kb_id"] == "" and r["score"] >= THRESHOLD - 1e-6
    assert {r["label"] for r in rows} <= set(LABELS)


def test_processes_engine_writes_the_same_bytes(reference, pipeline_dir, corpus, tmp_path):
    """Two spawned workers, each loading the pipeline from MODEL: byte-identical shards."""
    out = tmp_path / "processes"
    manifest = _annotate(pipeline_dir, corpus, out, engine="processes", workers=2)
    assert manifest["runs"][-1]["engine"] == "processes" and manifest["runs"][-1]["workers"] == 2
    _assert_same_output(out, reference)


def test_ray_engine_writes_the_same_bytes(reference, pipeline_dir, corpus, tmp_path):
    """A local Ray (2 CPUs, logs in a temp folder) and a Ray Data actor pool of 2: byte-identical shards."""
    ray = pytest.importorskip("ray")
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=ray_tmp, log_to_driver=False)
    try:
        out = tmp_path / "ray"
        manifest = _annotate(pipeline_dir, corpus, out, engine="ray", actors=2)
        assert ray.is_initialized()  # the engine used the running cluster and left it running
        run = manifest["runs"][-1]
        assert run["engine"] == "ray" and run["actors"] == 2 and run["window_chunks"] == 512
        _assert_same_output(out, reference)
    finally:
        ray.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "spacy_kogner", "annotate", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def test_resume_after_sigkill_gives_the_uninterrupted_output(reference, pipeline_dir, corpus, tmp_path):
    """SIGKILL the CLI once a shard is listed, run again: the same bytes, no shard annotated
    twice, no temp file left."""
    out = tmp_path / "killed"
    args = _cli(str(pipeline_dir), str(corpus), str(out), "--shard-size", str(SHARD_SIZE))
    args += ["--batch-size", str(BATCH_SIZE), "--no-progress"]
    proc = subprocess.Popen(args, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    manifest_path = out / "manifest.json"
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if manifest_path.is_file() and json.loads(manifest_path.read_text())["shards"]:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    killed = json.loads(manifest_path.read_text())
    assert not killed["complete"] and 1 <= len(killed["shards"]) < 7
    assert killed["runs"] == []  # the killed run had no chance to record itself
    done_docs = killed["totals"]["docs"]

    messages = []  # the same run again (in this process: the CLI is a thin layer over annotate_corpus)
    from spacy_kogner.workflow.annotate import EngineOptions, annotate_corpus

    manifest = annotate_corpus(
        str(pipeline_dir), corpus, out, _settings(), EngineOptions(), progress=False, log=messages.append
    )
    assert f"resuming, {len(killed['shards'])} shards ({done_docs} documents) done" in messages[0]
    assert [r["docs"] for r in manifest["runs"]] == [40 - done_docs]  # nothing done twice
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    _assert_same_output(out, reference)


def _pubtator_and_bioc(tmp_path: Path) -> tuple[Path, Path, list[tuple[str, str, str]]]:
    """A PubTator file and a BioC XML file of the same two abstracts, with one annotation each:
    (id, text, mention) where the annotation's offsets must index ``mention`` in our text."""
    title1, abstract1 = "Aspirin and colorectal cancer.", "Aspirin lowers the risk of colorectal cancer in adults."
    title2, abstract2 = "Cystic fibrosis carriers.", "Carriers of cystic fibrosis were studied."
    text1, text2 = f"{title1} {abstract1}", f"{title2} {abstract2}"
    m1 = text1.index("colorectal cancer", len(title1))  # in the abstract: offset includes the title
    m2 = text2.index("cystic fibrosis")
    pubtator = tmp_path / "abstracts.pubtator"
    pubtator.write_text(
        f"111|t|{title1}\n111|a|{abstract1}\n111\t{m1}\t{m1 + 17}\tcolorectal cancer\tDisease\tD015179\n\n"
        f"222|t|{title2}\n222|a|{abstract2}\n222\t{m2}\t{m2 + 15}\tcystic fibrosis\tDisease\tD003550\n"
    )
    passages = ""
    for doc_id, title, abstract, mention in (("111", title1, abstract1, m1), ("222", title2, abstract2, m2)):
        passages += (
            f"<document><id>{doc_id}</id>"
            f"<passage><infon key='type'>title</infon><offset>0</offset><text>{title}</text></passage>"
            f"<passage><infon key='type'>abstract</infon><offset>{len(title) + 1}</offset><text>{abstract}</text>"
            f"<annotation id='1'><location offset='{mention}' length='5'/><text>x</text></annotation></passage>"
            "</document>"
        )
    bioc = tmp_path / "abstracts.xml"
    bioc.write_text(
        "<?xml version='1.0' encoding='UTF-8'?><!DOCTYPE collection SYSTEM 'BioC.dtd'>"
        f"<collection><source>test</source><date>2024</date><key>k</key>{passages}</collection>"
    )
    return pubtator, bioc, [("111", text1, "colorectal cancer"), ("222", text2, "cystic fibrosis")]


def test_every_input_format_reads_the_same_documents(tmp_path):
    """text, JSONL, Parquet, PubTator and BioC XML (and gzip, and --format over the suffix): ids,
    texts, offsets that match the source's own offsets, and a resume start inside the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from spacy_kogner.workflow.annotate.inputs import detect_format, input_identity, iter_records

    docs = [("a", "Aspirin reduces the risk of colorectal cancer."), ("b", "Café au lait spots in NF1 ✓")]
    docs += [("c", "A third document."), ("d", "And a fourth, last one.")]
    text = tmp_path / "docs.txt"
    text.write_text("".join(t + "\n" for _, t in docs), encoding="utf8")
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in docs), encoding="utf8")
    parquet = tmp_path / "docs.parquet"
    table = pa.table({"id": [i for i, _ in docs], "text": [t for _, t in docs]})
    pq.write_table(table, parquet, row_group_size=1)  # four row groups: a resume skips whole groups
    gz = tmp_path / "docs.jsonl.gz"
    gz.write_bytes(gzip.compress(jsonl.read_bytes()))

    def read(path, fmt="auto", start=0):
        return [(r.id, r.text) for r in iter_records(path, detect_format(path, fmt), start=start)]

    by_line = [(str(n), t) for n, (_, t) in enumerate(docs, 1)]
    assert read(text) == by_line
    assert read(jsonl) == read(parquet) == read(gz) == docs
    for path, expected in ((text, by_line), (jsonl, docs), (parquet, docs), (gz, docs)):
        assert read(path, start=2) == expected[2:]
        assert [r.position for r in iter_records(path, detect_format(path), start=2)] == [2, 3]
    assert input_identity(text, "text")["records"] == input_identity(parquet, "parquet")["records"] == 4

    pubtator, bioc, expected = _pubtator_and_bioc(tmp_path)
    for path in (pubtator, bioc):
        records = list(iter_records(path, detect_format(path)))
        assert [(r.id, r.text) for r in records] == [(i, t) for i, t, _ in expected]
        assert [r.id for r in iter_records(path, detect_format(path), start=1)] == ["222"]
    import bioc as bioc_lib

    with open(pubtator) as handle:  # the file's own annotation offsets index our joined text
        for doc, (_, ours, mention) in zip(bioc_lib.pubtator.load(handle), expected, strict=True):
            ann = doc.annotations[0]
            assert ours[ann.start : ann.end] == mention == ann.text
    collection = bioc_lib.biocxml.load(open(bioc))
    for doc, (_, ours, mention) in zip(collection.documents, expected, strict=True):
        loc = doc.passages[1].annotations[0].locations[0]
        assert ours[loc.offset : loc.offset + len(mention)] == mention
    renamed = tmp_path / "abstracts.txt"  # PubTator under a .txt name: --format pubtator wins
    renamed.write_bytes(pubtator.read_bytes())
    assert read(renamed, "pubtator") == [(i, t) for i, t, _ in expected]
    assert len(read(renamed)) == 7  # read as plain text it is seven lines, the blank one included


def test_bad_documents_are_counted_per_shard_and_listed_not_fatal(pipeline_dir, abstracts, tmp_path):
    import pyarrow.parquet as pq

    good = "Ataxia telangiectasia is a recessive multi system disorder caused by mutations in the ATM gene."
    lines = [
        json.dumps({"id": "ok1", "text": good}).encode(),
        b'{"id": "broken", "text": "unterminated',  # malformed JSON
        json.dumps({"id": "none"}).encode(),  # a record without text
        json.dumps({"id": "null", "text": None}).encode(),
        json.dumps({"id": 7, "text": 42}).encode(),  # text not a string
        json.dumps({"id": "empty", "text": ""}).encode(),
        json.dumps({"id": "blank", "text": " \t "}).encode(),  # shard 1 from here
        json.dumps({"id": "long", "text": "x " * 200}).encode(),  # over --max-chars 300
        b'{"id": "latin1", "text": "caf\xe9"}',  # undecodable bytes
        b"",  # a blank line
        b"[1, 2]",  # JSON, but not an object
        json.dumps({"id": "ok2", "text": good}).encode(),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out"
    manifest = _annotate(pipeline_dir, path, out, settings=_settings(max_chars=300))
    assert manifest["complete"] and manifest["totals"]["docs"] == 12 and manifest["totals"]["bad"] == 10
    shard0, shard1 = manifest["shards"]["0"], manifest["shards"]["1"]
    assert shard0["bad"] == 5 and shard0["bad_reasons"] == {"empty": 1, "malformed": 1, "no_text": 2, "not_text": 1}
    assert shard1["bad"] == 5 and shard1["bad_reasons"] == {
        "malformed": 2,
        "too_long": 1,
        "undecodable": 1,
        "whitespace": 1,
    }
    listed = [
        json.loads(x) for f in ("bad-000000.jsonl", "bad-000001.jsonl") for x in (out / f).read_text().split("\n") if x
    ]
    assert [(b["doc_index"], b["doc_id"], b["reason"]) for b in listed] == [
        (1, "2", "malformed"),
        (2, "none", "no_text"),
        (3, "null", "no_text"),
        (4, "7", "not_text"),
        (5, "empty", "empty"),
        (6, "blank", "whitespace"),
        (7, "long", "too_long"),
        (8, "9", "undecodable"),
        (9, "10", "malformed"),
        (10, "11", "malformed"),
    ]
    assert "400 characters > --max-chars 300" in listed[6]["detail"]
    rows = (
        pq.read_table(out / "entities-000000.parquet").to_pylist()
        + pq.read_table(out / "entities-000001.parquet").to_pylist()
    )
    assert rows and {(r["doc_index"], r["doc_id"]) for r in rows} == {(0, "ok1"), (11, "ok2")}
    ok1 = [(r["start"], r["end"], r["label"]) for r in rows if r["doc_id"] == "ok1"]
    assert ok1 == [(r["start"], r["end"], r["label"]) for r in rows if r["doc_id"] == "ok2"]  # same text, same entities

    # Plain text: an empty line and a non-UTF-8 line are bad; a huge line (20 abstracts, about nine
    # windows of the pipe) is annotated to its end, not skipped.
    huge = " ".join(abstracts[:20])
    text = tmp_path / "bad.txt"
    text.write_bytes(good.encode() + b"\n\n\xff\xfe\n" + huge.encode() + b"\n")
    out = tmp_path / "out-text"
    manifest = _annotate(pipeline_dir, text, out)
    assert manifest["totals"]["docs"] == 4 and manifest["shards"]["0"]["bad_reasons"] == {"empty": 1, "undecodable": 1}
    starts = [r["start"] for r in pq.read_table(out / "entities-000000.parquet").to_pylist() if r["doc_id"] == "4"]
    assert len(huge) > 10_000 and starts and max(starts) > len(" ".join(abstracts[:16]))


def test_refuses_to_resume_into_a_folder_of_another_run(pipeline_dir, tmp_path):
    """Another setting (CLI: one-line error, nothing touched), another input, a foreign folder;
    --overwrite starts over."""
    from spacy_kogner.workflow.annotate import AnnotateError

    path = tmp_path / "two.txt"
    path.write_text("Cystic fibrosis is a genetic disorder.\nAspirin reduces colorectal cancer risk.\n")
    out = tmp_path / "out"
    _annotate(pipeline_dir, path, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    args = _cli(str(pipeline_dir), str(path), str(out), "--shard-size", str(SHARD_SIZE), "--batch-size", "8")
    proc = subprocess.run(args, env=_env(), capture_output=True, text=True)
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert "another input/model/settings" in line and "settings.batch_size" in line
    assert "new OUTPUT_DIR" in line and "--overwrite" in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    path.write_text(path.read_text() + "A third line.\n")  # the same file, edited in place
    with pytest.raises(AnnotateError, match=r"differs: input\.sha256, input\.size"):
        _annotate(pipeline_dir, path, out)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.md").write_text("mine")
    with pytest.raises(AnnotateError, match="holds no manifest.json"):
        _annotate(pipeline_dir, path, foreign)

    from spacy_kogner.workflow.annotate import EngineOptions, annotate_corpus

    manifest = annotate_corpus(
        str(pipeline_dir), path, out, _settings(), EngineOptions(), overwrite=True, progress=False
    )
    assert manifest["complete"] and manifest["totals"]["docs"] == 3 and len(manifest["runs"]) == 1


BLOCK_RAY = """
import builtins, sys
real_import = builtins.__import__
def guarded(name, *args, **kwargs):
    if name == "ray" or name.startswith("ray."):
        raise ImportError("No module named 'ray'")
    return real_import(name, *args, **kwargs)
builtins.__import__ = guarded
from spacy_kogner.cli import app
sys.argv = ["spacy_kogner", "annotate", *sys.argv[1:]]
app()
"""


def test_ray_engine_without_ray_says_what_to_install(pipeline_dir, tmp_path, python_exe):
    path = tmp_path / "one.txt"
    path.write_text("Cystic fibrosis.\n")
    args = [str(pipeline_dir), str(path), str(tmp_path / "out"), "--engine", "ray"]
    proc = subprocess.run([python_exe, "-c", BLOCK_RAY, *args], capture_output=True, text=True, env=_env())
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert "pip install 'spacy-kogner[ray]'" in line
    assert not (tmp_path / "out").exists()


def test_pipeline_pickles_into_a_worker_unchanged(pipeline_dir, abstracts):
    """spaCy's ``nlp.pipe(n_process=N)`` pickles the pipeline into its workers: a pickled copy
    annotates exactly as the original (the processes engine loads from MODEL instead)."""
    import spacy

    nlp = spacy.load(pipeline_dir)
    copy = pickle.loads(pickle.dumps(nlp))
    texts = abstracts[:4]

    def entities(pipeline):
        out = []
        for doc in pipeline.pipe(texts, batch_size=4):
            group = doc.spans["kogner"]
            out.append(([(e.start_char, e.end_char, e.label_) for e in doc.ents], list(group.attrs["scores"])))
        return out

    assert entities(copy) == entities(nlp) and any(ents for ents, _ in entities(nlp))


@pytest.mark.slow
def test_ray_run_killed_midway_resumes_to_the_same_bytes(reference, pipeline_dir, corpus, tmp_path):
    """The CLI on its own local Ray, windows of 3 chunks (several Ray Data runs), SIGKILLed once a
    shard is listed, then run again on Ray: the reference bytes."""
    pytest.importorskip("ray")
    out = tmp_path / "ray-killed"
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    args = _cli(
        str(pipeline_dir), str(corpus), str(out), "--shard-size", str(SHARD_SIZE), "--batch-size", str(BATCH_SIZE)
    )
    args += ["--engine", "ray", "--actors", "2", "--ray-window", "3", "--ray-temp-dir", ray_tmp, "--no-progress"]
    proc = subprocess.Popen(args, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    manifest_path = out / "manifest.json"
    try:
        deadline = time.time() + 400
        while time.time() < deadline and proc.poll() is None:
            if manifest_path.is_file() and json.loads(manifest_path.read_text())["shards"]:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        # A SIGKILLed driver can leave Ray's agents behind: end what this test's session started.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    killed = json.loads(manifest_path.read_text())
    assert not killed["complete"] and len(killed["shards"]) < 7
    resumed = subprocess.run(args, env=_env(), capture_output=True, text=True, start_new_session=True)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(manifest_path.read_text())["runs"][-1]["docs"] == 40 - killed["totals"]["docs"]
    _assert_same_output(out, reference)
