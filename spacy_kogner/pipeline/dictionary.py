"""The dictionary route of KG linking: a mention and its label → the KG node it names, or none.

Used twice: at training time to give gold spans their ``kge`` node (``data/linking.py`` runs it
over corpora) and at inference by the ``kogner_linker`` pipe (``pipeline/linker.py``). It lives in
the pipeline so that a packaged pipeline links without the training stack.

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

Mentions shorter than ``short_mention_chars`` without a digit ("CAT", "TPO", "Cp"), and the
``homonyms`` of the config (reporter and viral genes that share a human gene's symbol: "CAT",
"TAT", "COX-2"), are linked only through an in-document definition (rule 1): as bare strings they
name too many things. Other guards found by hand checks of gene links: a lone "x" or "v" is a
letter, not a Roman numeral ("Bcl-x" is not BCL10); an all-capitals symbol with a plural "s"
("RARs") or a digit-free name under a plural set word ("Rel/Jun proteins", "ras genes") names a
family and stays unlinked (case folding also made "RARs" the symbol RARS); a string that
stripping leaves shorter than ``min_stripped_chars`` ("t(8;21)" → "t") is not looked up; and
the ``head`` rule needs more than one word unless the word is not an adjective ("convulsive" is
not "Convulsive disorder").

Every rule only accepts nodes whose kind agrees with the span's label (``configs/labels.cfg``);
string hits of the wrong kind are counted (``wrong_kind``) but never linked. Among several nodes
under one key the label's kind order decides, then an exact-case hit, then the KG row order, so
results are deterministic. All thresholds and word lists live in ``configs/linking.cfg``.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

RULES = ("abbreviation", "exact", "case", "normalized", "compact", "reordered", "stripped", "head", "fuzzy")
_KEY_RULES = ("exact", "case", "normalized", "compact", "reordered", "head")

# Unicode facts, not tunables: Greek letters are spelled out so "α-synuclein" = "alpha-synuclein".
GREEK = {
    "α": "alpha", "β": "beta", "γ": "gamma", "δ": "delta", "ε": "epsilon", "ζ": "zeta", "η": "eta",
    "θ": "theta", "ι": "iota", "κ": "kappa", "λ": "lambda", "μ": "mu", "ν": "nu", "ξ": "xi",
    "ο": "omicron", "π": "pi", "ρ": "rho", "σ": "sigma", "ς": "sigma", "τ": "tau", "υ": "upsilon",
    "φ": "phi", "χ": "chi", "ψ": "psi", "ω": "omega",
}  # fmt: skip
# Roman numerals of two letters or more only: a lone "x" or "v" is far more often a letter
# ("Bcl-x", "factor X", "vitamin A/D/E/K/V") than a numeral, and folding it made "Bcl-x" BCL10.
ROMAN = {"ii": "2", "iii": "3", "iv": "4", "vi": "6", "vii": "7", "viii": "8", "ix": "9"}
_NON_ALNUM = re.compile(r"[^0-9a-z]+")
_POSSESSIVE = re.compile(r"(\w)\s*['’`]\s*s\b")
_DIGITS = re.compile(r"\d+")
# An all-capitals symbol with a plural "s": "RARs", "CDKs", "MAPKs".
_PLURAL_SYMBOL = re.compile(r"^([A-Z][A-Z0-9-]*[A-Z0-9])s$")


class DictionaryError(ValueError):
    """Dictionary settings that cannot work, naming the key."""


@dataclass
class DictionarySettings:
    """The dictionary rules' settings (the ``[linking]`` section of ``configs/linking.cfg`` holds
    them for training, a linker pipe carries them in its own folder)."""

    rules: list[str]
    max_short_form_chars: int
    min_plural_chars: int
    min_mention_chars: int
    short_mention_chars: int
    min_stripped_chars: int
    spelling: list[list[str]]
    word_variants: list[list[str]]
    strip_words: list[str]
    set_words: list[str]
    homonyms: list[str]
    function_words: list[str]
    stereo_prefixes: list[str]
    generic_heads: list[str]
    adjective_suffixes: list[str]

    def __post_init__(self) -> None:
        bad = [r for r in self.rules if r not in RULES]
        if bad:
            raise DictionaryError(f"Unknown linking rule(s) {bad}; known: {list(RULES)}")

    def to_dict(self) -> dict[str, Any]:
        """The dictionary keys only (what a linker pipe saves)."""
        return {f.name: getattr(self, f.name) for f in fields(DictionarySettings)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DictionarySettings:
        """Rebuild from ``to_dict`` output; unknown or missing keys are an error naming them."""
        names = {f.name for f in fields(DictionarySettings)}
        unknown, missing = sorted(set(values) - names), sorted(names - set(values))
        if unknown or missing:
            raise DictionaryError(f"dictionary settings: unknown keys {unknown}, missing keys {missing}")
        return DictionarySettings(**values)


# --------------------------------------------------------------------------- normalisation


def fold(text: str) -> str:
    """Unicode-fold and lower-case: Greek letters spelled out, accents dropped, NFKC compatibility."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(f" {GREEK[c.lower()]} " if c.lower() in GREEK else c for c in text)
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if not unicodedata.combining(c)).lower()


def normal_tokens(text: str, settings: DictionarySettings) -> list[str]:
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


def _strip(text: str, settings: DictionarySettings) -> str:
    """Drop a trailing parenthetical and trailing generic head words (rule 7)."""
    text = re.sub(r"\s*\([^()]*\)\s*$", "", text.strip())
    words = text.split()
    while len(words) > 1 and fold(words[-1]) in settings.strip_words:
        words.pop()
    return " ".join(words)


def _reordered(toks: list[str], settings: DictionarySettings, is_name: bool) -> str:
    """Sorted words without function words (rule 6); KG names also lose a leading stereo prefix.

    "carcinoma of the bladder" = "Bladder carcinoma", "Abdomen, Acute" = "acute abdomen", and
    "tyrosine" = "L-Tyrosine". Only the name side drops the prefix: in a mention it is
    information ("d-amphetamine" is Dextroamphetamine, not Amphetamine).
    """
    words = [t for t in toks if t not in settings.function_words]
    if is_name and len(words) > 1 and words[0] in settings.stereo_prefixes:
        words = words[1:]
    return " ".join(sorted(words))


def rule_keys(text: str, settings: DictionarySettings, is_name: bool = False) -> dict[str, str]:
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


def _short_form(tokens: Sequence[str], settings: DictionarySettings) -> str | None:
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


def find_abbreviations(tokens: Sequence[str], settings: DictionarySettings) -> dict[str, str]:
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


def long_form(text: str, abbreviations: dict[str, str]) -> str | None:
    """The in-document long form of a mention that is (or contains) a defined short form."""
    return abbreviations.get("".join(text.split())) or expand_inside(text, abbreviations)


def looks_like_abbreviation(text: str) -> bool:
    """One short token with two capitals or fewer than three characters ("BZS", "cGMP", "Ca"):
    read without its definition it names nothing a vector can find."""
    compact = "".join(text.split())
    return len(compact) <= 6 and (sum(c.isupper() for c in compact) >= 2 or len(compact) < 3)


def name_similarity(a: str, b: str) -> float:
    """Dice overlap of the character 3-grams of two folded names (1.0 = same letters)."""
    grams = [_trigrams(" ".join(_words(x))) for x in (a, b)]
    total = sum(grams[0].values()) + sum(grams[1].values())
    return 2 * sum((grams[0] & grams[1]).values()) / total if total else 0.0


def names_agree(a: str, b: str, extra_words: int = 0, min_word_similarity: float = 0.5) -> bool:
    """Whether two names differ only in spelling or inflection, word by word: every word of the
    shorter name pairs with its own word of the other that starts with the same three letters and
    shares >= ``min_word_similarity`` of its 3-grams (words of <= 4 letters must be equal: "with"
    is not "without", "B" is not "C"), and the longer name has at most ``extra_words`` more words.
    Measured on dictionary misses (docs/results/linking.md): names close by letters but not by
    words were other concepts ("deoxycholic" / "Chenodeoxycholic", "ventricular" /
    "Supraventricular"), and an extra word made the node broader or narrower than the mention."""
    wa, wb = (_words(a), _words(b))
    if len(wa) > len(wb):
        wa, wb = wb, wa
    if not wa or len(wb) - len(wa) > extra_words:
        return False
    free = list(range(len(wb)))
    for word in wa:
        match = next((j for j in free if _same_word(word, wb[j], min_word_similarity)), None)
        if match is None:
            return False
        free.remove(match)
    return True


def _words(text: str) -> list[str]:
    return [w for w in _NON_ALNUM.split(fold(text)) if w]


def _same_word(a: str, b: str, min_similarity: float) -> bool:
    if len(a) <= 4 or len(b) <= 4:
        return a == b
    return a[:3] == b[:3] and name_similarity(a, b) >= min_similarity


def _trigrams(text: str) -> Counter[str]:
    padded = f" {text} "
    return Counter(padded[i : i + 3] for i in range(len(padded) - 2))


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


class DictionaryLinker:
    """Dictionary linker over KG node names (+ optional synonyms) with type agreement.

    ``label_table`` maps each label to an object with ``kg_kinds`` (the kinds it may link to, in
    preference order)."""

    def __init__(
        self,
        node_ids: Sequence[str],
        names: Sequence[str],
        kinds: Sequence[str],
        label_table: dict[str, Any],
        settings: DictionarySettings,
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
        self._homonyms = {fold("".join(h.split())) for h in settings.homonyms}

    @classmethod
    def from_kg(cls, kg: Any, label_table: dict[str, Any], settings: DictionarySettings, **kw: Any) -> Any:
        """Build from any KG object with ``node_ids``, ``names`` and ``kinds`` (see ``teacher.graph``)."""
        return cls(kg.node_ids, kg.names, kg.kinds, label_table, settings, **kw)

    # -- lookups

    def _ranked(self, rows: list[int], allowed: list[str], exact_key: str) -> list[int]:
        """Rows of an allowed kind, best first: the label's kind order, then an exact-case hit,
        then KG row order (deterministic)."""
        ok = [r for r in rows if self.kinds[r] in allowed]
        return sorted(ok, key=lambda r: (allowed.index(self.kinds[r]), (r, exact_key) not in self._exact_names, r))

    def _ambiguous(self, text: str) -> bool:
        """A bare short symbol without a digit ("CAT", "Cp", "t") or a configured homonym ("COX-2",
        "TAT"): never looked up as a string, only through an in-document definition."""
        compact = "".join(text.split())
        if len(compact) < self.settings.min_mention_chars or fold(compact) in self._homonyms:
            return True
        return len(compact) < self.settings.short_mention_chars and not any(c.isdigit() for c in compact)

    def _names_a_set(self, text: str) -> bool:
        """A family, not one node: a digit-free name under a plural set word ("Rel/Jun proteins",
        "ras genes"; "CCR5 genes" are alleles of one gene) or an all-capitals symbol with a plural
        "s" ("RARs", "CRKs"; case folding would also make "RARs" the symbol RARS)."""
        words = text.split()
        if len(words) > 1 and fold(words[-1]) in self.settings.set_words:
            return not any(c.isdigit() for c in "".join(words[:-1]))
        return bool(_PLURAL_SYMBOL.match("".join(words)))

    def _single_adjective(self, toks: list[str]) -> bool:
        """One word with an adjective ending ("convulsive", "epileptic"): not a disorder's name."""
        return len(toks) == 1 and toks[0].endswith(tuple(self.settings.adjective_suffixes))

    def _lookup(self, text: str, allowed: list[str]) -> tuple[list[int], str | None, bool]:
        """(ranked rows, rule, wrong_kind_seen) for the first string rule that hits an allowed kind."""
        wrong = False
        keys = rule_keys(text, self.settings)
        for rule in ("exact", "case", "normalized", "compact", "reordered"):
            if rule not in self.settings.rules or rule not in keys:
                continue
            rows = self.keys[rule].get(keys[rule], [])
            ranked = self._ranked(rows, allowed, keys["exact"]) if rows else []
            if ranked:
                return ranked, rule, wrong
            wrong = wrong or bool(rows)
        if "stripped" in self.settings.rules:
            stripped = _strip(text, self.settings)
            compact = "".join(stripped.split())
            if (
                stripped != text.strip()
                and len(compact) >= self.settings.min_stripped_chars
                and fold(compact) not in self._homonyms
            ):
                skeys = rule_keys(stripped, self.settings)
                for rule in ("normalized", "compact", "reordered"):
                    rows = self.keys[rule].get(skeys.get(rule, ""), [])
                    ranked = self._ranked(rows, allowed, skeys["exact"]) if rows else []
                    if ranked:
                        return ranked, "stripped", wrong
                    wrong = wrong or bool(rows)
        if "head" in self.settings.rules and "head" in keys:
            if not self._single_adjective(normal_tokens(text, self.settings)):
                rows = self.keys["head"].get(keys["head"], [])
                ranked = self._ranked(rows, allowed, keys["exact"]) if rows else []
                if ranked:
                    return ranked, "head", wrong
        return [], None, wrong

    def candidates(
        self, text: str, label: str, abbreviations: dict[str, str] | None = None
    ) -> tuple[list[int], str | None, bool]:
        """All rows the first hitting rule finds for one mention, best first, with the rule's name
        and whether a wrong-kind string hit was seen. Empty when the label maps to no KG kind."""
        info = self.label_table.get(label)
        if info is None or not info.kg_kinds:
            return [], None, False
        allowed = list(info.kg_kinds)
        compact = "".join(text.split())
        if len(compact) < self.settings.min_mention_chars:
            return [], None, False
        if abbreviations and "abbreviation" in self.settings.rules:
            expanded = long_form(text, abbreviations)
            if expanded:
                rows, _, _ = self._lookup(expanded, allowed)
                if rows:
                    return rows, "abbreviation", False
        if self._ambiguous(text) or self._names_a_set(text):
            return [], None, False
        return self._lookup(text, allowed)

    def link_text(self, text: str, label: str, abbreviations: dict[str, str] | None = None) -> tuple[Link | None, bool]:
        """Link one mention of one label: (link or None, whether a wrong-kind string hit was seen)."""
        rows, rule, wrong = self.candidates(text, label, abbreviations)
        if not rows:
            return None, wrong
        row = rows[0]
        return Link(self.node_ids[row], self.kinds[row], rule or ""), wrong
