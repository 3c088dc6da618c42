"""``fetch-assets`` on small throw-away projects: a ``dest`` outside ``assets/`` and a failed download.

No network is needed: ``.invalid`` host names never resolve (RFC 6761), online or not.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from spacy_kogner.workflow.assets import AssetError, fetch_assets, md5sum

REPO = Path(__file__).resolve().parents[2]
UNRESOLVABLE = "http://no-such-host.invalid/x"


def write_project(folder: Path, dest: str, checksum: str, url: str = UNRESOLVABLE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "project.yml").write_text(
        f'title: "assets test"\nassets:\n  - dest: "{dest}"\n    url: "{url}"\n    checksum: "{checksum}"\n',
        encoding="utf8",
    )
    return folder


@pytest.mark.parametrize("dest", ["assets/../escaped.txt", "assets/sub/../../escaped.txt", "assets/.."])
def test_a_dest_that_leaves_assets_is_refused(tmp_path, dest):
    """The mirror holds the file the dest points at, with the declared checksum: before the check
    it was linked to ``project/escaped.txt``, outside ``assets/``."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    source = tmp_path / "escaped.txt"  # = mirror/../escaped.txt
    source.write_text("outside\n")
    project = write_project(tmp_path / "project", dest, md5sum(source))
    with pytest.raises(AssetError, match="leaves 'assets/'"):
        list(fetch_assets(project, str(mirror)))
    assert not (project / "escaped.txt").exists() and not (project / "escaped.txt").is_symlink()
    assert [p.name for p in project.iterdir()] == ["project.yml"]


def test_a_failed_download_is_one_line_naming_url_and_mirror(tmp_path, python_exe):
    project = write_project(tmp_path / "project", "assets/x.txt", "0" * 32)
    env = {k: v for k, v in os.environ.items() if k != "KOGNER_ASSETS_MIRROR"}
    proc = subprocess.run(
        [python_exe, "-m", "spacy_kogner", "fetch-assets", str(project)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, proc.stderr
    line = errors[0]
    assert "download failed: assets/x.txt" in line and UNRESOLVABLE in line
    assert "KOGNER_ASSETS_MIRROR" in line and "--mirror" in line
