"""The output folder: Parquet entity shards, per-shard bad-document lists and one manifest.

Why it is safe to kill a run at any moment:

* shard ``k`` holds the documents at input positions ``[k * shard_size, (k + 1) * shard_size)``,
  so a shard is known by its index alone and a rerun writes exactly the same shard again;
* every file is written to a temporary name, flushed to disk and renamed over its final name
  (atomic on POSIX), so a reader sees a whole file or none;
* the manifest lists a shard as done only after its files are in place, and is itself replaced
  atomically; a shard written but not yet listed is simply written again (same bytes);
* a lock file keeps two runs out of one folder.

A resume is refused when the folder was made from another input, model or output-deciding
setting (``identity``), because mixing them would give a table no single run could produce.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import AnnotateError
from .inputs import Record

MANIFEST = "manifest.json"
LOCK = ".annotate.lock"
MANIFEST_VERSION = 1
SHARD_RE = re.compile(r"^(entities|bad)-\d{6}\.(parquet|jsonl)$")
TMP_RE = re.compile(r"^\..*\.tmp$")

# One row per entity. ``doc_index`` is the input position (ids need not be unique); ``score`` is
# null for an entity another pipe set; ``kb_id`` is empty unless a linker set ``ent.kb_id_``.
SCHEMA = pa.schema(
    [
        ("doc_index", pa.int64()),
        ("doc_id", pa.string()),
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("text", pa.string()),
        ("label", pa.string()),
        ("score", pa.float32()),
        ("kb_id", pa.string()),
    ]
)


def shard_name(index: int) -> str:
    return f"entities-{index:06d}.parquet"


def bad_name(index: int) -> str:
    return f"bad-{index:06d}.jsonl"


@dataclass
class EntityRows:
    """Entity rows in columns; ``doc`` is a document's index within what was annotated together."""

    doc: list[int] = field(default_factory=list)
    start: list[int] = field(default_factory=list)
    end: list[int] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    label: list[str] = field(default_factory=list)
    score: list[float | None] = field(default_factory=list)
    kb_id: list[str] = field(default_factory=list)

    def add(self, doc: int, start: int, end: int, text: str, label: str, score: float | None, kb_id: str) -> None:
        self.doc.append(doc)
        self.start.append(start)
        self.end.append(end)
        self.text.append(text)
        self.label.append(label)
        self.score.append(score)
        self.kb_id.append(kb_id)

    def __len__(self) -> int:
        return len(self.doc)


def entity_table(parts: Sequence[tuple[Sequence[Record], EntityRows]]) -> pa.Table:
    """One shard's table from (annotated records, their rows) parts, sorted by (position, start,
    end, label): the order never depends on how the documents were batched or which worker ran them."""
    keyed = []
    for records, rows in parts:
        for i in range(len(rows)):
            record = records[rows.doc[i]]
            keyed.append(
                (
                    (record.position, rows.start[i], rows.end[i], rows.label[i]),
                    (record.id, rows.text[i], rows.score[i], rows.kb_id[i]),
                )
            )
    keyed.sort(key=lambda item: item[0])
    columns: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
    for (position, start, end, label), (doc_id, text, score, kb_id) in keyed:
        columns["doc_index"].append(position)
        columns["doc_id"].append(doc_id)
        columns["start"].append(start)
        columns["end"].append(end)
        columns["text"].append(text)
        columns["label"].append(label)
        columns["score"].append(score)
        columns["kb_id"].append(kb_id)
    return pa.table(columns, schema=SCHEMA)


def parquet_bytes(table: pa.Table) -> bytes:
    """The table as Parquet bytes with fixed writer options (same table, same bytes)."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", use_dictionary=True, write_statistics=True)
    return sink.getvalue()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` holds either its old content or all of ``data``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


class ShardStore:
    """OUTPUT_DIR: opens (or refuses) a run, writes shards, keeps the manifest current."""

    def __init__(self, out_dir: str | Path) -> None:
        self.dir = Path(out_dir)
        self.manifest: dict[str, Any] = {}
        self._lock: IO[str] | None = None

    # ------------------------------------------------------------------ opening and resuming
    def open(self, identity: dict[str, Any], *, overwrite: bool = False) -> dict[str, Any]:
        """Start or resume a run for ``identity`` (input, model, settings); return the manifest.

        Refuses a folder made for another identity (unless ``overwrite``) and a non-empty folder
        that holds no manifest (it is not ours: nothing in it is touched)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        manifest_path = self.dir / MANIFEST
        ours = [p for p in self.dir.iterdir() if SHARD_RE.match(p.name) or TMP_RE.match(p.name)]
        if manifest_path.is_file() and not overwrite:
            try:
                manifest = json.loads(manifest_path.read_text(encoding="utf8"))
            except ValueError as err:
                raise AnnotateError(
                    f"{manifest_path} is not valid JSON ({err}); use a new OUTPUT_DIR or --overwrite"
                ) from err
            diff = _differences(manifest.get("identity"), identity)
            if diff:
                raise AnnotateError(
                    f"{self.dir} holds a run of another input/model/settings (differs: {', '.join(diff)}); "
                    "write to a new OUTPUT_DIR, or pass --overwrite to start this one over"
                )
            self.manifest = manifest
        else:
            foreign = [p.name for p in self.dir.iterdir() if p.name not in (MANIFEST, LOCK) and p not in ours]
            if not manifest_path.is_file() and foreign and not overwrite:
                raise AnnotateError(
                    f"{self.dir} is not empty and holds no {MANIFEST} (found {sorted(foreign)[:3]}); "
                    "use an empty or new OUTPUT_DIR"
                )
            for path in ours:  # --overwrite (or a first run): only our own files go
                path.unlink()
            manifest_path.unlink(missing_ok=True)
            self.manifest = {
                "version": MANIFEST_VERSION,
                "identity": identity,
                "shards": {},
                "totals": {"docs": 0, "rows": 0, "bad": 0},
                "complete": False,
                "runs": [],
            }
            self._save()
        for path in self.dir.iterdir():  # temp files of a killed run: never complete, never listed
            if TMP_RE.match(path.name):
                path.unlink()
        return self.manifest

    def _take_lock(self) -> None:
        handle = open(self.dir / LOCK, "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            handle.close()
            raise AnnotateError(f"another annotate run is writing to {self.dir}") from err
        self._lock = handle

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    @property
    def done(self) -> set[int]:
        return {int(k) for k in self.manifest["shards"]}

    # ------------------------------------------------------------------------ writing
    def write_shard(self, index: int, records: Sequence[Record], table: pa.Table, bad: Sequence[Record]) -> dict:
        """Write shard ``index`` (its entity table and bad-document list), then list it as done."""
        data = parquet_bytes(table)
        atomic_write(self.dir / shard_name(index), data)
        bad_file = None
        if bad:
            lines = [
                json.dumps(
                    {"doc_index": r.position, "doc_id": r.id, "reason": r.bad, "detail": r.detail}, ensure_ascii=False
                )
                for r in bad
            ]
            bad_file = bad_name(index)
            atomic_write(self.dir / bad_file, ("\n".join(lines) + "\n").encode("utf8"))
        else:
            (self.dir / bad_name(index)).unlink(missing_ok=True)  # from an earlier, interrupted write
        entry = {
            "file": shard_name(index),
            "docs": len(records),
            "rows": table.num_rows,
            "bad": len(bad),
            "bad_reasons": dict(sorted(Counter(r.bad for r in bad).items())),
            "bad_file": bad_file,
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        self.manifest["shards"][str(index)] = entry
        totals = self.manifest["totals"]
        totals["docs"] += entry["docs"]
        totals["rows"] += entry["rows"]
        totals["bad"] += entry["bad"]
        self._save()
        return entry

    def finish(self, n_shards: int, n_docs: int) -> None:
        """Mark the run complete once every shard of an input of ``n_docs`` documents is listed."""
        missing = sorted(set(range(n_shards)) - self.done)
        if missing:
            raise AnnotateError(f"shards {missing[:5]} are missing at the end of the input")
        self.manifest["complete"] = True
        self.manifest["totals"]["shards"] = n_shards
        self.manifest["totals"]["input_docs"] = n_docs
        self._save()

    def add_run(self, run: dict[str, Any]) -> None:
        self.manifest["runs"].append(run)
        self._save()

    def _save(self) -> None:
        atomic_write(self.dir / MANIFEST, (json.dumps(self.manifest, indent=1, sort_keys=False) + "\n").encode("utf8"))


def read_entities(out_dir: str | Path) -> pa.Table:
    """All shards of a finished (or partial) run, in order, as one table."""
    out_dir = Path(out_dir)
    manifest = json.loads((out_dir / MANIFEST).read_text(encoding="utf8"))
    files = [out_dir / manifest["shards"][k]["file"] for k in sorted(manifest["shards"], key=int)]
    if not files:
        return SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(f, schema=SCHEMA) for f in files])
