"""The spaCy baselines: ``spacy train`` of a spaCy ``ner`` (CNN ``tok2vec`` or a spacy-transformers
``transformer`` on the same backbone as the student).

Why a wrapper around ``spacy train`` instead of calling it from ``project.yml`` directly:

* the offline backbone is a folder inside an installed wheel, whose path differs per machine, so
  the config says ``paths.encoder = "default"`` and it is resolved here at run time;
* profiles are small override files merged over the base config (``config.load_config``); the
  merged config is written to ``OUTPUT/config.cfg`` and that is what ``spacy train`` reads;
* every training run of the project leaves the same ``metrics.json`` (``summary.py``) beside
  ``model-best``, so the evaluation rows can say what each number cost.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..config import load_config
from ..pipeline.hub import resolve_encoder
from ..run_summary import RunSummary


def train_baseline(
    config: str | Path, output: Path, overrides: dict[str, Any], gpu_id: int, profile: str | None = None
) -> RunSummary:
    """Run ``spacy train`` on the merged config; write and return ``OUTPUT/metrics.json``."""
    from spacy.cli.train import train

    cfg = load_config(config, overrides, profile)
    if "encoder" in cfg.get("paths", {}):  # resolved before interpolation reaches the transformer
        overrides = {**overrides, "paths.encoder": resolve_encoder(str(cfg["paths"]["encoder"]))}
        cfg = load_config(config, overrides, profile)
    output.mkdir(parents=True, exist_ok=True)
    merged = output / "config.cfg"
    from confection import Config

    Config(cfg).to_disk(merged)
    start = time.perf_counter()
    train(merged, output, use_gpu=gpu_id)
    wall = time.perf_counter() - start
    meta_path = output / "model-best" / "meta.json"
    performance = json.loads(meta_path.read_text(encoding="utf8")).get("performance", {}) if meta_path.is_file() else {}
    pipeline = list(cfg["nlp"]["pipeline"])
    summary = RunSummary(
        system="spacy-trf" if "transformer" in pipeline else "spacy-cnn",
        steps=int(cfg["training"]["max_steps"]),
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
        },
    )
    summary.write(output)
    return summary
