"""The teacher run: KG → Z → Z' → Z'' → H, as resumable stages under one output folder.

Each stage writes its result and a ``stage.json`` (its input key, metrics, wall time, peak RSS)
to ``OUT/stages/<stage>/``. The key hashes everything the stage's result depends on (the KG's
content, the stage's config section, the seed, and the keys of the stages it consumes), so a
rerun skips a finished stage exactly when its inputs are unchanged, and recomputes it (and what
depends on it) otherwise. Results are saved before ``stage.json``, so a stage interrupted midway
is simply recomputed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ConfigError, read_section
from ..kg.graph import KGSettings, KnowledgeGraph, load_kg
from ..pipeline.hub import resolve_encoder
from ..repro import file_sha256, json_sha256, peak_rss_mb, reset_peak_rss, seed_everything
from .gnn import GNNSettings
from .store import write_store
from .text import TextSettings
from .transr import TransRSettings

SECTIONS = ("paths", "system", "kg", "text", "gnn", "transr")
BLOCK_NAMES = ("Z", "Z_prime", "Z_double_prime")


@dataclass
class SystemSettings:
    """The ``[system]`` section."""

    seed: int
    threads: int


@dataclass
class TeacherConfig:
    """A whole teacher config, every section validated by ``read_section``."""

    system: SystemSettings
    kg: KGSettings
    text: TextSettings
    gnn: GNNSettings
    transr: TransRSettings
    raw: dict[str, Any]

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> TeacherConfig:
        unknown = sorted(set(cfg) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"Unknown section(s) {unknown} in the teacher config; allowed: {list(SECTIONS)}")
        for section in SECTIONS[1:]:
            if section not in cfg:
                raise ConfigError(f"Teacher config lacks the [{section}] section")
        return cls(
            system=read_section(SystemSettings, cfg["system"], "system"),
            kg=read_section(KGSettings, cfg["kg"], "kg"),
            text=read_section(TextSettings, cfg["text"], "text"),
            gnn=read_section(GNNSettings, cfg["gnn"], "gnn"),
            transr=read_section(TransRSettings, cfg["transr"], "transr"),
            raw={k: dict(v) for k, v in cfg.items()},
        )


class Stage:
    """One cached step: ``OUT/stages/<name>/{result.npy, stage.json}``."""

    def __init__(self, out_dir: Path, name: str, key: str) -> None:
        self.name = name
        self.key = key
        self.folder = out_dir / "stages" / name
        self.result_path = self.folder / "result.npy"
        self.info_path = self.folder / "stage.json"

    def cached(self) -> dict[str, Any] | None:
        """The finished stage's info if its key matches and its result is readable, else None."""
        if not (self.info_path.is_file() and self.result_path.is_file()):
            return None
        try:
            info = json.loads(self.info_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return None
        return info if info.get("key") == self.key else None

    def run(
        self, compute: Callable[[], tuple[np.ndarray, dict[str, Any]]], log: Callable[[str], None]
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Load the cached result or compute it, timing it and recording its peak RSS."""
        info = self.cached()
        if info is not None:
            log(f"[{self.name}] inputs unchanged, reusing {self.result_path}")
            info["cached"] = True
            return np.load(self.result_path), info
        log(f"[{self.name}] computing")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.info_path.unlink(missing_ok=True)
        reset_peak_rss()
        start = time.perf_counter()
        result, metrics = compute()
        seconds = time.perf_counter() - start
        np.save(self.result_path, np.asarray(result, dtype=np.float32))
        info = {
            "key": self.key,
            "shape": list(result.shape),
            "seconds": seconds,
            "peak_rss_mb": peak_rss_mb(),
            "metrics": metrics,
        }
        self.info_path.write_text(json.dumps(info, indent=2), encoding="utf-8")
        log(f"[{self.name}] done in {seconds:.1f}s, peak RSS {info['peak_rss_mb']:.0f} MB")
        info["cached"] = False
        return result, info


def run_teacher(
    cfg: dict[str, Any], out_dir: str | Path, *, progress: bool = True, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run (or resume) the whole teacher into ``out_dir``; return the metrics written to metrics.json."""
    teacher = TeacherConfig.from_config(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from .transr import set_pystow_home

    set_pystow_home(out)  # before PyKEEN is imported anywhere below
    seed = teacher.system.seed
    torch.set_num_threads(teacher.system.threads)
    wall = time.perf_counter()

    reset_peak_rss()
    start = time.perf_counter()
    kg = load_kg(teacher.kg)
    kg_info = {"seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb(), "cached": False}
    kg_hash = kg.fingerprint()
    log(f"[kg] {kg.num_nodes} nodes, {kg.num_edges} edges, {len(kg.relations)} relations")

    from .text import build_text_features, text_cache_key

    text_stage = Stage(out, "text", text_cache_key(kg, teacher.text))
    z, text_info = text_stage.run(lambda: (build_text_features(kg, teacher.text, progress=progress), {}), log)

    from .gnn import pretrain_graph_transformer

    gnn_key = json_sha256({"z": text_stage.key, "kg": kg_hash, "gnn": dict(cfg["gnn"]), "seed": seed})
    gnn_stage = Stage(out, "gnn", gnn_key)

    def _gnn() -> tuple[np.ndarray, dict[str, Any]]:
        seed_everything(seed)
        return pretrain_graph_transformer(kg, z, teacher.gnn, seed=seed, progress=progress)

    z1, gnn_info = gnn_stage.run(_gnn, log)

    from .transr import train_transr

    transr_stage = Stage(out, "transr", json_sha256({"kg": kg_hash, "transr": dict(cfg["transr"]), "seed": seed}))

    def _transr() -> tuple[np.ndarray, dict[str, Any]]:
        seed_everything(seed)
        return train_transr(kg, teacher.transr, seed=seed, progress=progress)

    z2, transr_info = transr_stage.run(_transr, log)

    stages = {"kg": kg_info, "text": text_info, "gnn": gnn_info, "transr": transr_info}
    metrics = _collect_metrics(kg, stages, z, z1, z2)
    store_key = json_sha256([text_stage.key, gnn_stage.key, transr_stage.key])
    meta_path = out / "meta.json"
    old_key = None
    if meta_path.is_file():
        try:
            old_key = json.loads(meta_path.read_text(encoding="utf-8")).get("store_key")
        except json.JSONDecodeError:
            old_key = None
    if old_key == store_key and (out / "H.npy").is_file():
        log("[store] inputs unchanged, keeping H.npy")
        stages["store"] = {"cached": True}
    else:
        reset_peak_rss()
        start = time.perf_counter()
        meta = {
            "store_key": store_key,
            "kg": {
                "files": {path: file_sha256(path) for path in kg.sources},
                "fingerprint": kg_hash,
                "nodes": kg.num_nodes,
                "edges": kg.num_edges,
                "relations": kg.relations,
                "kinds": kg.kind_names,
            },
            "encoder": resolve_encoder(teacher.text.encoder),
            "encoder_setting": teacher.text.encoder,
            "seed": seed,
            "config": teacher.raw,
            "metrics": {k: metrics[k] for k in ("gnn", "transr")},
            "rows_for_nodes_without_training_triples": "Z_double_prime is zeros",
        }
        blocks = {"Z": z, "Z_prime": z1, "Z_double_prime": z2}
        write_store(out, blocks, kg.node_ids, kg.names, kg.kinds, meta)
        stages["store"] = {"seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb(), "cached": False}
    metrics["stages"] = _stage_summary(stages)
    metrics["wall_seconds_this_run"] = time.perf_counter() - wall
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    log(f"[teacher] H {metrics['shapes']['H']} written to {out}")
    return metrics


def _stage_summary(stages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    keep = ("seconds", "peak_rss_mb", "cached")
    return {name: {k: info[k] for k in keep if k in info} for name, info in stages.items()}


def _collect_metrics(
    kg: KnowledgeGraph,
    stages: dict[str, dict[str, Any]],
    z: np.ndarray,
    z1: np.ndarray,
    z2: np.ndarray,
) -> dict[str, Any]:
    summary = kg.summary()
    return {
        "kg": {k: summary[k] for k in ("nodes", "edges", "isolated_nodes", "largest_component_share", "edge_policy")},
        "gnn": stages["gnn"].get("metrics", {}),
        "transr": stages["transr"].get("metrics", {}),
        "shapes": {
            "Z": list(z.shape),
            "Z_prime": list(z1.shape),
            "Z_double_prime": list(z2.shape),
            "H": [int(z.shape[0]), int(z.shape[1] + z1.shape[1] + z2.shape[1])],
        },
        "threads": torch.get_num_threads(),
    }
