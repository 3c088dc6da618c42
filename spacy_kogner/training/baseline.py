"""The spaCy baselines: ``spacy train`` of a spaCy ``ner`` (CNN ``tok2vec`` or a spacy-transformers
``transformer`` on the same backbone as the student).

Why a wrapper around ``spacy train`` instead of calling it from ``project.yml`` directly:

* the offline backbone is a folder inside an installed wheel, whose path differs per machine, so
  the config says ``paths.encoder = "default"`` and it is resolved here at run time;
* profiles are small override files merged over the base config (``config.load_config``); the
  merged config is written to ``OUTPUT/config.cfg`` and that is what ``spacy train`` reads;
* every training run of the project leaves the same ``metrics.json`` (``run_summary.py``) beside
  ``model-best``, so the evaluation rows can say what each number cost;
* a **wall-time budget**: ``spacy train`` stops on steps, epochs or patience only. The
  ``kogner.WallTimeLogger.v1`` logger (set in ``[training.logger]``) wraps spaCy's console logger,
  writes every evaluation to ``OUTPUT/curve.jsonl`` (the learning curve) and ends training at the
  first evaluation past ``max_minutes``; ``model-best`` is the best dev model up to then, exactly
  as when spaCy stops by patience. Baselines and the student get the same cap.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spacy.util import registry

from ..config import load_config
from ..pipeline.hub import resolve_encoder
from ..run_summary import RunSummary


class WallTimeReached(Exception):
    """Raised by the logger to end ``spacy train`` at its wall-time budget (caught below)."""


@dataclass
class _Progress:
    """What the logger saw: steps done and every evaluation, for the run summary."""

    start: float = 0.0
    step: int = 0
    curve: list[dict[str, Any]] = field(default_factory=list)
    ended_by: str = "spacy (max_steps, max_epochs or patience)"


_progress = _Progress()


@registry.loggers("kogner.WallTimeLogger.v1")
def wall_time_logger(max_minutes: float = 0.0, curve_path: str = "") -> Callable:
    """spaCy's console logger plus a learning curve and a wall-time stop (``max_minutes``, 0 = none)."""
    console = registry.get("loggers", "spacy.ConsoleLogger.v3")(progress_bar=None)

    def setup(nlp: Any, stdout: Any = sys.stdout, stderr: Any = sys.stderr) -> tuple[Callable, Callable]:
        log_step, finalize = console(nlp, stdout, stderr)
        _progress.start, _progress.curve, _progress.ended_by = time.perf_counter(), [], _Progress.ended_by

        def step(info: dict[str, Any] | None) -> None:
            log_step(info)
            if info is None:
                return
            _progress.step = int(info["step"])
            elapsed = time.perf_counter() - _progress.start
            point = {"step": info["step"], "epoch": info["epoch"], "elapsed_s": elapsed, "dev_f": info["score"]}
            point.update({k: v for k, v in info.get("other_scores", {}).items() if k in ("ents_p", "ents_r")})
            _progress.curve.append(point)
            if curve_path:
                with open(curve_path, "a", encoding="utf8") as fh:
                    fh.write(json.dumps(point) + "\n")
            if max_minutes and elapsed >= max_minutes * 60:
                _progress.ended_by = "max_minutes"
                raise WallTimeReached(f"wall-time budget of {max_minutes} min reached at step {info['step']}")

        return step, finalize

    return setup


def train_baseline(
    config: str | Path, output: Path, overrides: dict[str, Any], gpu_id: int, profile: str | None = None
) -> RunSummary:
    """Run ``spacy train`` on the merged config; write and return ``OUTPUT/metrics.json``."""
    import torch
    from spacy.cli.train import train

    cfg = load_config(config, overrides, profile)
    if "encoder" in cfg.get("paths", {}):  # resolved before interpolation reaches the transformer
        overrides = {**overrides, "paths.encoder": resolve_encoder(str(cfg["paths"]["encoder"]))}
        cfg = load_config(config, overrides, profile)
    output.mkdir(parents=True, exist_ok=True)
    merged = output / "config.cfg"
    from confection import Config

    logger = cfg["training"]["logger"]
    if logger.get("@loggers") == "kogner.WallTimeLogger.v1":
        logger["curve_path"] = str(output / "curve.jsonl")
        (output / "curve.jsonl").unlink(missing_ok=True)
    Config(cfg).to_disk(merged)
    start = time.perf_counter()
    try:
        train(merged, output, use_gpu=gpu_id)
    except WallTimeReached as stop:
        print(f"{stop}; model-best is the best dev model so far", file=sys.stderr)
    wall = time.perf_counter() - start
    meta_path = output / "model-best" / "meta.json"
    performance = json.loads(meta_path.read_text(encoding="utf8")).get("performance", {}) if meta_path.is_file() else {}
    pipeline = list(cfg["nlp"]["pipeline"])
    summary = RunSummary(
        system="spacy-trf" if "transformer" in pipeline else "spacy-cnn",
        steps=_progress.step if _progress.curve else int(cfg["training"]["max_steps"]),
        seed=int(cfg["training"]["seed"]),
        wall_s=wall,
        best_dev_f=performance.get("ents_f"),
        device=f"cuda:{gpu_id}" if gpu_id >= 0 else "cpu",
        details={
            "config": str(config),
            "profile": profile,
            "pipeline": pipeline,
            "encoder": cfg.get("paths", {}).get("encoder"),
            "best_dev": {k: v for k, v in performance.items() if not isinstance(v, dict)},
            "ended_by": _progress.ended_by,
            "max_steps": int(cfg["training"]["max_steps"]),
            "curve": _progress.curve,
            # torch's intra-op threads (the study sets them); numpy's CNN layers follow their own BLAS
            "threads": torch.get_num_threads(),
        },
    )
    summary.write(output)
    return summary
