"""Resumable training state: what a checkpoint holds, what it belongs to, and how it is loaded safely.

* **Fingerprint first.** ``checkpoint.json`` (plain JSON) records the run fingerprint — the config
  (less settings that do not change the result) and the content hashes of the training data,
  dev data, label table and teacher H — and is read *before* anything is unpickled. A checkpoint
  of another run is set aside, never resumed and never deleted.
* **No code from a checkpoint.** ``checkpoint.pt`` holds only tensors and plain containers (the
  NumPy RNG state is stored as a tensor) and is read with ``torch.load(weights_only=True)``: a
  planted pickle cannot run code.
* **Atomic and recoverable.** Both files are written to a temporary name and renamed; a
  truncated or unreadable checkpoint is renamed to ``checkpoint.pt.corrupt-<time>`` and training
  restarts with a message.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..repro import content_sha256, json_sha256

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_META = "checkpoint.json"
# Settings that do not change what a run computes: a checkpoint stays valid across them.
RESUME_IGNORED = ("stop_after", "num_threads", "device", "eval_batch_size")


def run_fingerprint(cfg: dict[str, Any], teacher_file: str | Path | None) -> str:
    """What a checkpoint belongs to: the config (less ``RESUME_IGNORED``) and the content of the
    training data, dev data, label table and teacher H, so that a resume never mixes two runs."""
    training = {k: v for k, v in cfg["training"].items() if k not in RESUME_IGNORED}
    paths = cfg["paths"]
    files = {key: content_sha256(paths[key]) for key in ("train", "dev", "labels") if paths.get(key)}
    if teacher_file:
        files["teacher"] = content_sha256(teacher_file)
    return json_sha256({"config": {**cfg, "training": training}, "files": files})


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states in weights-only-loadable form."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save(folder: Path, fingerprint: str, state: dict[str, Any]) -> None:
    """Write ``checkpoint.pt`` then ``checkpoint.json`` (each atomically)."""
    _atomic_write(folder / CHECKPOINT, lambda tmp: torch.save(state, tmp))
    meta = {"fingerprint": fingerprint, "step": int(state["step"]), "written": time.time()}
    _atomic_write(folder / CHECKPOINT_META, lambda tmp: tmp.write_text(json.dumps(meta), encoding="utf8"))


def set_aside(path: Path, why: str) -> Path:
    """Rename a checkpoint that cannot be resumed (kept as evidence), and say so."""
    target = path.with_name(f"{path.name}.{why}-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, target)
    print(f"{path}: {why}; moved to {target} and starting a new run", file=sys.stderr)
    return target


def load(folder: Path, fingerprint: str, map_location: Any) -> dict[str, Any] | None:
    """The checkpoint state if one exists, belongs to this run and is readable; else None."""
    path, meta_path = folder / CHECKPOINT, folder / CHECKPOINT_META
    if not path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf8"))
        found = meta.get("fingerprint")
    except (OSError, ValueError, AttributeError):
        found = None
    if found != fingerprint:
        # A re-run after the config or the data changed (spacy project re-runs the step then)
        # must train again, not finish the old run; a checkpoint without its fingerprint file is
        # of unknown origin and is not unpickled at all.
        set_aside(path, "other-run" if found else "no-fingerprint")
        meta_path.unlink(missing_ok=True)
        return None
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
        if not isinstance(state, dict) or "step" not in state:
            raise ValueError("not a training checkpoint")
    except Exception as err:  # noqa: BLE001 - truncated zip, bad pickle, refused global: all mean unusable
        print(f"{path} cannot be read ({type(err).__name__}: {err})", file=sys.stderr)
        set_aside(path, "corrupt")
        meta_path.unlink(missing_ok=True)
        return None
    return state
