"""The ``kogner_linker`` spaCy pipe: every entity whose label maps to KG kinds gets its KG node.

Why a separate pipe rather than a ``link`` setting of ``kogner``: linking is optional and has its
own data (a node index of a few MB to tens of MB), it also serves entities that another pipe
found (spaCy's ``ner``, an ``entity_ruler``, gold spans), and its settings (routes, NIL
threshold) change without touching the NER model. It reuses the ``kogner`` pipe's span model
(named by ``kogner_pipe``) for the dense route, so the encoder is loaded once.

For each entity (``doc.ents``, and the spans of the span group ``spans_key`` when present):

1. **dictionary** (``pipeline/dictionary.py``): normalised names, in-document abbreviations
   scoped by the Doc (the real document), type agreement; the first rule that hits gives the
   candidates, best first.
2. **dense**, where the dictionary finds nothing (or finds several nodes and ``rerank`` is on):
   the span's vector from the student (of the in-document long form for a defined abbreviation),
   projected by ``MLP_span``, against the projected teacher rows of the label's KG kinds
   (``kb_index.py``). Its NIL model (``_accept``): of the nearest nodes above ``threshold``, only
   one whose name agrees with the mention's words links; an abbreviation the document does not
   define, or no agreeing node, stays NIL.

Results: ``span.kb_id_`` = the node id, ``span._.kb_name``, ``span._.kb_score`` (1.0 for a
dictionary hit, the cosine for a dense one), ``span._.kb_route`` and ``span._.kb_candidates``
(up to ``top_k`` ``(id, name, score)``). An entity whose label maps to no KG kind stays unlinked.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import srsly
from spacy.language import Language
from spacy.tokens import Doc, Span, SpanGroup
from spacy.util import minibatch

from .component import BatchPipe
from .dictionary import (
    DictionaryLinker,
    DictionarySettings,
    find_abbreviations,
    long_form,
    looks_like_abbreviation,
    name_similarity,
    names_agree,
)
from .kb_index import INDEX_FILES, LinkIndex, LinkIndexError

CFG_FILE = "kogner_linker.json"
INDEX_DIR = "index"
ROUTES = ("dictionary", "dense")
EXTENSIONS = {"kb_name": None, "kb_score": None, "kb_route": None, "kb_candidates": None}


@dataclass
class LinkerSettings:
    """Settings of ``nlp.add_pipe("kogner_linker", config={...})``."""

    index: str = ""  # a build-link-index folder, read when the pipe is created ("" = from to_disk)
    kogner_pipe: str = "kogner"  # the pipe whose span model gives dense span vectors
    # the dictionary, then the dense route where it finds nothing (docs/results/linking.md)
    routes: list[str] = dataclasses.field(default_factory=lambda: ["dictionary", "dense"])
    # The dense route's NIL model for mentions the dictionary misses (``_accept``), chosen on dev
    # mentions of NCBI-disease + BC5CDR (docs/results/linking.md): of the ``dense_candidates``
    # nearest nodes scoring >= ``threshold`` (< 0 = the index's own, tuned without a name check),
    # keep those whose name is within ``min_name_similarity`` (char 3-gram Dice) of the mention (or
    # its in-document long form) and agrees with it word by word (``names_agree``, at most
    # ``name_extra_words`` extra words); link the closest. min_name_similarity = 0 turns the name
    # check off (dense neighbours alone: 1 of 100 such links was right).
    threshold: float = 0.5
    dense_candidates: int = 20
    min_name_similarity: float = 0.7
    name_extra_words: int = 0
    top_k: int = 5
    # order several dictionary nodes by the dense score (off: it agreed with the dictionary's
    # hand-checked kind order on 97.5 % of BC5CDR test mentions)
    rerank: bool = False
    spans_key: str = "kogner"  # also link this span group ("" = doc.ents only)
    context_words: int = 64  # for an index read in sentences: words either side when the doc has none
    batch_size: int = 32  # entities' windows per forward pass of the dense route
    exact_max_nodes: int = 200_000  # above this many candidate nodes, search with the ANN index

    def __post_init__(self) -> None:
        bad = [r for r in self.routes if r not in ROUTES]
        if bad or not self.routes:
            raise LinkIndexError(
                f"kogner_linker routes must be a non-empty subset of {list(ROUTES)}, got {self.routes}"
            )
        if min(self.top_k, self.batch_size, self.context_words, self.dense_candidates) < 1:
            raise LinkIndexError("kogner_linker: top_k, dense_candidates, batch_size and context_words must be >= 1")
        if not 0 <= self.min_name_similarity <= 1 or self.name_extra_words < 0:
            raise LinkIndexError("kogner_linker: min_name_similarity must be in [0, 1], name_extra_words >= 0")


DEFAULT_CONFIG = {f.name: getattr(LinkerSettings(), f.name) for f in dataclasses.fields(LinkerSettings)}


@Language.factory("kogner_linker", default_config=DEFAULT_CONFIG, assigns=["doc.ents", "doc.spans"])
def make_kogner_linker(
    nlp: Language,
    name: str,
    index: str,
    kogner_pipe: str,
    routes: list[str],
    threshold: float,
    dense_candidates: int,
    min_name_similarity: float,
    name_extra_words: int,
    top_k: int,
    rerank: bool,
    spans_key: str,
    context_words: int,
    batch_size: int,
    exact_max_nodes: int,
) -> KognerLinker:
    settings = LinkerSettings(
        index,
        kogner_pipe,
        list(routes),
        threshold,
        dense_candidates,
        min_name_similarity,
        name_extra_words,
        top_k,
        rerank,
        spans_key,
        context_words,
        batch_size,
        exact_max_nodes,
    )
    return KognerLinker(nlp, name, settings)


@dataclass
class Mention:
    """One entity to link: its text, label and where its vector is read (window words, start, end)."""

    text: str
    label: str
    words: list[str]
    start: int
    end: int  # inclusive, in ``words``
    abbreviations: dict[str, str]


@dataclass
class Resolution:
    """A linking decision: the node row (None = NIL), its score, the route and the top candidates."""

    row: int | None
    score: float
    route: str
    candidates: list[tuple[int, float]]


class KognerLinker(BatchPipe):
    """Sets ``kb_id_`` (and ``_.kb_*`` extensions) on entities; see the module docstring."""

    def __init__(self, nlp: Language, name: str, settings: LinkerSettings) -> None:
        for ext, default in EXTENSIONS.items():
            if not Span.has_extension(ext):
                Span.set_extension(ext, default=default)
        self.nlp = nlp
        self.name = name
        self.settings = settings
        self.index: LinkIndex | None = None
        self.dictionary: DictionaryLinker | None = None
        # A saved pipeline's config still names the build folder it was made from; spaCy creates the
        # pipe from that config before ``from_disk`` reads the copy inside the pipeline, so a path
        # that is gone (another machine, an installed package) is only an error if nothing else
        # gives the pipe an index before it is used.
        self._index_path = settings.index
        self._checked: tuple[Any, LinkIndex] | None = None  # (span model, index) already found to match
        if settings.index and Path(settings.index).exists():
            self.set_index(LinkIndex.load(settings.index, settings.exact_max_nodes))

    # ----------------------------------------------------------------------- the index
    def set_index(self, index: LinkIndex) -> None:
        """Use ``index``: rebuilds the dictionary from its node names, labels and settings."""
        labels = {lab: SimpleNamespace(**info) for lab, info in index.labels.items()}
        try:
            dictionary_settings = DictionarySettings.from_dict(index.meta["dictionary"])
        except (KeyError, TypeError, ValueError) as err:
            raise LinkIndexError(f"linker index: its dictionary settings are unusable ({err})") from None
        self.index = index
        self.dictionary = DictionaryLinker(
            index.node_ids, index.names, index.kinds, labels, dictionary_settings, synonyms=index.synonyms
        )

    def _require_index(self) -> LinkIndex:
        if self.index is None and self._index_path:
            self.set_index(LinkIndex.load(self._index_path, self.settings.exact_max_nodes))
        if self.index is None or self.dictionary is None:
            raise LinkIndexError(
                f"pipe '{self.name}' has no index: add it with config={{'index': 'path/to/link-index'}} "
                "(python -m spacy_kogner build-link-index writes one)"
            )
        return self.index

    def _span_model(self) -> Any | None:
        """The span model of ``kogner_pipe`` when the dense route is on, checked against the index."""
        if "dense" not in self.settings.routes:
            return None
        index = self._require_index()
        if self.settings.kogner_pipe not in self.nlp.pipe_names:
            raise LinkIndexError(
                f"pipe '{self.name}': the dense route reads span vectors from pipe '{self.settings.kogner_pipe}', "
                f"which this pipeline lacks (pipes: {self.nlp.pipe_names}); add it or set routes=['dictionary']"
            )
        model = self.nlp.get_pipe(self.settings.kogner_pipe).ensure_model()
        if self._checked is not None and self._checked[0] is model and self._checked[1] is index:
            return model  # hashing the span head's weights on every batch would be wasted work
        if model.hidden_size != index.span_dim or model.fingerprint() != index.student:
            raise LinkIndexError(
                f"pipe '{self.name}': the linker index was built from span model {index.student} "
                f"({index.span_dim}-d span vectors), but pipe '{self.settings.kogner_pipe}' holds "
                f"{model.fingerprint()} ({model.hidden_size}-d); rebuild the index for this model "
                "(build-link-index) or set routes=['dictionary']"
            )
        self._checked = (model, index)
        return model

    @property
    def threshold(self) -> float:
        index = self._require_index()
        return self.settings.threshold if self.settings.threshold >= 0 else index.threshold

    # ------------------------------------------------------------------------- linking
    def resolve(self, mentions: list[Mention], model: Any | None = None) -> list[Resolution]:
        """Link mentions: the dictionary first, the dense route where it finds nothing (and to
        order several dictionary nodes). ``model`` is the span model (None = dictionary only)."""
        index = self._require_index()
        assert self.dictionary is not None
        out: list[Resolution | None] = [None] * len(mentions)
        dense_todo: list[int] = []
        read: list[Mention] = []  # what the dense route reads for each of dense_todo
        dict_rows: dict[int, list[int]] = {}
        for i, m in enumerate(mentions):
            info = index.labels.get(m.label)
            if not info or not info.get("kg_kinds"):
                out[i] = Resolution(None, 0.0, "no_kind", [])
                continue
            rows: list[int] = []
            if "dictionary" in self.settings.routes:
                rows, _, _ = self.dictionary.candidates(m.text, m.label, m.abbreviations)
            if rows:
                dict_rows[i] = rows
                if len(rows) == 1 or not self.settings.rerank or model is None:
                    out[i] = Resolution(rows[0], 1.0, "dictionary", [(r, 1.0) for r in rows[: self.settings.top_k]])
                    continue
            query = (m if i in dict_rows else self._dense_query(m)) if model is not None else None
            if query is not None:
                dense_todo.append(i)
                read.append(query)
            elif out[i] is None:
                out[i] = Resolution(None, 0.0, "nil", [])
        if dense_todo:
            vectors = self._vectors(model, read)
            queries = index.project(vectors)
            by_kinds: dict[tuple[str, ...], list[int]] = {}
            for j, i in enumerate(dense_todo):
                by_kinds.setdefault(tuple(index.labels[mentions[i].label]["kg_kinds"]), []).append(j)
            for kinds, js in by_kinds.items():
                k = max(self.settings.top_k, self.settings.dense_candidates)
                rows_k, scores_k = index.search(queries[js], kinds, k)
                for j, rows, scores in zip(js, rows_k, scores_k, strict=True):
                    i = dense_todo[j]
                    cands = [(int(r), float(s)) for r, s in zip(rows, scores, strict=True) if r >= 0]
                    if i in dict_rows:  # several dictionary nodes: the dense score orders them
                        cosines = index.vectors[dict_rows[i]].astype(np.float32) @ queries[j]
                        ranked = [(dict_rows[i][k], float(cosines[k])) for k in np.argsort(-cosines, kind="stable")]
                        out[i] = Resolution(ranked[0][0], 1.0, "dictionary", ranked[: self.settings.top_k])
                        continue
                    hit = self._accept(read[j].text, cands[: self.settings.dense_candidates])
                    top = cands[: self.settings.top_k]
                    if hit is not None:
                        out[i] = Resolution(hit[0], hit[1], "dense", top)
                    else:
                        out[i] = Resolution(None, cands[0][1] if cands else 0.0, "nil", top)
        return [r if r is not None else Resolution(None, 0.0, "nil", []) for r in out]

    def _dense_query(self, m: Mention) -> Mention | None:
        """What the dense route reads for a mention the dictionary missed: the mention, or its
        in-document long form (an index of names read alone); None for an abbreviation the
        document does not define. Read without its definition, "BZS" or "VAL" names nothing a
        vector can find: on NCBI-disease + BC5CDR test they were the largest group of wrong dense
        links (docs/results/linking.md)."""
        expanded = long_form(m.text, m.abbreviations) if m.abbreviations else None
        if expanded and self._require_index().meta.get("context", "mention") == "mention":
            words = expanded.split()
            return Mention(expanded, m.label, words, 0, len(words) - 1, m.abbreviations)
        return None if looks_like_abbreviation(m.text) and not expanded else m

    def _accept(self, text: str, cands: list[tuple[int, float]]) -> tuple[int, float] | None:
        """The dense route's NIL model: of the nearest nodes whose score passes the threshold,
        the one whose name is closest to the mention's text, if its name agrees with it. Dense
        neighbours alone linked concepts the KG does not hold to unrelated nodes of similar
        meaning ("migraine with aura" to Migraine without aura, "BZS" to Spermatocele); a
        neighbour that also agrees in its words is a spelling variant, an inflection or a synonym
        ("streptozotocin" / Streptozocin, "nephrotoxic" / Nephrotoxicity)."""
        assert self.index is not None
        s = self.settings
        passing = [(row, score) for row, score in cands if score >= self.threshold]
        if not s.min_name_similarity:
            return passing[0] if passing else None
        best: tuple[float, float, int] | None = None
        for row, score in passing:
            name = self.index.names[row]
            similarity = name_similarity(text, name)
            if similarity >= s.min_name_similarity and names_agree(text, name, s.name_extra_words):
                best = max(best or (similarity, score, row), (similarity, score, row))
        return (best[2], best[1]) if best is not None else None

    def _vectors(self, model: Any, mentions: list[Mention]) -> Any:
        """Span vectors of the mentions, batched by label prompt (the prompt is read with the text)."""
        import torch

        index = self._require_index()
        result = torch.zeros((len(mentions), index.span_dim))
        groups: dict[str, list[int]] = {}
        for i, m in enumerate(mentions):
            groups.setdefault(index.labels[m.label]["prompt"], []).append(i)
        for prompt, idx in groups.items():
            idx = sorted(idx, key=lambda i: len(mentions[i].words))
            for chunk in minibatch(idx, size=self.settings.batch_size):
                windows, spans = [], []
                for k, i in enumerate(chunk):  # wider than any span the model scores: its last words
                    m = mentions[i]
                    start = max(m.start, m.end - model.max_width + 1)
                    lo = max(0, m.end + 1 - model.max_words)
                    windows.append(m.words[lo : m.end + 1] if lo > 0 else m.words)
                    spans.append((k, start - lo, m.end - lo))
                result[list(chunk)] = model.span_vectors(windows, [prompt], spans)
        return result

    def doc_mentions(
        self, doc: Doc, spans: Iterable[Span], max_width: int, max_words: int, abbreviations: dict[str, str]
    ) -> list[Mention]:
        """Mentions of ``spans`` in ``doc``: the window each is read in, with the doc's abbreviations."""
        has_sents = doc.has_annotation("SENT_START")
        alone = self._require_index().meta.get("context", "mention") == "mention"
        out = []
        for span in spans:
            if alone:  # read like a node name: the mention's words are the whole window
                words = [t.text for t in span if not t.is_space] or [span.text]
                start, end = max(0, len(words) - max_width), len(words) - 1
                out.append(Mention(span.text, span.label_, words[start:], 0, end - start, abbreviations))
                continue
            if has_sents:
                lo, hi = span.sent.start, span.sent.end
            else:
                lo, hi = span.start - self.settings.context_words, span.end + self.settings.context_words
            half = max(1, (max_words - (span.end - span.start)) // 2)
            lo, hi = max(lo, span.start - half, 0), min(hi, span.end + half, len(doc))
            tokens = [t for t in doc[lo:hi] if not t.is_space]
            words = [t.text for t in tokens]
            pos = {t.i: k for k, t in enumerate(tokens)}
            inner = [pos[t.i] for t in span if t.i in pos]
            start, end = (inner[0], inner[-1]) if inner else (0, 0)
            if end - start >= max_width:  # wider than any span the model scores: read its last max_width words
                start = end - max_width + 1
            out.append(Mention(span.text, span.label_, words, start, end, abbreviations))
        return out

    # ------------------------------------------------------------------------ the pipe
    def _process(self, docs: list[Doc]) -> list[Doc]:
        index = self._require_index()
        model = self._span_model()
        max_width = model.max_width if model is not None else 1_000_000
        max_words = model.max_words if model is not None else 1_000_000
        key = self.settings.spans_key
        todo: list[tuple[Doc, str, list[Span]]] = []
        mentions: list[Mention] = []
        assert self.dictionary is not None
        for doc in docs:
            abbreviations = find_abbreviations([t.text for t in doc], self.dictionary.settings)
            ents = list(doc.ents)
            todo.append((doc, "ents", ents))
            mentions += self.doc_mentions(doc, ents, max_width, max_words, abbreviations)
            if key and key in doc.spans:
                group = list(doc.spans[key])
                todo.append((doc, key, group))
                mentions += self.doc_mentions(doc, group, max_width, max_words, abbreviations)
        resolved = iter(self.resolve(mentions, model))
        for doc, where, spans in todo:
            linked = []
            for span in spans:
                res = next(resolved)
                node = index.node_ids[res.row] if res.row is not None else ""
                new = Span(doc, span.start, span.end, label=span.label_, kb_id=node)
                new._.kb_name = index.names[res.row] if res.row is not None else None
                new._.kb_score = res.score if res.row is not None else None
                new._.kb_route = res.route
                new._.kb_candidates = [(index.node_ids[r], index.names[r], round(s, 4)) for r, s in res.candidates]
                linked.append(new)
            if where == "ents":
                doc.ents = linked
            else:
                old = doc.spans[where]
                doc.spans[where] = SpanGroup(doc, name=where, spans=linked, attrs=dict(old.attrs))
        return docs

    # ---------------------------------------------------------------- serialisation
    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        srsly.write_json(path / CFG_FILE, {k: v for k, v in dataclasses.asdict(self.settings).items() if k != "index"})
        if "index" not in set(exclude):
            self._require_index().save(path / INDEX_DIR)

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> KognerLinker:
        path = Path(path)
        if (path / CFG_FILE).is_file():
            try:
                # json, not srsly: its ujson reads "0.7" as 0.7000000000000001, and a name exactly
                # at min_name_similarity (convulsive / Convulsion) stopped linking after a round trip
                saved = json.loads((path / CFG_FILE).read_text(encoding="utf8"))
                self.settings = LinkerSettings(**{**saved, "index": ""})
            except (ValueError, TypeError) as err:
                raise LinkIndexError(f"{path / CFG_FILE}: unusable linker settings ({err})") from None
        if "index" not in set(exclude):
            folder = path / INDEX_DIR
            stray = [p.name for p in folder.iterdir() if p.name not in INDEX_FILES] if folder.is_dir() else []
            if stray:
                raise LinkIndexError(f"{folder}: unexpected file(s) {stray} in a linker index; refusing to load it")
            self.set_index(LinkIndex.load(folder, self.settings.exact_max_nodes))
        return self

    def to_bytes(self, *, exclude: Iterable[str] = ()) -> bytes:
        raise NotImplementedError("kogner_linker serialises to disk only (nlp.to_disk / spacy package)")

    def from_bytes(self, data: bytes, *, exclude: Iterable[str] = ()) -> KognerLinker:
        raise NotImplementedError("kogner_linker serialises to disk only (nlp.from_disk / spacy.load)")
