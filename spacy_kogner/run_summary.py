"""``metrics.json``: one schema for what every training run (KoGNER student or spaCy baseline)
cost and reached, written beside ``model-best`` by ``training/`` and read by ``evaluation/``.
Imports nothing else from the package.
"""

from __future__ import annotations

import dataclasses
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUMMARY_FILE = "metrics.json"
SCHEMA = "kogner.run.v1"


def run_finished(run: str | Path) -> bool:
    """A run folder with its summary and best checkpoint: the studies do not train it again (a run
    that stopped before writing them resumes from its checkpoint instead)."""
    return (Path(run) / SUMMARY_FILE).is_file() and (Path(run) / "model-best").is_dir()


def cpu_model() -> str:
    """The CPU's model name (timings are only comparable on the same kind of CPU)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass
class RunSummary:
    """What a training run cost and reached. ``details`` holds trainer-specific numbers."""

    system: str
    steps: int
    seed: int
    wall_s: float
    best_dev_f: float | None = None
    best_step: int | None = None
    train_sentences: int | None = None
    device: str = "cpu"
    cpu: str = field(default_factory=cpu_model)
    details: dict[str, Any] = field(default_factory=dict)
    schema: str = SCHEMA

    def write(self, folder: str | Path) -> Path:
        path = Path(folder) / SUMMARY_FILE
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2), encoding="utf8")
        return path

    @classmethod
    def read(cls, path: str | Path) -> RunSummary:
        path = Path(path)
        data = json.loads(path.read_text(encoding="utf8"))
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ValueError(f"{path} is not a {SCHEMA} run summary")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
