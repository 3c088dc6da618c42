"""Span → KG node linking over corpora: give each gold span the ``kge`` node id it names, or none.

Distillation only uses spans that carry a KG node, so coverage matters, but a wrong link teaches
the student a wrong neighbourhood, so precision matters more. The rules (the dictionary route,
shared with the ``kogner_linker`` pipe) live in ``pipeline/dictionary.py`` and its docstring lists
them; this module adds what only corpora need: the ``[linking]`` config section, abbreviation
scopes over documents (by ``doc_id``; corpora without document markers keep the definitions of the
previous ``abbreviation_window`` sentences), the optional ``fuzzy`` rule (scikit-learn, a training
dependency), coverage statistics and the link report.
"""

from __future__ import annotations

import csv
import random
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..config import Section
from ..pipeline.dictionary import (
    _DIGITS,
    RULES,
    DictionaryLinker,
    DictionarySettings,
    Link,
    expand_inside,
    find_abbreviations,
    fold,
    normal_tokens,
    rule_keys,
)
from ..textio import open_text, where_not_utf8
from .readers import Sentence, Span, iter_documents

DEFAULT_LINKING_CFG = "configs/linking.cfg"
__all__ = [
    "RULES", "Link", "LinkStats", "Linker", "LinkingSettings", "expand_inside", "find_abbreviations", "fold",
    "format_report", "normal_tokens", "read_synonyms", "rule_keys",
]  # fmt: skip


@dataclass
class LinkingSettings(DictionarySettings, Section):
    """The ``[linking]`` section of ``configs/linking.cfg`` (see that file for what each one does):
    the dictionary's settings plus the corpus-only ones."""

    SECTION: ClassVar[str] = "linking"
    DEFAULT_CONFIG: ClassVar[str] = DEFAULT_LINKING_CFG

    abbreviation_window: int
    fuzzy_threshold: float
    fuzzy_ngram: list[int]
    fuzzy_min_chars: int
    report_examples: int
    report_seed: int


@dataclass
class LinkStats:
    """Counts per corpus/label/match for the report; ``examples`` keep mentions for hand checks."""

    total: Counter = field(default_factory=Counter)
    linked: Counter = field(default_factory=Counter)
    by_match: Counter = field(default_factory=Counter)
    wrong_kind: Counter = field(default_factory=Counter)
    no_kind: Counter = field(default_factory=Counter)
    examples: dict[str, list[tuple[str, str, str, str, str]]] = field(default_factory=lambda: defaultdict(list))


def read_synonyms(path: str | Path) -> list[tuple[str, str]]:
    """A synonym table: ``node_id<TAB>name`` per line (a header line ``node_id<TAB>name`` is allowed).

    UTF-8, a leading BOM dropped; another encoding fails naming the file, line and byte."""
    rows = []
    try:
        with open_text(path, newline="") as fh:
            for lineno, row in enumerate(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
                if not row or (lineno == 1 and row[0] in {"node_id", "id"}):
                    continue
                if len(row) < 2:
                    raise ValueError(f"{path}:{lineno}: expected 'node_id<TAB>name', got {row!r}")
                rows.append((row[0], row[1]))
    except UnicodeDecodeError as err:
        line, message = where_not_utf8(path, err)
        raise ValueError(f"{path}:{line}: {message}" if line else f"{path}: {message}") from None
    return rows


class Linker(DictionaryLinker):
    """The dictionary linker plus what corpora need: the ``fuzzy`` rule and linking whole corpora."""

    settings: LinkingSettings

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fuzzy: Any = None

    # -- fuzzy

    def _fuzzy_model(self) -> tuple[Any, Any]:
        if self._fuzzy is None:
            from sklearn.feature_extraction.text import TfidfVectorizer

            lo, hi = self.settings.fuzzy_ngram
            vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(lo, hi), dtype="float32")
            texts = [" ".join(normal_tokens(name, self.settings)) for _, name in self.entries]
            self._fuzzy = (vec, vec.fit_transform(texts))
        return self._fuzzy

    def fuzzy_link(self, texts: list[str], labels: list[str]) -> list[Link | None]:
        """Best TF-IDF char n-gram neighbour of allowed kind above the threshold, numbers equal."""
        import numpy as np

        out: list[Link | None] = [None] * len(texts)
        todo = [
            i
            for i, (t, lab) in enumerate(zip(texts, labels, strict=True))
            if len(t.replace(" ", "")) >= self.settings.fuzzy_min_chars
            and self.label_table.get(lab) is not None
            and self.label_table[lab].kg_kinds
        ]
        if not todo:
            return out
        vec, mat = self._fuzzy_model()
        entry_kind = np.array([self.kinds[r] for r, _ in self.entries])
        norm = [" ".join(normal_tokens(texts[i], self.settings)) for i in todo]
        q = vec.transform(norm)
        batch = 256
        for b in range(0, len(todo), batch):
            sims = (q[b : b + batch] @ mat.T).toarray()
            for k, i in enumerate(todo[b : b + batch]):
                allowed = self.label_table[labels[i]].kg_kinds
                s = np.where(np.isin(entry_kind, allowed), sims[k], 0.0)
                j = int(s.argmax())
                if s[j] < self.settings.fuzzy_threshold:
                    continue
                row, name = self.entries[j]
                if sorted(_DIGITS.findall(norm[k])) != sorted(
                    _DIGITS.findall(" ".join(normal_tokens(name, self.settings)))
                ):
                    continue
                out[i] = Link(self.node_ids[row], self.kinds[row], "fuzzy")
        return out

    # -- corpora

    def link_sentences(self, sentences: list[Sentence], stats: LinkStats | None = None) -> LinkStats:
        """Set ``kge``/``match`` on every span in place (overwriting old links) and count what happened.

        Abbreviations are collected per document; corpora without document markers (most of the
        mirror's TSVs) keep the definitions of the previous ``abbreviation_window`` sentences,
        which are in document order in those files.
        """
        stats = stats or LinkStats()
        pending: list[tuple[Sentence, Span, str]] = []
        for sent, abbrevs in abbreviation_scopes(sentences, self.settings):
            for span in sent.spans:
                text = sent.text_of(span)
                key = (sent.corpus, span.label)
                stats.total[key] += 1
                info = self.label_table.get(span.label)
                if info is None or not info.kg_kinds:
                    stats.no_kind[key] += 1
                    span.kge, span.match = None, None
                    continue
                link, wrong = self.link_text(text, span.label, abbrevs)
                if link is None:
                    span.kge, span.match = None, None
                    if wrong:
                        stats.wrong_kind[key] += 1
                    pending.append((sent, span, text))
                    continue
                self._record(stats, sent, span, text, link)
        if "fuzzy" in self.settings.rules and pending:
            links = self.fuzzy_link([t for _, _, t in pending], [s.label for _, s, _ in pending])
            for (sent, span, text), link in zip(pending, links, strict=True):
                if link is not None:
                    self._record(stats, sent, span, text, link)
        return stats

    def _record(self, stats: LinkStats, sent: Sentence, span: Span, text: str, link: Link) -> None:
        span.kge, span.match = link.node_id, link.match
        key = (sent.corpus, span.label)
        stats.linked[key] += 1
        stats.by_match[(sent.corpus, span.label, link.match)] += 1
        stats.examples[link.match].append((sent.corpus, span.label, text, link.node_id, " ".join(sent.tokens)))


def abbreviation_scopes(
    sentences: list[Sentence], settings: LinkingSettings
) -> Iterable[tuple[Sentence, dict[str, str]]]:
    """Each sentence with the abbreviations in scope for it: those defined so far in its document
    (``doc_id``), or, for id-less corpora, in the previous ``abbreviation_window`` sentences."""
    for doc in _documents(sentences):
        recent: list[dict[str, str]] = []
        for sent in doc:
            recent.append(find_abbreviations(sent.tokens, settings))
            if doc[0].doc_id is None:
                recent = recent[-settings.abbreviation_window :]
            abbrevs: dict[str, str] = {}
            for d in recent:
                abbrevs.update(d)
            yield sent, abbrevs


def _documents(sentences: list[Sentence]) -> Iterable[list[Sentence]]:
    """Abbreviation scopes: documents by ``doc_id``, else the whole run of id-less sentences."""
    run: list[Sentence] = []
    for group in iter_documents(sentences):
        if group[0].doc_id is None:
            run.extend(group)
            continue
        if run:
            yield run
            run = []
        yield group
    if run:
        yield run


def format_report(stats: LinkStats, names: dict[str, str], settings: LinkingSettings) -> str:
    """Coverage tables by corpus/label and match type, plus random linked examples per match type."""
    lines = ["corpus\tlabel\tmentions\tlinked\tcoverage\twrong_kind_only\tno_kg_kind"]
    for key in sorted(stats.total):
        n, k = stats.total[key], stats.linked[key]
        lines.append(f"{key[0]}\t{key[1]}\t{n}\t{k}\t{k / n:.1%}\t{stats.wrong_kind[key]}\t{stats.no_kind[key]}")
    per_corpus: Counter = Counter()
    per_corpus_linked: Counter = Counter()
    for (corpus, _), n in stats.total.items():
        per_corpus[corpus] += n
        per_corpus_linked[corpus] += stats.linked[(corpus, _)]
    for corpus in sorted(per_corpus):
        n, k = per_corpus[corpus], per_corpus_linked[corpus]
        lines.append(f"{corpus}\tALL\t{n}\t{k}\t{k / n:.1%}\t\t")
    lines += ["", "corpus\tlabel\tmatch\tlinked\tshare_of_mentions"]
    for (corpus, label, match), k in sorted(stats.by_match.items()):
        lines.append(f"{corpus}\t{label}\t{match}\t{k}\t{k / stats.total[(corpus, label)]:.1%}")
    rng = random.Random(settings.report_seed)
    for match in RULES:
        ex = stats.examples.get(match, [])
        if not ex:
            continue
        lines += ["", f"== {settings.report_examples} random '{match}' links (of {len(ex)}) =="]
        for corpus, label, text, node, _ in rng.sample(ex, min(settings.report_examples, len(ex))):
            lines.append(f"{corpus}\t{label}\t{text!r} -> {node} {names.get(node, '')!r}")
    return "\n".join(lines)
