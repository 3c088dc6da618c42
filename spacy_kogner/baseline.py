"""The spaCy baseline: ``spacy train`` with a spacy-transformers ``transformer`` + ``ner``.

Why a wrapper around ``spacy train`` instead of calling it from ``project.yml`` directly:

* the offline backbone is a folder inside an installed wheel, whose path differs per machine, so
  the config says ``paths.encoder = "default"`` and it is resolved here at run time;
* every training run of the project (``distill`` and this one) leaves ``metrics.json`` beside
  ``model-best`` with steps, seed and wall time, so the evaluation rows can say what each number
  cost.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

from .config import load_config, parse_overrides
from .offline import resolve_encoder


def train_baseline(config: Path, output: Path, overrides: dict[str, Any], gpu_id: int) -> dict[str, Any]:
    """Run ``spacy train`` with the encoder resolved; write and return ``OUTPUT/metrics.json``."""
    from spacy.cli.train import train

    cfg = load_config(config, overrides)
    overrides = dict(overrides)
    overrides["paths.encoder"] = resolve_encoder(str(cfg["paths"].get("encoder", "default")))
    start = time.perf_counter()
    train(config, output, use_gpu=gpu_id, overrides=overrides)
    wall = time.perf_counter() - start
    meta_path = output / "model-best" / "meta.json"
    performance = json.loads(meta_path.read_text(encoding="utf8")).get("performance", {}) if meta_path.is_file() else {}
    metrics = {
        "system": "spacy-baseline",
        "config": str(config),
        "encoder": overrides["paths.encoder"],
        "steps": cfg["training"]["max_steps"],
        "seed": cfg["training"]["seed"],
        "wall_s": wall,
        "gpu_id": gpu_id,
        "best_dev": {k: v for k, v in performance.items() if not isinstance(v, dict)},
        "overrides": {k: str(v) for k, v in overrides.items()},
    }
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf8")
    return metrics


def register(app: Any) -> None:
    """Add ``train-baseline`` to the ``python -m spacy_kogner`` app."""

    def train_baseline_cmd(
        ctx: typer.Context,
        config: Path = typer.Argument(..., help="spaCy training config (configs/spacy_baseline_*.cfg)"),
        output: Path = typer.Argument(..., help="Output folder (model-best/, model-last/, metrics.json)"),
        gpu_id: int = typer.Option(-1, help="GPU id, -1 for CPU"),
    ) -> None:
        """``spacy train`` of transformer + ner on the offline backbone; writes metrics.json."""
        output.mkdir(parents=True, exist_ok=True)
        metrics = train_baseline(config, output, parse_overrides(ctx.args), gpu_id)
        typer.echo(f"Baseline trained in {metrics['wall_s']:.0f} s: {output / 'model-best'}")

    app.command("train-baseline", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
        train_baseline_cmd
    )
