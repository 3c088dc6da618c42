"""Fetch the project's assets from a local mirror, or from upstream through ``spacy project assets``.

Why a command of our own: ``spacy project assets`` only downloads from each asset's ``url`` and,
on a checksum mismatch, prints an error but still exits 0. Offline machines have a read-only
mirror of the same files (``KOGNER_ASSETS_MIRROR``), so this command

* with a mirror: links (or copies) ``MIRROR/<path>`` to ``assets/<path>`` for every asset whose
  ``dest`` is ``assets/<path>`` — the mirror's layout is the assets folder's layout — and checks
  each file's md5 against the ``checksum`` declared in ``project.yml``;
* without one: downloads each file with ``spacy project assets``' own fetcher, then checks the
  same md5s; a failed download is one line naming the file, the URL and the mirror setting;

and in both cases exits non-zero, naming the file and both hashes, when a checksum differs.
Every ``dest`` must be a file under ``assets/``: a ``project.yml`` (or a ``--vars`` override) with
``assets/../x`` is refused before anything is linked or downloaded.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

MIRROR_ENV = "KOGNER_ASSETS_MIRROR"
ASSETS_PREFIX = "assets/"
_CHUNK = 1 << 20


class AssetError(RuntimeError):
    """An asset that is missing or whose content is not what ``project.yml`` declares."""


@dataclass(frozen=True)
class Asset:
    """One ``assets`` entry of ``project.yml``."""

    dest: str
    url: str | None
    checksum: str | None
    extra: bool

    @property
    def mirror_path(self) -> str:
        """Where the file sits inside the mirror (the dest without the ``assets/`` prefix)."""
        if not self.dest.startswith(ASSETS_PREFIX):
            raise AssetError(f"Asset dest {self.dest!r} is not under {ASSETS_PREFIX!r}; the mirror cannot map it")
        return self.dest[len(ASSETS_PREFIX) :]


def check_dest(dest: str) -> str:
    """An asset's ``dest`` must name a file inside ``assets/``: no ``..``, no absolute path."""
    parts = PurePosixPath(dest).parts
    if not dest.startswith(ASSETS_PREFIX) or "\\" in dest or ".." in parts or len(parts) < 2:
        raise AssetError(
            f"Asset dest {dest!r} leaves {ASSETS_PREFIX!r}: every asset must be a file under {ASSETS_PREFIX} "
            "(no '..', no absolute path)"
        )
    return dest


def md5sum(path: Path) -> str:
    """md5 of a file's bytes (spaCy projects declare asset checksums as md5)."""
    digest = hashlib.md5()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_assets(project_dir: Path, overrides: dict[str, Any] | None = None) -> list[Asset]:
    """The assets of ``project.yml``, with its variables substituted (spaCy's own loader)."""
    from weasel.util import load_project_config

    config = load_project_config(project_dir, overrides=overrides or {})
    assets = []
    for entry in config.get("assets", []):
        if "git" in entry:
            raise AssetError(f"git assets are not supported by fetch-assets: {entry}")
        dest = check_dest(str(entry["dest"]))
        assets.append(Asset(dest, entry.get("url"), entry.get("checksum"), bool(entry.get("extra", False))))
    return assets


def verify(project_dir: Path, asset: Asset) -> None:
    """Fail clearly if the asset is missing or its md5 differs from the declared checksum."""
    dest = project_dir / asset.dest
    if not dest.exists():
        raise AssetError(f"Asset missing: {asset.dest}")
    if asset.checksum:
        actual = md5sum(dest)
        if actual != asset.checksum:
            raise AssetError(
                f"Checksum mismatch for {asset.dest} (from {dest.resolve()}): project.yml says "
                f"{asset.checksum}, the file has {actual}. The mirror or download is not the pinned "
                "upstream file; fix the source (do not edit the checksum to make it pass)."
            )


def fetch_from_mirror(project_dir: Path, asset: Asset, mirror: Path, copy: bool) -> str:
    """Link or copy one asset from the mirror; verify it. Returns what was done."""
    source = (mirror / asset.mirror_path).resolve()
    dest = project_dir / asset.dest
    if not source.is_file():
        if asset.extra:
            return "skipped (extra, not in mirror)"
        raise AssetError(f"{asset.dest}: not found in the mirror at {source}")
    if dest.is_symlink() or dest.exists():
        if dest.is_symlink() and dest.resolve() == source:
            verify(project_dir, asset)
            return "already linked"
        if not dest.is_symlink() and asset.checksum and md5sum(dest) == asset.checksum:
            return "already present"
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    if copy:
        shutil.copyfile(source, dest)
    else:
        os.symlink(source, dest)
    try:
        verify(project_dir, asset)
    except AssetError:
        dest.unlink()
        raise
    return "copied" if copy else "linked"


def fetch_assets(
    project_dir: Path,
    mirror: str | None = None,
    *,
    copy: bool = False,
    extra: bool = False,
    overrides: dict[str, Any] | None = None,
) -> Iterator[tuple[Asset, str]]:
    """Fetch every asset (mirror if given or set in ``KOGNER_ASSETS_MIRROR``, else upstream)."""
    project_dir = project_dir.resolve()
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    assets = [a for a in load_assets(project_dir, overrides) if extra or not a.extra]
    if mirror:
        root = Path(mirror)
        if not root.is_absolute():
            root = (project_dir / root) if (project_dir / root).is_dir() else Path.cwd() / root
        if not root.is_dir():
            raise AssetError(f"Assets mirror {mirror!r} is not a folder (from --mirror or ${MIRROR_ENV})")
        for asset in assets:
            yield asset, fetch_from_mirror(project_dir, asset, root, copy)
        return
    for asset in assets:
        if asset.url is None:
            if not (project_dir / asset.dest).exists():
                raise AssetError(
                    f"{asset.dest} has no upstream URL (it is a subset made for the mirror): set "
                    f"${MIRROR_ENV} or place the file yourself"
                )
        else:
            download(project_dir, asset)
        verify(project_dir, asset)
        yield asset, "downloaded and verified"


def download(project_dir: Path, asset: Asset) -> None:
    """One asset from its URL with ``spacy project assets``' own fetcher (skipped when the file is
    there with the declared checksum). Any failure is one ``AssetError`` naming file and URL."""
    from weasel.cli.assets import fetch_asset

    assert asset.url is not None
    try:
        fetch_asset(project_dir, asset.url, project_dir / asset.dest, asset.checksum)
    except Exception as err:  # noqa: BLE001 - requests, httpx, smart_open and OSError all mean "not downloaded"
        reason = " ".join(f"{type(err).__name__}: {err}".split())
        raise AssetError(
            f"download failed: {asset.dest} from {asset.url} ({reason[:300]}). Without network access, "
            f"point ${MIRROR_ENV} or --mirror at a local mirror of the assets"
        ) from err
