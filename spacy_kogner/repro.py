"""Reproducibility helpers shared by the teacher and the trainers: content hashes, seeding, memory.

Stage caches (teacher) and checkpoint fingerprints (training) key on *content*, never on paths or
timestamps, so a rerun on unchanged inputs is recognised and one on changed inputs is not. This
module imports nothing else from the package.
"""

from __future__ import annotations

import hashlib
import json
import random
import resource
from pathlib import Path
from typing import Any

import numpy as np

_CHUNK = 1 << 20


def json_sha256(payload: Any) -> str:
    """Content hash of a JSON-able value (keys sorted): the cache key of a stage or a run."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def file_sha256(path: str | Path) -> str:
    """Content hash of one file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def content_sha256(path: str | Path) -> str:
    """sha256 of a file, or of every file under a folder (names and contents); ``"missing"`` if absent."""
    path = Path(path)
    if path.is_dir():
        return json_sha256({str(p.relative_to(path)): file_sha256(p) for p in sorted(path.rglob("*")) if p.is_file()})
    return file_sha256(path) if path.is_file() else "missing"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, the three sources of randomness the package uses."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS counter so each stage reports its own peak (Linux only)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """Peak resident memory of this process since the last reset, in MB (VmHWM, else ru_maxrss)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
