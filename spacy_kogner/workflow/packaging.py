"""``spacy package`` a trained pipeline into a wheel, then prove the wheel installs and annotates.

Why more than ``spacy package --build wheel``: that runs ``python -m build`` with build isolation,
which downloads setuptools from the index on every build. Here the package folder is made by
``spacy package --build none`` and the wheel by ``python -m build --wheel --no-isolation`` with the
setuptools already installed, so packaging works offline.

The check installs the wheel into a *fresh* virtual environment with ``pip --no-index
--find-links DIST`` (no network at all). Heavy dependencies (torch, spaCy, gliner, spacy-kogner)
are not re-downloaded: the fresh venv sees the current environment's site-packages through a
``.pth`` file (the same effect as ``--system-site-packages``, but for a venv parent), so pip
resolves the wheel's requirements (``spacy-kogner``, ``spacy``) against them. Then a new process
in that venv runs ``spacy.load("<package name>")`` on a text and must find entities' spans set.
"""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

CHECK_SCRIPT = """
import json, sys, spacy
nlp = spacy.load(sys.argv[1])
doc = nlp(sys.argv[2])
spans = {k: [(s.text, s.label_) for s in g] for k, g in doc.spans.items()}
print(json.dumps({"pipeline": nlp.pipe_names, "ents": [(e.text, e.label_) for e in doc.ents],
                  "spans": spans, "n_tokens": len(doc), "meta_name": nlp.meta.get("name"),
                  "requirements": nlp.meta.get("requirements", []),
                  "file": spacy.util.get_package_path(sys.argv[1]).as_posix()}))
"""


class PackagingError(RuntimeError):
    """A packaging or install-check step that failed, with the command and its output."""


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise PackagingError(f"Command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def build_wheel(pipeline: Path, out_dir: Path, name: str, version: str) -> Path:
    """``spacy package`` (no build) + an offline ``python -m build --wheel --no-isolation``."""
    nlp_meta = json.loads((pipeline / "meta.json").read_text(encoding="utf8"))
    lang = nlp_meta.get("lang", "en")
    out_dir.mkdir(parents=True, exist_ok=True)
    package_dir = out_dir / f"{lang}_{name}-{version}"
    if package_dir.exists():
        shutil.rmtree(package_dir)
    _run(
        [
            sys.executable,
            "-m",
            "spacy",
            "package",
            str(pipeline),
            str(out_dir),
            "--name",
            name,
            "--version",
            version,
            "--build",
            "none",
            "--force",
        ]
    )
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "."], cwd=package_dir)
    wheels = sorted((package_dir / "dist").glob("*.whl"))
    if not wheels:
        raise PackagingError(f"No wheel was built in {package_dir / 'dist'}")
    return wheels[-1]


def check_install(wheel: Path, package: str, venv_dir: Path, text: str) -> dict[str, Any]:
    """Install the wheel offline into a fresh venv layered over this one; load and annotate there."""
    if venv_dir.exists():
        shutil.rmtree(venv_dir)
    # No pip of its own: its bundled (older) setuptools would shadow the parent's and fail the resolve;
    # the parent's pip, seen through the .pth below, installs into this venv's own prefix.
    venv.EnvBuilder(with_pip=False, clear=True).create(venv_dir)
    python = venv_dir / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip()
    # addsitedir (not a bare path) so the parent's own .pth files, e.g. editable installs, apply too.
    parents = [p for p in site.getsitepackages() if Path(p).is_dir()]
    lines = [f"import site; site.addsitedir({p!r})" for p in parents]
    (Path(purelib) / "_kogner_parent_env.pth").write_text("\n".join(lines) + "\n", encoding="utf8")
    _run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--find-links",
            str(wheel.parent),
            "--disable-pip-version-check",
            package,
        ]
    )
    out = _run([str(python), "-c", CHECK_SCRIPT, package, text])
    result = json.loads(out.strip().splitlines()[-1])
    if not result["file"].startswith(str(venv_dir.resolve())) and not result["file"].startswith(str(venv_dir)):
        raise PackagingError(f"{package} was loaded from {result['file']}, not from the fresh venv {venv_dir}")
    if not result["spans"] and not result["ents"] and "kogner" in result["pipeline"]:
        raise PackagingError(f"{package} loaded but set no doc.spans/doc.ents on {text!r}: {result}")
    return result
