"""The driver of ``annotate``: read records, cut shards and chunks, run an engine, write shards.

The driver alone reads the input and writes the output; engines only turn chunks of texts into
entity rows. So the output cannot depend on the engine, and a run may be resumed with another
engine than the one it started with (only ``AnnotateSettings`` must match).
"""

from __future__ import annotations

import itertools
import math
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ...repro import content_sha256
from .engines import ENGINES, Chunk, PipelineSpec, kogner_pipe_name, make_engine, require_ray, resolve_model
from .errors import AnnotateError
from .inputs import Record, detect_format, input_identity, iter_records, screen
from .shards import EntityRows, ShardStore, entity_table

PIPELINE_ERROR = "pipeline_error"
OUTPUT_SCHEMA = 1  # bump when the columns or their order change


@dataclass(frozen=True)
class AnnotateSettings:
    """Everything that decides the output bytes. Recorded in the manifest; a resume must match."""

    format: str = "auto"
    shard_size: int = 10_000  # documents (input positions) per shard
    batch_size: int = 64  # usable documents per nlp.pipe batch (chunk)
    max_chars: int = 1_000_000  # longer documents are reported and skipped
    threads: int = 1  # torch threads per pipeline copy
    device: str = ""  # override the kogner pipe's device ("" = as saved)

    def check(self) -> None:
        for name in ("shard_size", "batch_size", "max_chars", "threads"):
            if getattr(self, name) < 1:
                raise AnnotateError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class EngineOptions:
    """How the work is spread. Free to change between a run and its resume: the output does not depend on it."""

    engine: str = "local"
    workers: int = 2
    actors: int = 2
    gpus_per_actor: float = 0.0
    address: str = ""
    ray_temp_dir: str = ""
    ray_window_chunks: int = 0


@dataclass
class _Shard:
    index: int
    records: list[Record]
    bad: list[Record]
    remaining: int = 0
    parts: list[tuple[list[Record], EntityRows]] = field(default_factory=list)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("spacy", "torch", "gliner", "transformers", "pyarrow", "spacy-kogner"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def annotate_corpus(
    model: str,
    input_path: str | Path,
    out_dir: str | Path,
    settings: AnnotateSettings = AnnotateSettings(),
    options: EngineOptions = EngineOptions(),
    *,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Annotate every document of ``input_path`` with the pipeline ``model`` into ``out_dir``.

    Starts, or resumes where the manifest says the last run stopped; returns the manifest."""
    say = log or (lambda message: print(message, file=sys.stderr))
    settings.check()
    if options.engine not in ENGINES:
        raise AnnotateError(f"unknown --engine {options.engine!r}; use one of {', '.join(ENGINES)}")
    if options.engine == "ray":
        require_ray()  # before hashing a big input: say at once what is missing
    fmt = detect_format(input_path, settings.format)
    if not Path(input_path).is_file():
        raise AnnotateError(f"input not found: {input_path}")
    settings = AnnotateSettings(**{**asdict(settings), "format": fmt})
    folder = resolve_model(model)
    pipe_name = kogner_pipe_name(folder)
    source = input_identity(input_path, fmt)
    identity = {
        "input": {"format": fmt, "size": source["size"], "sha256": source["sha256"]},
        "model": {"sha256": content_sha256(folder)},
        "settings": asdict(settings),
        "output_schema": OUTPUT_SCHEMA,
    }
    store = ShardStore(out_dir)
    try:
        manifest = store.open(identity, overwrite=overwrite)
        manifest["input"] = source
        manifest["model"] = {"name": model, "folder": str(folder.resolve()), "pipe": pipe_name}
        if manifest["complete"]:
            say(f"{out_dir}: already complete ({manifest['totals']['docs']} documents); nothing to do")
            return manifest
        if store.done:
            say(f"{out_dir}: resuming, {len(store.done)} shards ({manifest['totals']['docs']} documents) done")
        # Workers resolve MODEL themselves: a folder by its absolute path (the same on one machine or
        # shared storage), a package by its name (installed on every node of a cluster).
        ref = str(Path(model).resolve()) if Path(model).exists() else model
        return _run(store, ref, input_path, settings, options, source.get("records"), progress, say)
    finally:
        store.close()


def _run(
    store: ShardStore,
    model: str,
    input_path: str | Path,
    settings: AnnotateSettings,
    options: EngineOptions,
    total: int | None,
    progress: bool,
    say: Callable[[str], None],
) -> dict[str, Any]:
    from tqdm import tqdm

    spec = PipelineSpec(model, threads=settings.threads, device=settings.device, max_chars=settings.max_chars)
    done = store.done
    first_todo = next(i for i in itertools.count() if i not in done)
    start = first_todo * settings.shard_size
    loaded = time.perf_counter()
    engine = make_engine(
        options.engine,
        spec,
        workers=options.workers,
        actors=options.actors,
        gpus_per_actor=options.gpus_per_actor,
        address=options.address,
        ray_temp_dir=options.ray_temp_dir,
        ray_window_chunks=options.ray_window_chunks,
    )
    run = {**engine.describe(), "started": _now(), "host_cpus": _host_cpus(), "versions": _versions()}
    run["load_seconds"] = round(time.perf_counter() - loaded, 2)
    bar = tqdm(
        total=total,
        initial=store.manifest["totals"]["docs"],
        unit="doc",
        disable=not progress,
        dynamic_ncols=True,
        mininterval=1.0,
        file=sys.stderr,
    )
    shards: dict[int, _Shard] = {}
    chunk_of: dict[int, tuple[int, list[Record]]] = {}
    seen = {"next_position": start}
    processed = 0
    shard_times: list[list[float]] = []  # [shard, seconds since the loop began]: the steady rate, startup aside
    began = time.perf_counter()

    def chunks() -> Iterator[Chunk]:
        """Fixed chunks: ``batch_size`` usable documents of one shard, in input order."""
        key = 0
        records = iter_records(input_path, settings.format, start=start)
        for index, group in itertools.groupby(records, key=lambda r: r.position // settings.shard_size):
            screened = [screen(r, settings.max_chars) for r in group]
            seen["next_position"] = screened[-1].position + 1
            if index in done:
                continue
            good = [r for r in screened if r.bad is None]
            parts = [good[i : i + settings.batch_size] for i in range(0, len(good), settings.batch_size)] or [[]]
            shard = _Shard(index, screened, [r for r in screened if r.bad is not None], remaining=len(parts))
            shards[index] = shard
            for part in parts:
                chunk_of[key] = (index, part)
                yield Chunk(key, [r.text or "" for r in part])
                key += 1

    status = "stopped"
    try:
        with engine:
            for result in engine.run(chunks()):
                index, part = chunk_of.pop(result.key)
                shard = shards[index]
                for i, why in result.failed.items():
                    r = part[i]
                    shard.bad.append(Record(r.position, r.id, None, PIPELINE_ERROR, why))
                shard.parts.append((part, result.rows))
                shard.remaining -= 1
                bar.update(len(part))
                if shard.remaining == 0:
                    del shards[index]
                    shard.bad.sort(key=lambda r: r.position)
                    bar.update(sum(1 for r in shard.bad if r.bad != PIPELINE_ERROR))
                    store.write_shard(index, shard.records, entity_table(shard.parts), shard.bad)
                    processed += len(shard.records)
                    shard_times.append([index, round(time.perf_counter() - began, 3)])
        n_docs = seen["next_position"]
        store.finish(math.ceil(n_docs / settings.shard_size), n_docs)
        status = "complete"
    finally:
        bar.close()
        seconds = time.perf_counter() - began
        run.update(
            finished=_now(),
            status=status,
            docs=processed,
            seconds=round(seconds, 2),
            docs_per_s=round(processed / seconds, 3) if seconds > 0 else None,
            shard_times=shard_times,
        )
        store.add_run(run)
    totals = store.manifest["totals"]
    say(
        f"{totals['docs']} documents, {totals['rows']} entities, {totals['bad']} bad documents; "
        f"this run: {processed} documents in {run['seconds']:.1f} s ({run['docs_per_s']} docs/s, {engine.name})"
    )
    return store.manifest


def _host_cpus() -> int:
    from .engines import box_cpus

    return box_cpus()
