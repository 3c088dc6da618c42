"""Training throughput of the student under each speed setting, in one process (ratios hold on a
noisy machine). Usage:

    python scripts/bench_train.py --train corpus/NCBI-disease/train.json --steps 30 --out results/bench_train.json

Each variant builds a fresh trainer (same seed, same data) and times ``--steps`` optimisation steps
after ``--warmup`` untimed ones; sentences/s is batch size over the median step time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from spacy_kogner.config import load_config
from spacy_kogner.pipeline.precision import cpu_has_native_bf16
from spacy_kogner.run_summary import cpu_model
from spacy_kogner.training.distill import Distiller

# torch's own dropout masks and AdamW loop: the settings before packed masks and the fused optimizer
_TORCH_KERNELS = {"model.dropout_masks": "torch", "training.fused_optimizer": False}
VARIANTS = {
    # name: overrides of configs/distill.cfg
    # (the base config has length buckets on: the first three switch them off)
    "fp32, elementwise span dropout, shuffled (v0.1)": {
        "training.precision": "fp32",
        "model.span_dropout": "full",
        "training.bucket": 0,
        **_TORCH_KERNELS,
    },
    "fp32, shared span dropout": {"training.precision": "fp32", "training.bucket": 0, **_TORCH_KERNELS},
    "bf16, shared span dropout": {"training.precision": "bf16", "training.bucket": 0, **_TORCH_KERNELS},
    "bf16, shared span dropout, length buckets": {"training.precision": "bf16", **_TORCH_KERNELS},
    "fp32, shared span dropout, length buckets": {"training.precision": "fp32", **_TORCH_KERNELS},
    "fp32, buckets, fused AdamW": {"training.precision": "fp32", "model.dropout_masks": "torch"},
    "fp32, buckets, fused AdamW, packed dropout masks": {"training.precision": "fp32"},
    "bf16, buckets, fused AdamW, packed dropout masks": {"training.precision": "bf16"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", required=True)
    parser.add_argument("--config", default="configs/distill.cfg")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-sizes", default="8,32")
    parser.add_argument("--out", default="results/bench_train.json")
    parser.add_argument("--variants", default="", help="variant names separated by ';' (default: all)")
    args = parser.parse_args()
    wanted = [v.strip() for v in args.variants.split(";") if v.strip()]
    rows = []
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        for name, extra in VARIANTS.items():
            if wanted and name not in wanted:
                continue
            overrides = {"paths.train": args.train, "paths.dev": "", "paths.teacher": "", "training.b": 0.0,
                         "training.batch_size": batch_size, "training.steps": 100_000, **extra}  # fmt: skip
            trainer = Distiller(load_config(args.config, overrides), "/tmp/kogner-bench-train")
            times = []
            for step in range(args.warmup + args.steps):
                start = time.perf_counter()
                trainer.step(step)
                if step >= args.warmup:
                    times.append(time.perf_counter() - start)
            median = statistics.median(times)
            row = {
                "variant": name,
                "batch_size": batch_size,
                "median_step_s": median,
                "sent_per_s": batch_size / median,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "cpu": cpu_model(),
        "native_bf16": cpu_has_native_bf16(),
        "threads": torch.get_num_threads(),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
