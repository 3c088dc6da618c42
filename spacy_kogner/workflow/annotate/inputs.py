"""Document readers: every input format becomes one stream of ``Record`` s, one per input position.

Why one record per *position*, bad ones included: shards are cut by position (``shards.py``), so a
malformed line must still take its place in the stream, or every later document would move to
another shard when the line is fixed, and a resumed run would no longer line up with the first.
A reader never raises on a bad document; it yields a record with a ``bad`` reason instead. It
raises ``AnnotateError`` only when the file itself cannot be read on (a missing column, broken XML).

Formats (``--format``; default from the suffix, ``.gz`` is read through gzip):

- ``text`` (``.txt``): one document a line, id = line number (from 1);
- ``jsonl`` (``.jsonl``/``.ndjson``): ``{"id": .., "text": ..}`` per line;
- ``parquet`` (``.parquet``/``.pq``): ``id`` (optional) and ``text`` columns;
- ``pubtator`` (``.pubtator``): title and abstract lines become one text,
  ``title + " " + abstract``, so entity offsets are PubTator's own offsets; id = PMID;
- ``bioc`` (``.xml``/``.bioc``): BioC XML; each document's passages are joined at their
  ``offset`` (the gap filled with spaces), so entity offsets are BioC offsets; id = document id.

A record without an id gets its line number / position (from 1) as id.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .errors import AnnotateError

FORMATS = ("text", "jsonl", "parquet", "pubtator", "bioc")
_SUFFIXES = {
    ".txt": "text",
    ".text": "text",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".pubtator": "pubtator",
    ".xml": "bioc",
    ".bioc": "bioc",
}
_CHUNK = 1 << 20
# A PubTator title/abstract line: "<pmid>|t|<title>" or "<pmid>|a|<abstract>"
_PUBTATOR_TEXT = re.compile(rb"^[^|\t\r\n]+\|[ta]\|")
_PUBTATOR_TITLE = re.compile(rb"^[^|\t\r\n]+\|t\|")
BIOC_HINT = "PubTator and BioC XML input need the bioc package: pip install 'spacy-kogner[annotate]'"

# Reasons a document is skipped (the keys of a shard's ``bad`` counts in the manifest).
UNDECODABLE = "undecodable"  # bytes that are not UTF-8
MALFORMED = "malformed"  # a JSONL line that is not a JSON object, a PubTator block without text lines
NO_TEXT = "no_text"  # a record without text (missing or null)
NOT_TEXT = "not_text"  # a text that is not a string
EMPTY = "empty"
WHITESPACE = "whitespace"
TOO_LONG = "too_long"  # over --max-chars


@dataclass(frozen=True)
class Record:
    """One input position: its id and text, or the reason there is no usable text."""

    position: int  # 0-based position in the input; decides the shard
    id: str
    text: str | None
    bad: str | None = None
    detail: str = ""


def detect_format(path: str | Path, fmt: str = "auto") -> str:
    """``fmt`` when given, else the format of the suffix (``.gz`` looked through)."""
    if fmt != "auto":
        if fmt not in FORMATS:
            raise AnnotateError(f"unknown --format {fmt!r}; use one of {', '.join(FORMATS)}")
        return fmt
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in _SUFFIXES:
        return _SUFFIXES[suffixes[-1]]
    raise AnnotateError(f"cannot tell the format of {path} from its suffix; pass --format ({', '.join(FORMATS)})")


def screen(record: Record, max_chars: int) -> Record:
    """The record, or a bad one when its text is empty, whitespace only or over ``max_chars``."""
    if record.bad is not None or record.text is None:
        return record
    text = record.text
    reason = detail = ""
    if not text:
        reason, detail = EMPTY, "empty text"
    elif text.isspace():
        reason, detail = WHITESPACE, "whitespace only"
    elif len(text) > max_chars:
        reason, detail = TOO_LONG, f"{len(text)} characters > --max-chars {max_chars}"
    if not reason:
        return record
    return Record(record.position, record.id, None, reason, detail)


def iter_records(path: str | Path, fmt: str, start: int = 0) -> Iterator[Record]:
    """Every record of ``path`` from position ``start`` on, in input order."""
    readers = {
        "text": _read_text,
        "jsonl": _read_jsonl,
        "parquet": _read_parquet,
        "pubtator": _read_pubtator,
        "bioc": _read_bioc,
    }
    path = Path(path)
    if not path.is_file():
        raise AnnotateError(f"input not found: {path}")
    return readers[fmt](path, start)


def input_identity(path: str | Path, fmt: str) -> dict[str, Any]:
    """Path, size and sha256 of the input, plus its number of records where one read can tell.

    The hash is what a resume is checked against: a file edited in place is a new input. Counting
    lines rides on the same read (text/JSONL), Parquet knows its row count; for PubTator and BioC
    (and gzip) the count is left out and the progress bar shows a rate without an ETA."""
    path = Path(path)
    digest = hashlib.sha256()
    newlines, last = 0, b"\n"
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
            newlines += block.count(b"\n")
            last = block[-1:]
    records: int | None = None
    compressed = path.suffix.lower() == ".gz"
    if fmt in ("text", "jsonl") and not compressed:
        size = path.stat().st_size
        records = newlines + (1 if size and last != b"\n" else 0)
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        records = pq.ParquetFile(path).metadata.num_rows
    return {
        "path": str(path.resolve()),
        "format": fmt,
        "size": path.stat().st_size,
        "sha256": digest.hexdigest(),
        "records": records,
    }


# ------------------------------------------------------------------------------------------ readers
def _open_binary(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(0-based line number, line without its end) for every line, ``\\r\\n`` and ``\\n`` alike."""
    with _open_binary(path) as handle:
        for number, raw in enumerate(handle):
            line = raw[:-1] if raw.endswith(b"\n") else raw
            if line.endswith(b"\r"):
                line = line[:-1]
            if number == 0 and line.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark
                line = line[3:]
            yield number, line


def _decode(raw: bytes) -> tuple[str | None, str]:
    try:
        return raw.decode("utf-8"), ""
    except UnicodeDecodeError as err:
        return None, f"not UTF-8 at byte {err.start}"


def _id_of(value: Any, position: int) -> str:
    if value is None:
        return str(position + 1)
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _read_text(path: Path, start: int) -> Iterator[Record]:
    for pos, raw in _lines(path):
        if pos < start:
            continue
        text, why = _decode(raw)
        yield Record(pos, str(pos + 1), text) if text is not None else Record(pos, str(pos + 1), None, UNDECODABLE, why)


def _read_jsonl(path: Path, start: int) -> Iterator[Record]:
    for pos, raw in _lines(path):
        if pos < start:
            continue
        line_id = str(pos + 1)
        line, why = _decode(raw)
        if line is None:
            yield Record(pos, line_id, None, UNDECODABLE, why)
            continue
        if not line.strip():
            yield Record(pos, line_id, None, MALFORMED, "blank line")
            continue
        try:
            obj = json.loads(line)
        except ValueError as err:
            yield Record(pos, line_id, None, MALFORMED, f"malformed JSON: {err}")
            continue
        if not isinstance(obj, dict):
            yield Record(pos, line_id, None, MALFORMED, f"a JSON {type(obj).__name__}, not an object")
            continue
        yield _record(pos, obj.get("id"), obj.get("text"), "text" in obj)


def _record(pos: int, raw_id: Any, text: Any, has_text: bool = True) -> Record:
    doc_id = _id_of(raw_id, pos)
    if text is None:
        return Record(pos, doc_id, None, NO_TEXT, "no text field" if not has_text else "text is null")
    if isinstance(text, bytes):
        decoded, why = _decode(text)
        return Record(pos, doc_id, decoded) if decoded is not None else Record(pos, doc_id, None, UNDECODABLE, why)
    if not isinstance(text, str):
        return Record(pos, doc_id, None, NOT_TEXT, f"text is a {type(text).__name__}")
    return Record(pos, doc_id, text)


def _read_parquet(path: Path, start: int) -> Iterator[Record]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pfile = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as err:
        raise AnnotateError(f"{path}: not a readable Parquet file ({err})") from err
    names = pfile.schema_arrow.names
    if "text" not in names:
        raise AnnotateError(f"{path}: Parquet input needs a 'text' column (and 'id'); it has {names}")
    columns = ["id", "text"] if "id" in names else ["text"]
    # Skip whole row groups before ``start`` without reading them (a resume deep into a big file).
    first_group, row = 0, 0
    while first_group < pfile.num_row_groups and row + pfile.metadata.row_group(first_group).num_rows <= start:
        row += pfile.metadata.row_group(first_group).num_rows
        first_group += 1
    groups = list(range(first_group, pfile.num_row_groups))
    if not groups:
        return
    for batch in pfile.iter_batches(batch_size=4096, row_groups=groups, columns=columns):
        texts = batch.column("text").to_pylist()
        ids = batch.column("id").to_pylist() if "id" in columns else [None] * len(texts)
        for raw_id, text in zip(ids, texts, strict=True):
            if row >= start:
                yield _record(row, raw_id, text)
            row += 1


def _pubtator_blocks(path: Path) -> Iterator[list[bytes]]:
    """The lines of each PubTator document: blank lines separate documents, and so does a title
    line when the block already has one (a missing blank line must not merge two abstracts)."""
    block: list[bytes] = []
    for _, line in _lines(path):
        if not line.strip():
            if block:
                yield block
            block = []
            continue
        if _PUBTATOR_TITLE.match(line) and any(_PUBTATOR_TITLE.match(x) for x in block):
            yield block
            block = []
        block.append(line)
    if block:
        yield block


def _bioc_module() -> Any:
    try:
        import bioc
        from bioc import biocxml, pubtator  # noqa: F401  (submodules are not imported by ``import bioc``)
    except ImportError as err:
        raise AnnotateError(BIOC_HINT) from err
    return bioc


def _read_pubtator(path: Path, start: int) -> Iterator[Record]:
    bioc = _bioc_module()
    for pos, block in enumerate(_pubtator_blocks(path)):
        if pos < start:
            continue
        first = block[0]
        guess = re.split(rb"[|\t]", first, maxsplit=1)[0].decode("utf-8", "replace").strip() or str(pos + 1)
        lines = [x for x in block if _PUBTATOR_TEXT.match(x)]  # annotation lines are not needed
        decoded = [_decode(x) for x in lines]
        bad = next((why for text, why in decoded if text is None), "")
        if bad:
            yield Record(pos, guess, None, UNDECODABLE, bad)
            continue
        pmids = {x.split("|", 1)[0].strip() for x, _ in decoded if x is not None}
        if len(pmids) > 1:
            yield Record(pos, guess, None, MALFORMED, f"title and abstract lines name different PMIDs {sorted(pmids)}")
            continue
        with contextlib.redirect_stdout(io.StringIO()):  # bioc prints lines it cannot parse
            docs = list(bioc.pubtator.iterparse_s([x for x, _ in decoded if x is not None]))
        if not docs:
            yield Record(pos, guess, None, MALFORMED, "no title or abstract line")
            continue
        doc = docs[0]
        title, abstract = (doc.title or "").strip(), (doc.abstract or "").strip()
        text = f"{title} {abstract}" if title and abstract else title or abstract
        yield Record(pos, _id_of(doc.pmid or None, pos), text)


def _join_at_offsets(parts: Iterable[tuple[int, str]]) -> str:
    """Texts placed at their character offsets; a gap is filled with spaces, an overlap (offsets
    that do not fit the texts) falls back to one space between texts."""
    text = ""
    for offset, body in parts:
        if not body:
            continue
        gap = offset - len(text)
        if not text:
            text = " " * max(offset, 0) + body
        elif gap >= 1:
            text += " " * gap + body
        else:
            text += " " + body
    return text


def _bioc_text(document: Any) -> str:
    parts: list[tuple[int, str]] = []
    for passage in document.passages:
        if passage.text:
            parts.append((passage.offset, passage.text))
        else:  # sentence-level BioC keeps the text in the sentences
            parts.extend((sentence.offset, sentence.text or "") for sentence in passage.sentences)
    return _join_at_offsets(parts)


def _read_bioc(path: Path, start: int) -> Iterator[Record]:
    _bioc_module()
    from bioc.biocxml import BioCXMLDocumentReader
    from lxml import etree

    with _open_binary(path) as handle:
        try:
            reader = BioCXMLDocumentReader(handle)
            for pos, document in enumerate(reader):
                _release_parsed(reader)
                if pos < start:
                    continue
                yield _record(pos, document.id or None, _bioc_text(document))
        except etree.XMLSyntaxError as err:
            raise AnnotateError(f"{path}: malformed BioC XML ({err}); the documents before it were annotated") from err


def _release_parsed(reader: Any) -> None:
    """Free the XML elements of documents already turned into BioC objects.

    bioc's reader keeps every parsed element alive, so memory grows with the file; the documents
    it returned are plain Python objects, so their elements can go. Guarded: if bioc renames its
    private state this is a no-op (memory then grows as in bioc itself)."""
    elem = getattr(reader, "_BioCXMLDocumentReader__elem", None)
    if elem is None or getattr(elem, "tag", None) != "document":
        return
    elem.clear()
    parent = elem.getparent()
    while parent is not None and elem.getprevious() is not None:
        del parent[0]
