"""A silver NER corpus from the KG alone (distant supervision, no LLM).

The paper's BMG corpus came from an LLM writing sentences around KG edges; without an LLM we go
the other way round: take real sentences and mark every string that is a KG node name. Each such
span carries its node id (``kge``) and the node kind's prompt as label, so it can feed both the
language loss and the distillation loss.

Matching uses the linker's normalisation (so "Huntington's disease" and "huntington disease" both
hit), longest match first without overlaps, and the same in-document abbreviation rule ("(SF)"
after a matched long form makes later "SF" tokens spans of that node). Because every KG name is
matched everywhere, short names that are also English words or ambiguous symbols ("WAS", "CAT",
"MET") are the main error source: names shorter than ``case_sensitive_chars`` must match with
their exact case, names shorter than ``min_name_chars`` are skipped, and ``stop_names`` drops
known offenders. Everything is in ``configs/silver.cfg``.

``evaluate_silver`` scores the silver spans against a corpus's gold spans (exact span, kinds
mapped to gold labels by ``[kinds.*] gold_label`` in the label table), per gold label and per KG
kind, so the corpus's quality is measured rather than assumed.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ..config import Section
from .labels import KindInfo
from .linking import LinkingSettings, find_abbreviations, normal_tokens
from .readers import Sentence, Span

DEFAULT_SILVER_CFG = "configs/silver.cfg"


@dataclass
class SilverSettings(Section):
    """The ``[silver]`` section of ``configs/silver.cfg``."""

    SECTION: ClassVar[str] = "silver"
    DEFAULT_CONFIG: ClassVar[str] = DEFAULT_SILVER_CFG

    kinds: list[str]
    min_name_chars: int
    case_sensitive_chars: int
    max_name_tokens: int
    stop_names: list[str]
    abbreviations: bool
    max_sentences: int
    drop_empty: bool
    multiword_kinds: list[str]
    adjective_suffixes: list[str]
    modifier_kinds: list[str]
    modifier_heads: list[str]
    modifier_suffixes: list[str]


def _alnum(text: str) -> str:
    """Letters and digits only, case kept: how short names are compared ("IL-2" = "IL2" != "il2")."""
    return "".join(c for c in text if c.isalnum())


def _token_pieces(tokens: Sequence[str], settings: LinkingSettings) -> tuple[list[str], list[int]]:
    """Normalised sub-tokens of a sentence and, for each, the index of the token it came from.

    A possessive "'s" split by the tokenizer ("Huntington ' s") is dropped, as ``normal_tokens``
    drops it inside a name.
    """
    pieces: list[str] = []
    origin: list[int] = []
    for i, tok in enumerate(tokens):
        if tok.lower() == "s" and i > 0 and tokens[i - 1] in {"'", "’", "`"}:
            continue
        for piece in normal_tokens(tok, settings):
            pieces.append(piece)
            origin.append(i)
    return pieces, origin


class SilverMatcher:
    """Dictionary matcher over KG node names, restricted to some kinds."""

    def __init__(
        self,
        node_ids: Sequence[str],
        names: Sequence[str],
        kinds: Sequence[str],
        kind_table: dict[str, KindInfo],
        settings: SilverSettings,
        linking: LinkingSettings,
    ) -> None:
        self.node_ids, self.kinds, self.names = list(node_ids), list(kinds), list(names)
        self.kind_table, self.settings, self.linking = kind_table, settings, linking
        stop = {s.lower() for s in settings.stop_names}
        self.by_key: dict[str, list[int]] = defaultdict(list)
        self.exact_case: dict[int, set[str]] = {}
        self.max_pieces = 1
        for row, (name, kind) in enumerate(zip(names, kinds, strict=True)):
            if kind not in settings.kinds or name.lower() in stop:
                continue
            compact = "".join(name.split())
            if len(compact) < settings.min_name_chars:
                continue
            toks = normal_tokens(name, linking)
            if not toks or len(toks) > settings.max_name_tokens:
                continue
            if len(toks) < 2 and kind in settings.multiword_kinds:
                continue
            if len(compact) < settings.case_sensitive_chars:
                self.exact_case[row] = {_alnum(name)}
            for key in (" ".join(toks), "".join(toks)):
                if row not in self.by_key[key]:
                    self.by_key[key].append(row)
            self.max_pieces = max(self.max_pieces, len(toks))
        # compact keys can glue several sentence pieces ("IL 2" -> "il2")
        self.max_pieces = min(settings.max_name_tokens, self.max_pieces + 2)

    def _choose(self, rows: list[int], surface: str) -> int | None:
        ok = [r for r in rows if r not in self.exact_case or surface in self.exact_case[r]]
        if not ok:
            return None
        return min(ok, key=lambda r: (self.settings.kinds.index(self.kinds[r]), r))

    def _plausible(self, tokens: Sequence[str], start: int, end: int, row: int) -> bool:
        """False for a match that is an adjective spelling another word's node ("renal" for Kidney)
        or the modifier of a larger name ("chloramphenicol acetyltransferase", "IL6 receptor")."""
        s = self.settings
        word = tokens[start].lower()
        if end - start == 1 and word.endswith(tuple(s.adjective_suffixes)) and word != self.names[row].lower():
            return False
        if self.kinds[row] in s.modifier_kinds and end < len(tokens):
            after = tokens[end].lower()
            if after in s.modifier_heads or after.endswith(tuple(s.modifier_suffixes)):
                return False
        return True

    def match_sentence(self, tokens: Sequence[str]) -> list[tuple[int, int, int]]:
        """Non-overlapping (start, end, row) token spans, longest match first, left to right."""
        pieces, origin = _token_pieces(tokens, self.linking)
        out: list[tuple[int, int, int]] = []
        i = 0
        while i < len(pieces):
            hit = None
            for n in range(min(self.max_pieces, len(pieces) - i), 0, -1):
                start, end = origin[i], origin[i + n - 1] + 1
                # a match must cover whole tokens: no piece of its first/last token left outside
                if (i > 0 and origin[i - 1] == start) or (i + n < len(pieces) and origin[i + n] == end - 1):
                    continue
                surface = _alnum("".join(tokens[start:end]))
                for key in (" ".join(pieces[i : i + n]), "".join(pieces[i : i + n])):
                    rows = self.by_key.get(key)
                    row = self._choose(rows, surface) if rows else None
                    if row is not None and self._plausible(tokens, start, end, row):
                        hit = (start, end, row, n)
                        break
                if hit:
                    break
            if hit:
                out.append(hit[:3])
                i += hit[3]
            else:
                i += 1
        return out

    def annotate(self, sentences: list[Sentence], corpus: str | None = None) -> list[Sentence]:
        """New sentences (same tokens, gold spans dropped) with silver spans labelled by kind prompt."""
        out = []
        recent: list[dict[str, int]] = []
        window = self.linking.abbreviation_window
        last_doc: Any = object()
        for sent in sentences:
            if sent.doc_id is not None and sent.doc_id != last_doc:
                recent = []
            last_doc = sent.doc_id
            matches = self.match_sentence(sent.tokens)
            taken = set()
            spans = []
            for start, end, row in matches:
                spans.append(self.span(start, end, row, "dictionary"))
                taken.update(range(start, end))
            defined: dict[str, int] = {}
            if self.settings.abbreviations:
                by_text = {" ".join(sent.tokens[s:e]): r for s, e, r in matches}
                for short, long_form in find_abbreviations(sent.tokens, self.linking).items():
                    if long_form in by_text:
                        defined[short] = by_text[long_form]
                known: dict[str, int] = {}
                for d in [*recent, defined]:
                    known.update(d)
                for i, tok in enumerate(sent.tokens):
                    if tok in known and i not in taken:
                        spans.append(self.span(i, i + 1, known[tok], "abbreviation"))
                recent = [*recent, defined][-window:]
            spans.sort(key=lambda s: (s.start, s.end))
            out.append(Sentence(list(sent.tokens), spans, corpus or sent.corpus, sent.doc_id))
        return out

    def span(self, start: int, end: int, row: int, how: str) -> Span:
        """The silver span of node ``row`` over tokens [start, end), labelled by its kind's prompt."""
        kind = self.kinds[row]
        info = self.kind_table.get(kind)
        label = info.prompt if info else kind
        return Span(start, end, label, self.node_ids[row], f"silver-{how}")


def matched_kinds(kinds: Sequence[str], blocking: Sequence[str]) -> list[str]:
    """The kinds the matcher looks for, blocking kinds first (a name of two kinds is the blocker's)."""
    return [k for k in blocking if k not in kinds] + list(kinds)


def kind_matcher(
    kg: Any,
    kinds: Sequence[str],
    kind_table: dict[str, KindInfo],
    silver_section: dict[str, Any],
    linking_section: dict[str, Any],
) -> SilverMatcher:
    """A matcher over the names of ``kg`` (a loaded ``kg.graph.KnowledgeGraph``) of ``kinds`` only,
    with the silver config's rules (stop names, name lengths) and the linker's normalisation."""
    silver = SilverSettings.from_section(silver_section)
    silver.kinds = list(kinds)
    linking = LinkingSettings.from_section(linking_section)
    return SilverMatcher(kg.node_ids, kg.names, kg.kinds, kind_table, silver, linking)


def evaluate_silver(
    silver: list[Sentence],
    gold: list[Sentence],
    kind_of: dict[str, str],
    kind_table: dict[str, KindInfo],
) -> dict[str, Any]:
    """Exact-span precision/recall/F1 of silver spans against gold, per gold label and per KG kind.

    Only silver spans whose kind maps to a label the sentence's own gold corpus annotates are
    scored (a gene hit in a disease-only corpus is neither right nor wrong there; pooled corpora
    keep their label sets apart); ``kind_of`` maps node id → kind.
    """
    corpus_labels: dict[str, set[str]] = defaultdict(set)
    for x in gold:
        corpus_labels[x.corpus].update(s.label for s in x.spans)
    gold_labels = set().union(*corpus_labels.values()) if corpus_labels else set()
    tp: Counter = Counter()
    fp: Counter = Counter()
    fn: Counter = Counter()
    kind_tp: Counter = Counter()
    kind_n: Counter = Counter()
    overlap: Counter = Counter()
    for s_sent, g_sent in zip(silver, gold, strict=True):
        gold_set = {(s.start, s.end, s.label) for s in g_sent.spans}
        pred = set()
        for sp in s_sent.spans:
            kind = kind_of.get(sp.kge or "", "")
            label = kind_table[kind].gold_label if kind in kind_table else ""
            if label not in corpus_labels[g_sent.corpus]:
                continue
            key = (sp.start, sp.end, label)
            if key in pred:
                continue
            pred.add(key)
            kind_n[kind] += 1
            if key in gold_set:
                kind_tp[kind] += 1
            elif any(g[2] == label and g[0] < sp.end and sp.start < g[1] for g in gold_set):
                overlap[label] += 1
        for key in pred:
            (tp if key in gold_set else fp)[key[2]] += 1
        for key in gold_set - pred:
            fn[key[2]] += 1

    def prf(t: int, p: int, n: int) -> dict[str, float]:
        prec, rec = (t / p if p else 0.0), (t / n if n else 0.0)
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        return {"precision": round(prec, 4), "recall": round(rec, 4), "f1": round(f1, 4)}

    per_label = {}
    for label in sorted(gold_labels):
        n_pred, n_gold = tp[label] + fp[label], tp[label] + fn[label]
        per_label[label] = {
            **prf(tp[label], n_pred, n_gold),
            "silver_spans": n_pred,
            "gold_spans": n_gold,
            "partial_overlap_fp": overlap[label],
        }
    all_tp, all_p = sum(tp.values()), sum(tp.values()) + sum(fp.values())
    all_g = sum(tp.values()) + sum(fn.values())
    per_kind = {k: {"silver_spans": kind_n[k], "precision": round(kind_tp[k] / kind_n[k], 4)} for k in sorted(kind_n)}
    return {"micro": prf(all_tp, all_p, all_g), "per_label": per_label, "per_kind": per_kind}
