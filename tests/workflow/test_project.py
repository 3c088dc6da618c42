"""The whole ``spacy project run all`` workflow on the ``smoke`` profile, in a copy of the project.

Why a real end-to-end run: the workflow is where the pieces (assets, data, teacher, trainer,
baseline, evaluation, packaging) meet; each command's real signature, every declared output and
the offline install of the packaged wheel can only be checked by running it. Plus fast checks of
``fetch-assets`` (link, verify, fail on a bad checksum) and ``slice-data``.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spacy_kogner.workflow.assets import AssetError, fetch_assets, md5sum
from spacy_kogner.workflow.slices import slice_iob

REPO = Path(__file__).resolve().parents[2]
PROFILE = "smoke"
# "Under 5 minutes on 2 cores", measured as CPU time so a busy shared machine does not fail it:


def _mirror() -> Path | None:
    env = os.environ.get("KOGNER_ASSETS_MIRROR")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for path in candidates:
        path = path if path.is_absolute() else (REPO / path)
        if (path / "ner").is_dir() and (path / "kg").is_dir():
            return path.resolve()
    return None


MIRROR = _mirror()
needs_mirror = pytest.mark.skipif(MIRROR is None, reason="no assets mirror (set KOGNER_ASSETS_MIRROR)")


def _project_files() -> list[str]:
    """Tracked files plus untracked, not ignored ones: what a clean checkout of this tree holds."""
    if (REPO / ".git").exists():
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        return [f for f in out if (REPO / f).is_file()]
    skip = {".venv", ".git", "assets", "corpus", "training", "results", "packages", "build", "dist"}
    return [
        str(p.relative_to(REPO)) for p in REPO.rglob("*") if p.is_file() and not (set(p.relative_to(REPO).parts) & skip)
    ]


def copy_project(dest: Path) -> Path:
    for rel in _project_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    return dest


@needs_mirror
def test_fetch_assets_links_from_mirror_and_rejects_bad_checksums(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    shutil.copy2(REPO / "project.yml", project / "project.yml")
    done = dict((a.dest, what) for a, what in fetch_assets(project, str(MIRROR)))
    assert done["assets/ner/NCBI-disease/test.tsv"] == "linked"
    assert "assets/kg/hetionet/hetionet-v1.0-edges.sif.gz" not in done  # extra, not requested
    linked = project / "assets/ner/NCBI-disease/test.tsv"
    assert linked.is_symlink() and md5sum(linked) == md5sum(MIRROR / "ner/NCBI-disease/test.tsv")
    # A second run is a no-op; a tampered project checksum fails with both hashes named.
    assert all(w == "already linked" for _, w in fetch_assets(project, str(MIRROR)))
    text = (project / "project.yml").read_text(encoding="utf8")
    good = md5sum(MIRROR / "ner/NCBI-disease/test.tsv")
    (project / "project.yml").write_text(text.replace(good, "0" * 32), encoding="utf8")
    with pytest.raises(AssetError, match="Checksum mismatch.*NCBI-disease/test.tsv"):
        list(fetch_assets(project, str(MIRROR)))
    with pytest.raises(AssetError, match="not a folder"):
        list(fetch_assets(project, str(tmp_path / "nowhere")))


def test_slice_iob_keeps_whole_sentences_and_docstarts(tmp_path: Path) -> None:
    src = tmp_path / "train.tsv"
    src.write_text("-DOCSTART-\tO\n\nA\tB-X\nb\tO\n\nC\tO\n\nD\tB-X\n", encoding="utf8")
    n = slice_iob(src, tmp_path / "out" / "train.tsv", 2)
    assert n == 2
    assert (tmp_path / "out" / "train.tsv").read_text(encoding="utf8") == "-DOCSTART-\tO\n\nA\tB-X\nb\tO\n\nC\tO\n\n"
    assert slice_iob(src, tmp_path / "all.tsv", 0) == -1 and (tmp_path / "all.tsv").is_symlink()


@needs_mirror
def test_smoke_profile_runs_the_whole_workflow(tmp_path: Path) -> None:
    from weasel.util import load_project_config

    project = copy_project(tmp_path / "project")
    env = dict(os.environ, KOGNER_ASSETS_MIRROR=str(MIRROR), PYTHONPATH=str(project))

    def run_workflow(name: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "spacy", "project", "run", name, str(project), "--vars.profile", PROFILE],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
        )

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = run_workflow("all")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"smoke workflow: wall {wall:.0f} s, CPU {cpu:.0f} s")  # reported, not asserted: boxes differ
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]

    config = load_project_config(project, overrides={"vars.profile": PROFILE})
    commands = {c["name"]: c for c in config["commands"]}
    missing = [
        f"{name}: {out}"
        for name in config["workflows"]["all"]
        for out in commands[name].get("outputs", [])
        if not (project / out).exists()
    ]
    assert not missing, f"declared outputs not produced: {missing}"

    rows = json.loads((project / "results/results.json").read_text(encoding="utf8"))["rows"]
    assert {r["protocol"] for r in rows} == {"in-domain", "paper"}
    assert {r["system"] for r in rows} == {"KoGNER", "spaCy CNN ner"}
    assert all(r["profile"] == PROFILE and r["steps"] is not None for r in rows)

    # the spaCy transformer baseline (workflow `trf`, after `all`) joins the same results table
    trf = run_workflow("trf")
    assert trf.returncode == 0, trf.stdout[-4000:] + trf.stderr[-4000:]
    rows = json.loads((project / "results/results.json").read_text(encoding="utf8"))["rows"]
    assert {r["system"] for r in rows} == {"KoGNER", "spaCy CNN ner", "spaCy trf+ner"}
    trf_rows = [r for r in rows if r["system"] == "spaCy trf+ner"]
    assert [(r["protocol"], r["train"]) for r in trf_rows] == [("in-domain", config["vars"]["indomain"])]

    # the in-domain study: the student and both spaCy baselines on the same slice, one summary
    study = run_workflow("indomain")
    assert study.returncode == 0, study.stdout[-4000:] + study.stderr[-4000:]
    table = json.loads((project / f"results/{PROFILE}/indomain.json").read_text(encoding="utf8"))
    assert set(table) == {"NCBI-disease"} and {"kogner", "spacy_cnn", "spacy_trf"} <= set(table["NCBI-disease"])
    assert set(table["NCBI-disease"]["train_minutes"]) == {"kogner", "spacy_cnn", "spacy_trf"}
    assert (project / f"results/{PROFILE}/indomain.md").is_file()
    # --summary-only trains nothing and the table names the run it lacks
    (project / f"results/{PROFILE}/indomain/NCBI-disease__spacy_trf.json").unlink()
    summary = subprocess.run(
        [sys.executable, "-m", "spacy_kogner", "indomain-study", "configs/indomain.cfg", "--profile", PROFILE,
         "--summary-only", "--paths.training", f"training/{PROFILE}/indomain", "--paths.results", f"results/{PROFILE}",
         "--paths.corpora", f"corpus/{PROFILE}/indomain", "--paths.sources", f"corpus/{PROFILE}/sources/ner"],
        cwd=project, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert summary.returncode == 0, summary.stderr[-3000:]
    assert "spacy_trf" not in json.loads((project / f"results/{PROFILE}/indomain.json").read_text())["NCBI-disease"]
    md = (project / f"results/{PROFILE}/indomain.md").read_text(encoding="utf8")
    assert "Not run (no finished run summary and test score): NCBI-disease / " in md

    report = json.loads((project / f"packages/{PROFILE}/package.json").read_text(encoding="utf8"))
    assert report["wheel"].endswith(".whl")
    assert "kogner" in report["check"]["pipeline"] and report["check"]["spans"] is not None
    # The wheel, installed offline in the fresh venv, loads and annotates in a new process.
    venv_python = project / f"packages/{PROFILE}/venv-check/bin/python"
    package = f"en_{config['vars']['package_name']}"
    code = (
        "import spacy, sys; nlp = spacy.load(sys.argv[1]); doc = nlp(sys.argv[2]); "
        "print(nlp.pipe_names, 'kogner' in doc.spans, len(doc))"
    )
    out = subprocess.run(
        [str(venv_python), "-c", code, package, "Aspirin reduces the risk of colorectal cancer."],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "True" in out.stdout
    shutil.rmtree(project / "training", ignore_errors=True)  # hundreds of MB of weights


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
def test_every_profile_overrides_only_keys_its_base_has(profile: str) -> None:
    """A profile file holds only the values it changes; each key must exist in its step's base
    config (``load_config`` refuses it otherwise), so a profile can never drift from its base."""
    from weasel.util import load_project_config

    from spacy_kogner.config import load_config

    config = load_project_config(REPO, overrides={"vars.profile": profile})
    used = {
        dep
        for cmd in config["commands"]
        for dep in cmd.get("deps", [])
        if dep.startswith("configs/") and dep.endswith(".cfg")
    }
    assert used, "project.yml names no config files"
    missing = sorted(p for p in used if not (REPO / p).is_file())
    assert not missing, f"profile {profile} needs {missing}"
    assert (REPO / "configs" / "profiles" / profile).is_dir()
    for override in sorted((REPO / "configs" / "profiles" / profile).glob("*.cfg")):
        base = REPO / "configs" / override.name
        assert base.is_file(), f"{override} has no base config {base}"
        load_config(base, profile=profile)  # raises on a key the base lacks


def test_a_profile_key_the_base_lacks_is_refused(tmp_path: Path) -> None:
    from spacy_kogner.config import ConfigError, load_config

    (tmp_path / "step.cfg").write_text("[training]\nsteps = 10\n")
    (tmp_path / "profiles" / "tiny").mkdir(parents=True)
    (tmp_path / "profiles" / "tiny" / "step.cfg").write_text("[training]\nstep = 2\n")
    with pytest.raises(ConfigError, match="Unknown config key 'training.step'"):
        load_config(tmp_path / "step.cfg", profile="tiny")
    (tmp_path / "profiles" / "tiny" / "step.cfg").write_text("[training]\nsteps = 2\n")
    assert load_config(tmp_path / "step.cfg", profile="tiny")["training"]["steps"] == 2
    assert load_config(tmp_path / "step.cfg", {"training.steps": 3}, profile="tiny")["training"]["steps"] == 3
    with pytest.raises(ConfigError, match="Unknown profile 'nope'"):
        load_config(tmp_path / "step.cfg", profile="nope")
