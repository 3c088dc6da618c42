"""Resuming from ``checkpoint.pt`` runs no code and never loses a file (``training/checkpoint.py``).

A checkpoint in an output folder is untrusted: the folder may be shared, copied or planted. These
tests put a real malicious pickle (its ``__reduce__`` writes a marker file when unpickled) or a
truncated checkpoint where ``distill`` resumes from, and check that the marker is never written,
the file is renamed (kept as evidence), and the run trains from step 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from toy_distill import CFG, overrides

from spacy_kogner.config import load_config
from spacy_kogner.training import checkpoint
from spacy_kogner.training.distill import distill

STEPS = 2


class Payload:
    """Unpickling this runs ``exec(code)``: what a planted checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.code = f"open({str(marker)!r}, 'w').write('code ran')"

    def __reduce__(self):
        return (exec, (self.code,))


def short(tmp: Path, **extra) -> dict:
    """A two-step toy run: enough to see where training started."""
    return overrides(tmp, **{"training.steps": STEPS, "training.eval_every": STEPS, **extra})


def logged_steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]


def set_aside_files(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.name.startswith(f"{checkpoint.CHECKPOINT}."))


def test_the_planted_payload_is_live(tmp_path):
    """Control: the payload really runs its code when unpickled without ``weights_only``, so the
    tests below would see the marker if the loader unpickled it."""
    marker = tmp_path / "marker"
    torch.save({"step": 1, "x": Payload(marker)}, tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.read_text() == "code ran"


@pytest.mark.parametrize("fingerprint", ["none", "matching"])
def test_a_planted_pickle_checkpoint_runs_no_code_and_is_set_aside(tmp_path, capfd, fingerprint):
    """(a) no ``checkpoint.json``: unknown origin, never unpickled; (b) a ``checkpoint.json`` that
    matches this run: unpickled with ``weights_only=True``, which refuses the payload. Either way
    the marker is absent, the file is renamed with its bytes intact, and training starts at 0."""
    marker = tmp_path / "marker"
    out = tmp_path / "run"
    out.mkdir()
    planted = out / checkpoint.CHECKPOINT
    torch.save({"step": 1, "best_f": 0.0, "x": Payload(marker)}, planted)
    evidence = planted.read_bytes()
    ov = short(tmp_path)
    if fingerprint == "matching":
        fp = checkpoint.run_fingerprint(load_config(CFG, ov), None)
        (out / checkpoint.CHECKPOINT_META).write_text(json.dumps({"fingerprint": fp, "step": 1}))

    summary = distill(CFG, out, ov)

    assert not marker.exists(), "the planted checkpoint ran code"
    err = capfd.readouterr().err
    aside = set_aside_files(out)
    assert len(aside) == 1 and aside[0].read_bytes() == evidence  # renamed, not deleted
    why = "corrupt" if fingerprint == "matching" else "no-fingerprint"
    assert f".{why}-" in aside[0].name  # "corrupt": the fingerprint matched and weights_only refused it
    assert str(planted) in err and "starting a new run" in err
    assert logged_steps(out) == list(range(1, STEPS + 1))  # trained from step 0
    assert summary["steps"] == STEPS
    # the run's own checkpoint replaced the planted one and loads with weights_only
    assert torch.load(planted, weights_only=True)["step"] == STEPS


def test_a_truncated_checkpoint_is_set_aside_and_training_restarts(tmp_path, capfd):
    out = tmp_path / "run"
    ov = short(tmp_path, **{"training.steps": 4, "training.eval_every": 4})
    assert distill(CFG, out, {**ov, "training.stop_after": 2}) == {"stopped_at": 2}
    path = out / checkpoint.CHECKPOINT
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a kill or a full disk mid-copy
    capfd.readouterr()

    summary = distill(CFG, out, ov)

    err = capfd.readouterr().err
    assert f"{path} cannot be read" in err and "starting a new run" in err
    aside = set_aside_files(out)
    assert len(aside) == 1 and ".corrupt-" in aside[0].name
    assert aside[0].read_bytes() == data[: len(data) // 2]
    assert logged_steps(out) == [1, 2, 3, 4]  # from step 0, each step once
    assert summary["steps"] == 4
