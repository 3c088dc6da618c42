"""Corpus readers and writers: every on-disk NER format becomes one list of ``Sentence``.

Training, linking and evaluation all consume the same small record (tokens + token spans with
an optional KG link), so a format is supported by writing one reader and one writer here, never
by teaching downstream code about files.

Formats (``format=`` name, usual suffix):

- ``iob``  (``.tsv``/``.iob``/``.conll``): ``token<TAB>tag`` per line (extra middle columns are
  ignored, the tag is the last column), a blank line between sentences, ``-DOCSTART-`` lines start
  a new document. Tags may be IOB1/IOB2 (``B-``/``I-``), BIOES (``S-``/``E-``) or BILOU
  (``U-``/``L-``); one reader handles all of them. **I-without-B rule:** an ``I-X`` (or ``E-X``/
  ``L-X``) that does not continue an open ``X`` span opens a new span, as conlleval does; so
  IOB1 files and slightly broken IOB2 files read the way their authors meant.
- ``gliner`` (``.json``): a JSON list of ``{"tokenized_text", "ner": [[start, end_inclusive,
  label]], "kge"?, "corpus"?, "labels"?, "doc_id"?}``.
- ``jsonl`` (``.jsonl``): nested spans, one sentence per line: ``{"tokens", "spans": [{"start",
  "end" (exclusive), "label", "kge"?, "match"?}], "corpus"?, "doc_id"?}``. Overlaps allowed.
- ``spacy`` (``.spacy``): a ``DocBin``; spans come from ``doc.spans["sc"]`` (``kb_id_`` = kge)
  or, when that group is missing, from ``doc.ents``.

All writers are lossless for the reader of the same format (tests check round trips).

Text files are read as UTF-8 with a leading BOM dropped (``textio``): a file in another encoding
fails with its name, line and byte offset, never with a bare ``UnicodeDecodeError``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..textio import open_text, read_text, where_not_utf8

SPANS_KEY = "sc"
_TAG_RE = re.compile(r"^(?:O|([BIESLU])-(.+))$")
_DOCSTART = "-DOCSTART-"
_SUFFIX_FORMATS = {
    ".tsv": "iob",
    ".iob": "iob",
    ".bio": "iob",
    ".conll": "iob",
    ".txt": "iob",
    ".json": "gliner",
    ".jsonl": "jsonl",
    ".spacy": "spacy",
}
FORMATS = ("iob", "gliner", "jsonl", "spacy")


class CorpusFormatError(ValueError):
    """A corpus file that cannot be read; the message names the file, the line and what was expected."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line
        self.reason = message

    @classmethod
    def not_utf8(cls, path: str | Path, err: UnicodeDecodeError) -> CorpusFormatError:
        """The file, line and byte where a corpus stops being UTF-8."""
        return cls(path, *where_not_utf8(path, err))


@dataclass
class Span:
    """A labelled token span; ``end`` is exclusive (as in spaCy), ``kge`` the linked KG node id."""

    start: int
    end: int
    label: str
    kge: str | None = None
    match: str | None = None


@dataclass
class Sentence:
    """One tokenised sentence with possibly overlapping spans, tagged with its corpus and document."""

    tokens: list[str]
    spans: list[Span] = field(default_factory=list)
    corpus: str = ""
    doc_id: str | None = None

    def text_of(self, span: Span) -> str:
        """The span's surface string (tokens joined by single spaces)."""
        return " ".join(self.tokens[span.start : span.end])


def detect_format(path: str | Path) -> str:
    """Format name from a file suffix; a folder is not a corpus file."""
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIX_FORMATS:
        raise CorpusFormatError(path, None, f"cannot infer the format from suffix '{suffix}'; pass format=")
    return _SUFFIX_FORMATS[suffix]


def read_corpus(path: str | Path, format: str = "auto", corpus: str | None = None) -> list[Sentence]:
    """Read one corpus file into sentences.

    ``corpus`` names the corpus when the file does not (TSV, DocBin without metadata); it defaults
    to the parent folder's name, which is how the mirror lays corpora out (``ner/<NAME>/train.tsv``).
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusFormatError(path, None, "no such file")
    fmt = detect_format(path) if format == "auto" else format
    name = corpus if corpus is not None else path.resolve().parent.name
    if fmt == "iob":
        return read_iob(path, name)
    if fmt == "gliner":
        return read_gliner_json(path, name)
    if fmt == "jsonl":
        return read_jsonl(path, name)
    if fmt == "spacy":
        return read_docbin(path, name)
    raise CorpusFormatError(path, None, f"unknown format '{fmt}'; expected one of {FORMATS} or 'auto'")


def write_corpus(sentences: list[Sentence], path: str | Path, format: str = "auto", **kwargs: Any) -> None:
    """Write sentences in the format named by ``format`` or the path's suffix."""
    path = Path(path)
    fmt = detect_format(path) if format == "auto" else format
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "iob":
        write_iob(sentences, path, **kwargs)
    elif fmt == "gliner":
        write_gliner_json(sentences, path, **kwargs)
    elif fmt == "jsonl":
        write_jsonl(sentences, path)
    elif fmt == "spacy":
        write_docbin(sentences, path)
    else:
        raise CorpusFormatError(path, None, f"unknown format '{fmt}'; expected one of {FORMATS}")


# ---------------------------------------------------------------------------------------- IOB


def _close(spans: list[Span], open_span: list[Any] | None, end: int) -> None:
    if open_span is not None:
        spans.append(Span(open_span[0], end, open_span[1]))


def read_iob(path: str | Path, corpus: str = "") -> list[Sentence]:
    """Read IOB1/IOB2/BIOES/BILOU token-per-line files (see the module docstring for the rules)."""
    path = Path(path)
    try:
        return _read_iob(path, corpus)
    except UnicodeDecodeError as err:
        raise CorpusFormatError.not_utf8(path, err) from None


def _read_iob(path: Path, corpus: str) -> list[Sentence]:
    sentences: list[Sentence] = []
    tokens: list[str] = []
    spans: list[Span] = []
    open_span: list[Any] | None = None  # [start, label]
    doc_index = 0
    saw_docstart = False

    def flush() -> None:
        nonlocal tokens, spans, open_span
        if tokens:
            _close(spans, open_span, len(tokens))
            doc_id = f"{corpus}-{path.stem}-{doc_index}" if saw_docstart else None
            sentences.append(Sentence(tokens, spans, corpus, doc_id))
        tokens, spans, open_span = [], [], None

    with open_text(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                flush()
                continue
            cols = line.split("\t")
            if cols[0] == _DOCSTART:
                flush()
                doc_index += 1 if saw_docstart else 0
                saw_docstart = True
                continue
            if len(cols) < 2:
                raise CorpusFormatError(path, lineno, f"expected 'token<TAB>tag', got {line!r}")
            token, tag = cols[0], cols[-1].strip()
            if not token.strip():
                raise CorpusFormatError(path, lineno, "empty token")
            m = _TAG_RE.match(tag)
            if m is None:
                raise CorpusFormatError(path, lineno, f"expected a tag 'O' or '<B|I|E|S|L|U>-LABEL', got {tag!r}")
            i = len(tokens)
            tokens.append(token)
            prefix, label = m.group(1), m.group(2)
            if prefix is None:  # O
                _close(spans, open_span, i)
                open_span = None
            elif prefix in "BSU":
                _close(spans, open_span, i)
                open_span = [i, label]
                if prefix in "SU":
                    _close(spans, open_span, i + 1)
                    open_span = None
            else:  # I, E, L: continue a span of the same label, or open one (I-without-B rule)
                if open_span is None or open_span[1] != label:
                    _close(spans, open_span, i)
                    open_span = [i, label]
                if prefix in "EL":
                    _close(spans, open_span, i + 1)
                    open_span = None
    flush()
    return sentences


def write_iob(sentences: list[Sentence], path: str | Path, scheme: str = "iob2") -> None:
    """Write flat IOB2 (or ``scheme="bioes"``) TSV; overlapping spans cannot be written and fail."""
    path = Path(path)
    lines: list[str] = []
    last_doc: str | None = None
    for sent in sentences:
        if sent.doc_id is not None and sent.doc_id != last_doc:
            lines += [f"{_DOCSTART}\tO", ""]
            last_doc = sent.doc_id
        tags = ["O"] * len(sent.tokens)
        for span in sorted(sent.spans, key=lambda s: s.start):
            if any(t != "O" for t in tags[span.start : span.end]):
                raise CorpusFormatError(path, None, "overlapping spans cannot be written as IOB; use jsonl")
            n = span.end - span.start
            for k in range(n):
                if scheme == "bioes":
                    p = "S" if n == 1 else "B" if k == 0 else "E" if k == n - 1 else "I"
                else:
                    p = "B" if k == 0 else "I"
                tags[span.start + k] = f"{p}-{span.label}"
        lines += [f"{tok}\t{tag}" for tok, tag in zip(sent.tokens, tags, strict=True)]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf8")


# ------------------------------------------------------------------------------ GLiNER JSON


def _check_span(path: Path, where: int, n_tokens: int, start: Any, end: Any) -> None:
    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= n_tokens):
        raise CorpusFormatError(
            path, where, f"span [{start}, {end}) is not a non-empty token range inside 0..{n_tokens}"
        )


def _json_lineno(text: str, record_index: int) -> int | None:
    """Line where the n-th element of the top-level list starts (any JSON value, not only
    objects; escaped quotes inside strings do not end them), so errors point into the file."""
    depth, count, line = 0, -1, 1
    in_str = esc = False
    expect = False  # inside the top-level list, before the next element
    for ch in text:
        if ch == "\n":
            line += 1
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if expect and depth == 1 and not ch.isspace() and ch not in ",]":
            expect = False
            count += 1
            if count == record_index:
                return line
        if ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            expect = depth == 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 1:
            expect = True
    return None


def gliner_record_to_sentence(rec: Any, corpus: str, path: Path, where: int | None) -> Sentence:
    """One GLiNER record (inclusive ends) to a ``Sentence``; ``where`` is the line used in errors
    (``read_gliner_records`` reports the record's index and its real line)."""
    if not isinstance(rec, dict) or "tokenized_text" not in rec or "ner" not in rec:
        raise CorpusFormatError(path, where, "expected an object with 'tokenized_text' and 'ner'")
    tokens = rec["tokenized_text"]
    if not isinstance(tokens, list) or not all(isinstance(t, str) and t for t in tokens):
        raise CorpusFormatError(path, where, "'tokenized_text' must be a list of non-empty strings")
    kge = rec.get("kge")
    if kge is not None and (not isinstance(kge, list) or len(kge) != len(rec["ner"])):
        raise CorpusFormatError(path, where, "'kge' must be a list with one entry per 'ner' entry")
    matches = rec.get("match")
    if matches is not None and (not isinstance(matches, list) or len(matches) != len(rec["ner"])):
        raise CorpusFormatError(path, where, "'match' must be a list with one entry per 'ner' entry")
    spans = []
    for k, ent in enumerate(rec["ner"]):
        if not (isinstance(ent, list) and len(ent) == 3 and isinstance(ent[2], str)):
            raise CorpusFormatError(path, where, f"ner entry {ent!r} is not [start, end_inclusive, label]")
        start, end = ent[0], ent[1] + 1 if isinstance(ent[1], int) else ent[1]
        _check_span(path, where, len(tokens), start, end)
        node = kge[k] if kge is not None else None
        if node is not None and not isinstance(node, str):
            raise CorpusFormatError(path, where, f"kge entry {node!r} must be a node id string or null")
        spans.append(Span(start, end, ent[2], node, matches[k] if matches else None))
    return Sentence(list(tokens), spans, rec.get("corpus", corpus), rec.get("doc_id"))


def read_gliner_json(path: str | Path, corpus: str = "") -> list[Sentence]:
    """Read a GLiNER training file (a JSON list of records)."""
    return [sent for _, sent in read_gliner_records(path, corpus)]


def read_gliner_records(path: str | Path, corpus: str = "") -> list[tuple[dict[str, Any], Sentence]]:
    """Each record of a GLiNER JSON file beside its ``Sentence`` (the trainer also reads fields a
    ``Sentence`` does not hold). Errors name the file, the record's line and the record's index."""
    path = Path(path)
    try:
        text = read_text(path)
    except UnicodeDecodeError as err:
        raise CorpusFormatError.not_utf8(path, err) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise CorpusFormatError(path, err.lineno, f"invalid JSON ({err.msg}, column {err.colno})") from None
    if not isinstance(data, list):
        raise CorpusFormatError(path, 1, "expected a JSON list of records")
    out = []
    for i, rec in enumerate(data):
        try:
            out.append((rec, gliner_record_to_sentence(rec, corpus, path, None)))
        except CorpusFormatError as err:
            raise CorpusFormatError(path, _json_lineno(text, i), f"record {i}: {err.reason}") from None
    return out


def sentence_to_gliner(sent: Sentence, labels: list[str] | None = None, extras: bool = False) -> dict:
    """The training-ready GLiNER record (inclusive ends, one ``kge`` entry per ``ner`` entry).

    ``extras`` adds ``match`` and ``doc_id`` so that a GLiNER JSON file round-trips everything a
    ``Sentence`` holds; training-ready folders leave them out and keep exactly the five fields.
    """
    spans = sorted(sent.spans, key=lambda s: (s.start, s.end, s.label))
    rec: dict[str, Any] = {
        "tokenized_text": list(sent.tokens),
        "ner": [[s.start, s.end - 1, s.label] for s in spans],
        "kge": [s.kge for s in spans],
        "corpus": sent.corpus,
        "labels": list(labels) if labels is not None else sorted({s.label for s in spans}),
    }
    if extras:
        rec["match"] = [s.match for s in spans]
        if sent.doc_id is not None:
            rec["doc_id"] = sent.doc_id
    return rec


def corpus_label_sets(sentences: Iterable[Sentence]) -> dict[str, list[str]]:
    """Each corpus's full label set, so a pooled training set keeps negatives per corpus."""
    sets: dict[str, set[str]] = {}
    for sent in sentences:
        sets.setdefault(sent.corpus, set()).update(s.label for s in sent.spans)
    return {c: sorted(v) for c, v in sets.items()}


def write_gliner_json(
    sentences: list[Sentence],
    path: str | Path,
    label_sets: dict[str, list[str]] | Callable[[Sentence], list[str]] | None = None,
    extras: bool = True,
) -> None:
    """Write GLiNER JSON; ``label_sets`` (corpus → labels, or a function of the sentence when label
    sets differ within a corpus) defaults to the labels seen per corpus."""
    sets = label_sets or corpus_label_sets(sentences)
    labels_of = sets if callable(sets) else (lambda s: sets.get(s.corpus))
    records = [sentence_to_gliner(s, labels_of(s), extras) for s in sentences]
    with Path(path).open("w", encoding="utf8") as fh:
        fh.write("[\n")
        for i, rec in enumerate(records):
            fh.write(json.dumps(rec, ensure_ascii=False))
            fh.write(",\n" if i < len(records) - 1 else "\n")
        fh.write("]\n")


# ------------------------------------------------------------------------------------ JSONL


def read_jsonl(path: str | Path, corpus: str = "") -> list[Sentence]:
    """Read nested-span JSONL (exclusive ends, overlaps allowed), one sentence per line."""
    path = Path(path)
    try:
        return _read_jsonl(path, corpus)
    except UnicodeDecodeError as err:
        raise CorpusFormatError.not_utf8(path, err) from None


def _read_jsonl(path: Path, corpus: str) -> list[Sentence]:
    out = []
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise CorpusFormatError(path, lineno, f"invalid JSON ({err.msg})") from err
            if not isinstance(rec, dict) or not isinstance(rec.get("tokens"), list):
                raise CorpusFormatError(path, lineno, "expected an object with 'tokens' and 'spans'")
            tokens = rec["tokens"]
            if not all(isinstance(t, str) and t for t in tokens):
                raise CorpusFormatError(path, lineno, "'tokens' must be non-empty strings")
            spans = []
            for sp in rec.get("spans", []):
                if not isinstance(sp, dict) or not {"start", "end", "label"} <= set(sp):
                    raise CorpusFormatError(path, lineno, f"span {sp!r} lacks start/end/label")
                _check_span(path, lineno, len(tokens), sp["start"], sp["end"])
                spans.append(Span(sp["start"], sp["end"], sp["label"], sp.get("kge"), sp.get("match")))
            out.append(Sentence(tokens, spans, rec.get("corpus", corpus), rec.get("doc_id")))
    return out


def write_jsonl(sentences: list[Sentence], path: str | Path) -> None:
    """Write nested-span JSONL (the lossless interchange format for everything a Sentence holds)."""
    with Path(path).open("w", encoding="utf8") as fh:
        for s in sentences:
            rec = {
                "tokens": s.tokens,
                "spans": [
                    {"start": p.start, "end": p.end, "label": p.label, "kge": p.kge, "match": p.match} for p in s.spans
                ],
                "corpus": s.corpus,
                "doc_id": s.doc_id,
            }
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------------- DocBin


def sentence_to_doc(sent: Sentence, vocab: Any) -> Any:
    """A spaCy ``Doc``: all spans in ``doc.spans["sc"]`` (kge in ``kb_id_``), ``doc.ents`` if flat."""
    from spacy.tokens import Doc
    from spacy.tokens import Span as SpacySpan
    from spacy.util import filter_spans

    spaces = [True] * len(sent.tokens)
    if spaces:
        spaces[-1] = False
    doc = Doc(vocab, words=sent.tokens, spaces=spaces)
    spans = [SpacySpan(doc, s.start, s.end, label=s.label, kb_id=s.kge or "") for s in sent.spans]
    doc.spans[SPANS_KEY] = spans
    flat = filter_spans(spans)
    if len(flat) == len({(s.start, s.end) for s in spans}):
        doc.ents = flat  # flat (duplicates of one range with two labels keep the first)
    doc.user_data["kogner_corpus"] = sent.corpus
    doc.user_data["kogner_doc_id"] = sent.doc_id
    doc.user_data["kogner_match"] = [s.match for s in sent.spans]
    return doc


def doc_to_sentence(doc: Any, corpus: str = "") -> Sentence:
    """Back from a ``Doc``; spans from ``doc.spans["sc"]`` or, if absent, ``doc.ents``."""
    group = list(doc.spans[SPANS_KEY]) if SPANS_KEY in doc.spans else list(doc.ents)
    matches = doc.user_data.get("kogner_match") if SPANS_KEY in doc.spans else None
    if matches is None or len(matches) != len(group):
        matches = [None] * len(group)
    spans = [Span(s.start, s.end, s.label_, s.kb_id_ or None, m) for s, m in zip(group, matches, strict=True)]
    return Sentence(
        [t.text for t in doc],
        spans,
        doc.user_data.get("kogner_corpus", corpus),
        doc.user_data.get("kogner_doc_id"),
    )


def read_docbin(path: str | Path, corpus: str = "") -> list[Sentence]:
    """Read a spaCy ``DocBin`` (``.spacy``)."""
    import spacy
    from spacy.tokens import DocBin

    path = Path(path)
    try:
        db = DocBin().from_disk(path)
    except Exception as err:  # msgpack/zlib raise many types; all mean "not a DocBin"
        raise CorpusFormatError(path, None, f"not a spaCy DocBin ({err})") from err
    return [doc_to_sentence(d, corpus) for d in db.get_docs(spacy.blank("en").vocab)]


def write_docbin(sentences: list[Sentence], path: str | Path) -> None:
    """Write a spaCy ``DocBin`` with user data (corpus, doc id, match types) kept."""
    import spacy
    from spacy.tokens import DocBin

    vocab = spacy.blank("en").vocab
    db = DocBin(store_user_data=True)
    for sent in sentences:
        db.add(sentence_to_doc(sent, vocab))
    db.to_disk(path)


def iter_documents(sentences: list[Sentence]) -> Iterator[list[Sentence]]:
    """Group consecutive sentences by ``doc_id`` (each id-less sentence is its own group)."""
    group: list[Sentence] = []
    for sent in sentences:
        if group and (sent.doc_id is None or sent.doc_id != group[-1].doc_id):
            yield group
            group = []
        group.append(sent)
    if group:
        yield group
