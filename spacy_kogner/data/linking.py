"""Span → KG node linking: give each gold span the ``kge`` node id it names, or none.

Distillation only uses spans that carry a KG node, so coverage matters, but a wrong link teaches
the student a wrong neighbourhood, so precision matters more. The linker therefore only applies
rules whose output names the same concept as the mention, in a fixed order (the first that hits
wins, and the rule's name is recorded as the span's ``match``):

1. ``abbreviation``: the mention is a short form defined earlier in the same document
   ("adenomatous polyposis coli (APC)", Schwartz & Hearst 2003); its long form is linked with the
   rules below. Tried first because in-document definitions beat global string hits ("APC" is a
   Gene symbol but names the disease in NCBI-disease).
2. ``exact``: same string ignoring whitespace (tokenisation splits "Huntington's").
3. ``case``: same string ignoring case and whitespace.
4. ``normalized``: unicode folding, Greek letters spelled out, possessive "'s" removed, every
   non-alphanumeric run to one space, British spellings folded, roman numerals to digits,
   plurals stripped, and general medical word equivalences applied per token ("cardiac" =
   "heart", "neoplasm" = "tumor"; a short table in the config, not tuned to any corpus).
5. ``compact``: the normalised tokens without spaces ("IL-2" = "IL2", "A-T" ≠ anything short).
6. ``reordered``: the sorted normalised tokens without function words and a leading stereo
   prefix on the KG-name side ("Abdomen, Acute" = "acute abdomen", "carcinoma of the bladder" =
   "Bladder carcinoma", "tyrosine" = "L-Tyrosine").
7. ``stripped``: a trailing parenthetical and generic head words ("gene", "protein") removed,
   then rules 4–6 again.
8. ``head``: a generic disease head word ("syndrome", "disease") dropped from both the mention
   and the KG name ("fragile X" = "Fragile X Syndrome", "Lesch-Nyhan" = "Lesch-Nyhan Syndrome").
9. ``fuzzy`` (optional): character n-gram TF-IDF cosine above a threshold with the mention's
   numbers equal to the name's ("type 1" never matches "type 2").

Mentions shorter than ``short_mention_chars`` without a digit ("CAT", "TPO", "Cp") are linked only
through an in-document definition (rule 1): as bare strings they name too many things.

Every rule only accepts nodes whose kind agrees with the span's label (``configs/labels.cfg``);
string hits of the wrong kind are counted (``wrong_kind``) but never linked. Among several nodes
under one key the label's kind order decides, then an exact-case hit, then the KG row order, so
results are deterministic. All thresholds and word lists live in ``configs/linking.cfg``.
"""

from __future__ import annotations

import csv
import random
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..config import Section, require
from ..textio import open_text, where_not_utf8
from .labels import LabelInfo
from .readers import Sentence, Span, iter_documents

DEFAULT_LINKING_CFG = "configs/linking.cfg"
RULES = ("abbreviation", "exact", "case", "normalized", "compact", "reordered", "stripped", "head", "fuzzy")
_KEY_RULES = ("exact", "case", "normalized", "compact", "reordered", "head")

# Unicode facts, not tunables: Greek letters are spelled out so "α-synuclein" = "alpha-synuclein".
GREEK = {
    "α": "alpha", "β": "beta", "γ": "gamma", "δ": "delta", "ε": "epsilon", "ζ": "zeta", "η": "eta",
    "θ": "theta", "ι": "iota", "κ": "kappa", "λ": "lambda", "μ": "mu", "ν": "nu", "ξ": "xi",
    "ο": "omicron", "π": "pi", "ρ": "rho", "σ": "sigma", "ς": "sigma", "τ": "tau", "υ": "upsilon",
    "φ": "phi", "χ": "chi", "ψ": "psi", "ω": "omega",
}  # fmt: skip
ROMAN = {"ii": "2", "iii": "3", "iv": "4", "v": "5", "vi": "6", "vii": "7", "viii": "8", "ix": "9", "x": "10"}
_NON_ALNUM = re.compile(r"[^0-9a-z]+")
_POSSESSIVE = re.compile(r"(\w)\s*['’`]\s*s\b")
_DIGITS = re.compile(r"\d+")


@dataclass
class LinkingSettings(Section):
    """The ``[linking]`` section of ``configs/linking.cfg`` (see that file for what each one does)."""

    SECTION: ClassVar[str] = "linking"
    DEFAULT_CONFIG: ClassVar[str] = DEFAULT_LINKING_CFG

    rules: list[str]
    abbreviation_window: int
    max_short_form_chars: int
    min_plural_chars: int
    min_mention_chars: int
    short_mention_chars: int
    spelling: list[list[str]]
    word_variants: list[list[str]]
    strip_words: list[str]
    function_words: list[str]
    stereo_prefixes: list[str]
    generic_heads: list[str]
    fuzzy_threshold: float
    fuzzy_ngram: list[int]
    fuzzy_min_chars: int
    report_examples: int
    report_seed: int

    def __post_init__(self) -> None:
        bad = [r for r in self.rules if r not in RULES]
        require(not bad, f"Unknown linking rule(s) {bad}; known: {list(RULES)}")


# --------------------------------------------------------------------------- normalisation


def fold(text: str) -> str:
    """Unicode-fold and lower-case: Greek letters spelled out, accents dropped, NFKC compatibility."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(f" {GREEK[c.lower()]} " if c.lower() in GREEK else c for c in text)
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if not unicodedata.combining(c)).lower()


def normal_tokens(text: str, settings: LinkingSettings) -> list[str]:
    """Normalised word list (rule 4); applied identically to KG names and mentions."""
    text = _POSSESSIVE.sub(r"\1", fold(text))
    for old, new in settings.spelling:
        text = text.replace(old, new)
    tokens = [t for t in _NON_ALNUM.split(text) if t]
    variants = dict(settings.word_variants)
    out = []
    for i, tok in enumerate(tokens):
        if i > 0 and tok in ROMAN:
            tok = ROMAN[tok]
        elif len(tok) >= settings.min_plural_chars and tok.isalpha():
            if tok.endswith("ies"):
                tok = tok[:-3] + "y"
            elif tok.endswith("s") and not tok.endswith(("ss", "us", "is")):
                tok = tok[:-1]
        out.append(variants.get(tok, tok))
    return out


def _strip(text: str, settings: LinkingSettings) -> str:
    """Drop a trailing parenthetical and trailing generic head words (rule 7)."""
    text = re.sub(r"\s*\([^()]*\)\s*$", "", text.strip())
    words = text.split()
    while len(words) > 1 and fold(words[-1]) in settings.strip_words:
        words.pop()
    return " ".join(words)


def _reordered(toks: list[str], settings: LinkingSettings, is_name: bool) -> str:
    """Sorted words without function words (rule 6); KG names also lose a leading stereo prefix.

    "carcinoma of the bladder" = "Bladder carcinoma", "Abdomen, Acute" = "acute abdomen", and
    "tyrosine" = "L-Tyrosine". Only the name side drops the prefix: in a mention it is
    information ("d-amphetamine" is Dextroamphetamine, not Amphetamine).
    """
    words = [t for t in toks if t not in settings.function_words]
    if is_name and len(words) > 1 and words[0] in settings.stereo_prefixes:
        words = words[1:]
    return " ".join(sorted(words))


def rule_keys(text: str, settings: LinkingSettings, is_name: bool = False) -> dict[str, str]:
    """The lookup key of each string rule for one text (empty keys are dropped)."""
    toks = normal_tokens(text, settings)
    keys = {
        "exact": "".join(text.split()),
        "case": "".join(fold(text).split()),
        "normalized": " ".join(toks),
        "compact": "".join(toks),
        "reordered": _reordered(toks, settings, is_name),
    }
    heads = toks[:-1] if len(toks) > 1 and toks[-1] in settings.generic_heads else toks
    keys["head"] = " ".join(heads)
    return {k: v for k, v in keys.items() if v}


# ------------------------------------------------------------------------ abbreviations


def _short_form(tokens: Sequence[str], settings: LinkingSettings) -> str | None:
    """The short form inside ``( ... )`` as one string, or None when it does not look like one.

    Tokenisers split "A-T" into "A - T", so hyphen/slash-joined pieces are glued back; at most two
    words remain ("X - ALD" = "X-ALD", "vWF Ag" is two words).
    """
    if not tokens:
        return None
    words: list[str] = []
    glue = False
    for tok in tokens:
        if tok in {"-", "/"}:
            if not words:
                return None
            words[-1] += tok
            glue = True
        elif glue:
            words[-1] += tok
            glue = False
        else:
            words.append(tok)
    sf = " ".join(words)
    n = len(sf.replace(" ", ""))
    if len(words) > 2 or not (2 <= n <= settings.max_short_form_chars) or not sf[0].isalnum():
        return None
    if not any(c.isalpha() for c in sf):
        return None
    return sf


def _best_long_form(short: str, words: list[str]) -> list[str] | None:
    """Schwartz–Hearst: match the short form's characters right to left inside the long form."""
    sf = short.lower()
    lf = " ".join(words).lower()
    s, l_ = len(sf) - 1, len(lf) - 1
    while s >= 0:
        c = sf[s]
        if not c.isalnum():
            s -= 1
            continue
        while l_ >= 0 and (lf[l_] != c or (s == 0 and l_ > 0 and lf[l_ - 1].isalnum())):
            l_ -= 1
        if l_ < 0:
            return None
        l_ -= 1
        s -= 1
    start_char = l_ + 1
    # keep the words from the one containing start_char onwards
    pos = 0
    for i, w in enumerate(words):
        if pos + len(w) > start_char:
            return words[i:]
        pos += len(w) + 1
    return None


def find_abbreviations(tokens: Sequence[str], settings: LinkingSettings) -> dict[str, str]:
    """Short form → long form pairs defined in one sentence as ``long form ( SF )``.

    Keys are the short form without spaces, the way mentions are looked up.
    """
    out: dict[str, str] = {}
    stops = {";", ".", ":", "(", ")", "[", "]", ","}
    for i, tok in enumerate(tokens):
        if tok != "(":
            continue
        close = next((j for j in range(i + 1, len(tokens)) if tokens[j] in {")", "("}), None)
        if close is None or tokens[close] != ")":
            continue
        short = _short_form(tokens[i + 1 : close], settings)
        if short is None:
            continue
        n_chars = len(short.replace(" ", ""))
        window = min(n_chars + 5, n_chars * 2)
        before = list(tokens[max(0, i - window) : i])
        # a long form does not run across clause punctuation
        for j in range(len(before) - 1, -1, -1):
            if before[j] in stops:
                before = before[j + 1 :]
                break
        if not before:
            continue
        lf = _best_long_form(short.replace(" ", ""), before)
        if lf and len(" ".join(lf)) > len(short):
            out[short.replace(" ", "")] = " ".join(lf)
    return out


def expand_inside(text: str, abbreviations: dict[str, str]) -> str | None:
    """Replace defined short forms that are words of a longer mention ("G6PD deficiency")."""
    words = text.split()
    if len(words) < 2:
        return None
    out = [abbreviations.get(w, w) for w in words]
    return " ".join(out) if out != words else None


# --------------------------------------------------------------------------------- linker


@dataclass
class Link:
    """A linked node and the rule that found it."""

    node_id: str
    kind: str
    match: str


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


class Linker:
    """Dictionary linker over KG node names (+ optional synonyms) with type agreement."""

    def __init__(
        self,
        node_ids: Sequence[str],
        names: Sequence[str],
        kinds: Sequence[str],
        label_table: dict[str, LabelInfo],
        settings: LinkingSettings,
        synonyms: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.node_ids = list(node_ids)
        self.kinds = list(kinds)
        self.label_table = label_table
        self.settings = settings
        index = {n: i for i, n in enumerate(self.node_ids)}
        entries = [(i, name) for i, name in enumerate(names)]
        entries += [(index[nid], name) for nid, name in synonyms if nid in index]
        self.entries = entries
        self.keys: dict[str, dict[str, list[int]]] = {r: defaultdict(list) for r in _KEY_RULES}
        self._exact_names: set[tuple[int, str]] = set()
        for row, name in entries:
            for rule, key in rule_keys(name, settings, is_name=True).items():
                if row not in self.keys[rule][key]:
                    self.keys[rule][key].append(row)
            self._exact_names.add((row, "".join(name.split())))
        self._fuzzy: Any = None

    @classmethod
    def from_kg(cls, kg: Any, label_table: dict[str, LabelInfo], settings: LinkingSettings, **kw: Any) -> Linker:
        """Build from any KG object with ``node_ids``, ``names`` and ``kinds`` (see ``teacher.graph``)."""
        return cls(kg.node_ids, kg.names, kg.kinds, label_table, settings, **kw)

    # -- lookups

    def _choose(self, rows: list[int], allowed: list[str], exact_key: str) -> int | None:
        ok = [r for r in rows if self.kinds[r] in allowed]
        if not ok:
            return None
        return min(ok, key=lambda r: (allowed.index(self.kinds[r]), (r, exact_key) not in self._exact_names, r))

    def _lookup(self, text: str, allowed: list[str]) -> tuple[int | None, str | None, bool]:
        """(row, rule, wrong_kind_seen) for the first string rule that hits with an allowed kind."""
        wrong = False
        keys = rule_keys(text, self.settings)
        for rule in ("exact", "case", "normalized", "compact", "reordered"):
            if rule not in self.settings.rules or rule not in keys:
                continue
            rows = self.keys[rule].get(keys[rule], [])
            row = self._choose(rows, allowed, keys["exact"]) if rows else None
            if row is not None:
                return row, rule, wrong
            wrong = wrong or bool(rows)
        if "stripped" in self.settings.rules:
            stripped = _strip(text, self.settings)
            if stripped and stripped != text.strip():
                skeys = rule_keys(stripped, self.settings)
                for rule in ("normalized", "compact", "reordered"):
                    rows = self.keys[rule].get(skeys.get(rule, ""), [])
                    row = self._choose(rows, allowed, skeys["exact"]) if rows else None
                    if row is not None:
                        return row, "stripped", wrong
                    wrong = wrong or bool(rows)
        if "head" in self.settings.rules and "head" in keys:
            rows = self.keys["head"].get(keys["head"], [])
            row = self._choose(rows, allowed, keys["exact"]) if rows else None
            if row is not None:
                return row, "head", wrong
        return None, None, wrong

    def link_text(self, text: str, label: str, abbreviations: dict[str, str] | None = None) -> tuple[Link | None, bool]:
        """Link one mention of one label: (link or None, whether a wrong-kind string hit was seen)."""
        info = self.label_table.get(label)
        if info is None or not info.kg_kinds:
            return None, False
        allowed = info.kg_kinds
        if len("".join(text.split())) < self.settings.min_mention_chars:
            return None, False
        if abbreviations and "abbreviation" in self.settings.rules:
            long_form = abbreviations.get("".join(text.split())) or expand_inside(text, abbreviations)
            if long_form:
                row, _, _ = self._lookup(long_form, allowed)
                if row is not None:
                    return Link(self.node_ids[row], self.kinds[row], "abbreviation"), False
        compact = "".join(text.split())
        if len(compact) < self.settings.short_mention_chars and not any(c.isdigit() for c in compact):
            return None, False  # "CAT", "TPO", "Cp": ambiguous symbols, linked only via a definition
        row, rule, wrong = self._lookup(text, allowed)
        if row is None:
            return None, wrong
        return Link(self.node_ids[row], self.kinds[row], rule or ""), wrong

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
        for doc in _documents(sentences):
            recent: list[dict[str, str]] = []
            for sent in doc:
                recent.append(find_abbreviations(sent.tokens, self.settings))
                recent = recent[-self.settings.abbreviation_window :]
                abbrevs: dict[str, str] = {}
                for d in recent:
                    abbrevs.update(d)
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
