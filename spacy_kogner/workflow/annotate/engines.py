"""Where the pipeline runs: this process (``local``), a spawn pool (``processes``) or a Ray Data
actor pool (``ray``). Each engine loads the pipeline itself, once per worker, from MODEL (a folder
or an installed package name), so no model travels through pickles or the object store.

Why every engine writes the same bytes: the scores of a span model move in the last float bit
with the *composition of a batch* (padding, the sort of windows) and with the *number of torch
threads* (the reduction order of some kernels). So the driver cuts the documents into fixed
``Chunk`` s (``batch_size`` usable documents of one shard, in input order), every engine runs each
chunk as one ``nlp.pipe`` batch, and every pipeline copy runs on ``threads`` torch threads. What
differs between engines is only how many chunks run at once. Results come back in chunk order.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import AnnotateError
from .shards import EntityRows

RAY_HINT = "the ray engine needs Ray: pip install 'spacy-kogner[ray]'"
ENGINES = ("local", "processes", "ray")


@dataclass(frozen=True)
class PipelineSpec:
    """What a worker needs to load the same pipeline as every other worker."""

    model: str  # folder or installed package name, resolved by each worker on its own machine
    threads: int = 1
    device: str = ""  # "" = as saved in the pipeline
    max_chars: int = 1_000_000


@dataclass
class Chunk:
    """Documents annotated as one ``nlp.pipe`` batch; ``key`` is its place in the run."""

    key: int
    texts: list[str]


@dataclass
class ChunkResult:
    key: int
    rows: EntityRows = field(default_factory=EntityRows)
    failed: dict[int, str] = field(default_factory=dict)  # index in chunk -> why the pipeline failed


# ------------------------------------------------------------------------------------ the pipeline
def resolve_model(model: str) -> Path:
    """The folder of a pipeline given as a folder or an installed package name."""
    import spacy.util

    path = Path(model)
    if (path / "config.cfg").is_file():
        return path
    if not path.exists() and spacy.util.is_package(model):
        package = Path(spacy.util.get_package_path(model))
        found = sorted(p.parent for p in package.glob("*/config.cfg"))
        if found:
            return found[0]
    raise AnnotateError(f"MODEL {model!r} is neither a spaCy pipeline folder nor an installed pipeline package")


def kogner_pipe_name(folder: Path) -> str:
    """The name of the pipe made by the ``kogner`` factory (usually ``kogner``)."""
    from spacy.util import load_config

    components = load_config(folder / "config.cfg").get("components", {})
    names = [name for name, cfg in components.items() if cfg.get("factory") == "kogner"]
    if not names:
        raise AnnotateError(f"the pipeline at {folder} has no kogner pipe (pipes: {sorted(components)})")
    return names[0]


def load_pipeline(spec: PipelineSpec) -> Any:
    """``spacy.load`` MODEL on ``spec.threads`` torch threads, the kogner pipe on ``spec.device``."""
    import spacy
    import torch

    torch.set_num_threads(spec.threads)
    folder = resolve_model(spec.model)
    name = kogner_pipe_name(folder)
    overrides = {"components": {name: {"device": spec.device}}} if spec.device else {}
    nlp = spacy.load(folder, config=overrides)
    nlp.max_length = max(nlp.max_length, spec.max_chars + 1)  # longer texts are screened out before
    return nlp


def annotate_chunk(nlp: Any, chunk: Chunk) -> ChunkResult:
    """Entities of each text of the chunk, run as one ``nlp.pipe`` batch.

    If the batch fails, each text is run alone so that one bad document costs only itself; the
    texts that still fail are returned in ``failed`` (and reported as bad documents)."""
    result = ChunkResult(chunk.key)
    if not chunk.texts:
        return result
    try:
        docs = list(nlp.pipe(chunk.texts, batch_size=len(chunk.texts)))
    except Exception:  # noqa: BLE001 - retried one by one below; what still fails is reported
        docs = []
        for i, text in enumerate(chunk.texts):
            try:
                docs.append(nlp(text))
            except Exception as err:  # noqa: BLE001 - a document the pipeline cannot take
                docs.append(None)
                result.failed[i] = f"{type(err).__name__}: {err}"[:500]
    spans_key = _spans_key(nlp)
    for i, doc in enumerate(docs):
        if doc is None:
            continue
        group = doc.spans.get(spans_key)
        scores = {}
        if group is not None:
            scores = {
                (s.start, s.end, s.label_): sc for s, sc in zip(group, group.attrs.get("scores", []), strict=False)
            }
        for ent in doc.ents:
            score = scores.get((ent.start, ent.end, ent.label_))
            result.rows.add(i, ent.start_char, ent.end_char, ent.text, ent.label_, score, ent.kb_id_)
    return result


def _spans_key(nlp: Any) -> str:
    for name in nlp.pipe_names:
        if nlp.get_pipe_meta(name).factory == "kogner":
            return nlp.get_pipe(name).cfg["spans_key"]
    raise AnnotateError("the loaded pipeline has no kogner pipe")


# ------------------------------------------------------------------------------------------ engines
class Engine:
    """Runs chunks in order: ``run`` yields one ``ChunkResult`` per chunk, in the chunks' order."""

    name = "engine"

    def __init__(self, spec: PipelineSpec) -> None:
        self.spec = spec

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "threads": self.spec.threads}

    def run(self, chunks: Iterator[Chunk]) -> Iterator[ChunkResult]:
        raise NotImplementedError

    def close(self) -> None:
        """Release workers; called once, also after an error."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class LocalEngine(Engine):
    """One process: the simplest and, with a GPU in the pipeline, usually all one needs."""

    name = "local"

    def __init__(self, spec: PipelineSpec) -> None:
        import torch

        super().__init__(spec)
        self._threads_before = torch.get_num_threads()
        self.nlp = load_pipeline(spec)

    def run(self, chunks: Iterator[Chunk]) -> Iterator[ChunkResult]:
        for chunk in chunks:
            yield annotate_chunk(self.nlp, chunk)

    def close(self) -> None:
        import torch

        torch.set_num_threads(self._threads_before)  # the caller's process keeps its own setting


_WORKER_NLP: Any = None


def _init_worker(spec: PipelineSpec) -> None:
    global _WORKER_NLP
    _WORKER_NLP = load_pipeline(spec)


def _run_in_worker(chunk: Chunk) -> ChunkResult:
    return annotate_chunk(_WORKER_NLP, chunk)


class ProcessEngine(Engine):
    """A pool of ``workers`` spawned processes, each loading the pipeline once.

    Spawned, not forked: a forked child inherits torch's thread pools mid-state. Only texts go to
    the workers and only entity rows come back (never Docs), and at most two chunks per worker are
    in flight, so memory stays flat on an input of any size."""

    name = "processes"

    def __init__(self, spec: PipelineSpec, workers: int) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        super().__init__(spec)
        if workers < 1:
            raise AnnotateError(f"--workers must be at least 1, got {workers}")
        self.workers = workers
        self.pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(spec,),
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "workers": self.workers}

    def run(self, chunks: Iterator[Chunk]) -> Iterator[ChunkResult]:
        from concurrent.futures.process import BrokenProcessPool

        pending: deque = deque()
        try:
            for chunk in chunks:
                pending.append(self.pool.submit(_run_in_worker, chunk))
                if len(pending) >= 2 * self.workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except BrokenProcessPool as err:
            raise AnnotateError(f"a worker process died ({err}); rerun the same command to resume") from err

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def box_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota if one is set."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def require_ray() -> Any:
    """``ray`` (with Ray Data), or the one-line install hint."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise AnnotateError(RAY_HINT) from err
    return ray


class RayAnnotator:
    """The callable class of Ray Data's actor pool: loads the pipeline in the actor, then runs
    one chunk per call (``batch_size=1`` over rows that are chunks)."""

    def __init__(self, spec: PipelineSpec) -> None:
        self.nlp = load_pipeline(spec)

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        keys, payloads = [], []
        for key, texts in zip(batch.column("key").to_pylist(), batch.column("texts").to_pylist(), strict=True):
            keys.append(key)
            payloads.append(pickle.dumps(annotate_chunk(self.nlp, Chunk(key, texts)), protocol=5))
        return pa.table({"key": pa.array(keys, pa.int64()), "result": pa.array(payloads, pa.binary())})


class RayEngine(Engine):
    """Ray Data over windows of chunks, run by an actor pool of ``actors`` annotators.

    The driver reads the input and hands a window of chunks (texts only) to Ray Data; actors load
    the pipeline from MODEL where they run (so on a cluster MODEL must be a package installed on
    every node, or a folder on shared storage). Each window is one Ray Data execution, so actors
    start once per window: a window of many chunks keeps that cost small. Without ``address`` a
    local Ray is started on this machine with no more CPUs than it has."""

    name = "ray"

    def __init__(
        self,
        spec: PipelineSpec,
        actors: int,
        *,
        gpus_per_actor: float = 0.0,
        address: str = "",
        temp_dir: str = "",
        window_chunks: int = 0,
    ) -> None:
        super().__init__(spec)
        ray = self._ray = require_ray()
        if actors < 1:
            raise AnnotateError(f"--actors must be at least 1, got {actors}")
        self.actors, self.gpus_per_actor, self.address = actors, gpus_per_actor, address
        self.window_chunks = window_chunks or 256 * actors
        self._own = not ray.is_initialized()
        if self._own:
            kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
            if address:
                kwargs["address"] = address
            else:
                kwargs["num_cpus"] = box_cpus()
                if temp_dir:
                    kwargs["_temp_dir"] = temp_dir
            ray.init(**kwargs)
        resources = ray.cluster_resources()
        need_cpu = actors * spec.threads
        if need_cpu > resources.get("CPU", 0):
            self.close()
            raise AnnotateError(
                f"{actors} actors x {spec.threads} threads need {need_cpu} CPUs; the Ray cluster has "
                f"{resources.get('CPU', 0):g}: lower --actors or --threads"
            )
        if gpus_per_actor and actors * gpus_per_actor > resources.get("GPU", 0):
            self.close()
            raise AnnotateError(
                f"{actors} actors x {gpus_per_actor:g} GPUs need {actors * gpus_per_actor:g}; "
                f"the Ray cluster has {resources.get('GPU', 0):g}"
            )
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # results in chunk order
        context.enable_progress_bars = False  # the driver's progress bar counts documents
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # one line per window otherwise

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "actors": self.actors,
            "gpus_per_actor": self.gpus_per_actor,
            "address": self.address or "local",
            "window_chunks": self.window_chunks,
        }

    def run(self, chunks: Iterator[Chunk]) -> Iterator[ChunkResult]:
        window: list[Chunk] = []
        for chunk in chunks:
            window.append(chunk)
            if len(window) >= self.window_chunks:
                yield from self._run_window(window)
                window = []
        if window:
            yield from self._run_window(window)

    def _run_window(self, window: list[Chunk]) -> Iterator[ChunkResult]:
        ray = self._ray
        items = [{"key": c.key, "texts": c.texts} for c in window]
        dataset = ray.data.from_items(items, override_num_blocks=min(len(items), 4 * self.actors))
        dataset = dataset.map_batches(
            RayAnnotator,
            fn_constructor_kwargs={"spec": self.spec},
            batch_size=1,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=self.actors),
            num_cpus=self.spec.threads,
            num_gpus=self.gpus_per_actor or None,
        )
        expected = [c.key for c in window]
        ready: dict[int, ChunkResult] = {}
        nxt = 0
        for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            for payload in batch.column("result").to_pylist():
                result: ChunkResult = pickle.loads(payload)
                ready[result.key] = result
            while nxt < len(expected) and expected[nxt] in ready:
                yield ready.pop(expected[nxt])
                nxt += 1
        if nxt != len(expected):
            raise AnnotateError(f"Ray returned {nxt} of {len(expected)} chunks of a window")

    def close(self) -> None:
        if self._own:
            self._ray.shutdown()
            self._own = False


def make_engine(
    name: str,
    spec: PipelineSpec,
    *,
    workers: int = 2,
    actors: int = 2,
    gpus_per_actor: float = 0.0,
    address: str = "",
    ray_temp_dir: str = "",
    ray_window_chunks: int = 0,
) -> Engine:
    if name == "local":
        return LocalEngine(spec)
    if name == "processes":
        return ProcessEngine(spec, workers)
    if name == "ray":
        return RayEngine(
            spec,
            actors,
            gpus_per_actor=gpus_per_actor,
            address=address,
            temp_dir=ray_temp_dir,
            window_chunks=ray_window_chunks,
        )
    raise AnnotateError(f"unknown --engine {name!r}; use one of {', '.join(ENGINES)}")
