"""The pooled biomedical training corpus: several gold corpora plus KG silver for what none covers.

One student for every label needs every label in one training set, but each gold corpus annotates
only its own types: an NCBI-disease sentence says nothing about chemicals. So

* each gold sentence keeps **its own corpus's label set** as negatives (``labels`` of its record);
* the KG silver matcher (``data/silver.py``) runs over the same gold training sentences, for the
  KG kinds that **no gold label of the pool already prompts** (anatomy, pathway, symptom,
  pharmacologic class, ... and, in a leave-one-corpus-out pool, e.g. compounds when BC5CDR is
  held out). Those kinds' spans are added to the sentence and their prompts to its label set:
  ``silver_negatives = "corpus"`` offers every silver prompt in every training sentence (a
  sentence without a match is a full negative for the kind), ``"matched"`` only in the sentences
  where that kind matched. A dictionary's silence is weak evidence (a KG names few of the chemicals
  a sentence mentions), and the full negatives taught a leave-BC5CDR-out student never to say
  "chemical" (1,838 silver positives in 34,805 sentences: 0 predictions on BC5CDR test); with
  ``cross_negatives`` in training, the unmatched sentences still teach that their gold spans of
  another family are not of the kind;
* with ``silver_fill``, each corpus's sentences also get the silver of the kinds the *pool* covers
  but **that corpus does not annotate** (its label family): KG genes in NCBI-disease and BC5CDR
  sentences, KG compounds in NCBI-disease, BC2GM and JNLPBA sentences, labelled with the pool's
  gold label of that prompt (``GENE``, ``Chemical``). Without it a label is only ever positive in
  its own corpus's text, and the student learns the shortcut "disease-genetics prose has no genes"
  (the pooled student of 2026-12-07 scored "BRCA1" under 0.1 as a gene in "Germline mutations in
  BRCA1 cause hereditary breast cancer"; docs/results/pooled_fill.md measures the fill against a
  control). Under ``silver_negatives = "matched"`` the label is offered, with full negatives, only
  in the sentences where a fill span matched;
* a silver span on exactly the tokens of a gold span is dropped (the gold label wins), and so is a
  name of a covered kind: ``blocking_kinds`` (diseases, compounds, genes) are matched first and
  their matches discarded, so "progesterone" (a Compound, and a Pharmacologic Class name) or
  "adrenoleukodystrophy" (a Disease, and a Symptom name) never become silver of the other kind;
* the dev split is **gold only** and shuffled with the seed, so that model selection and the
  threshold never rest on silver and a ``max_dev_sentences`` prefix samples every corpus;
* ``dev_silver.json`` holds the same dev sentences' silver spans alone (the sentences with one):
  a silver-only prompt ("chemical" in a pool without BC5CDR) has no gold dev span, so its own
  decision threshold can only be calibrated there (``distill.cfg`` ``paths.calibration``);
  each sentence is prompted as in training (``silver_negatives``).

Whether a kind is covered is decided by prompt, not by name: in a pool without BC5CDR no gold
label prompts "chemical", so ``Compound`` silver comes in; with BC5CDR it stays out.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..config import ConfigError, Section, require
from .kg_names import NAMES_CORPUS, name_sentences
from .labels import KindInfo, LabelInfo, label_family, label_prompt
from .readers import Sentence, Span
from .silver import SilverMatcher, matched_kinds

DEFAULT_POOLED_CFG = "configs/pooled.cfg"


@dataclass
class PooledSettings(Section):
    """The ``[pooled]`` section of ``configs/pooled.cfg``."""

    SECTION: ClassVar[str] = "pooled"
    DEFAULT_CONFIG: ClassVar[str] = DEFAULT_POOLED_CFG

    corpora: list[str]
    gold_dir: str
    silver: list[list[str]]
    blocking_kinds: list[str]
    silver_negatives: str
    kg_names_per_kind: int
    names_per_sentence: int
    seed: int
    silver_fill: bool = False

    def __post_init__(self) -> None:
        require(bool(self.corpora), "pooled.corpora must name at least one gold corpus")
        require(
            self.silver_negatives in ("corpus", "matched"),
            f"pooled.silver_negatives must be 'corpus' or 'matched'; got {self.silver_negatives!r}",
        )
        require(self.kg_names_per_kind >= 0, "pooled.kg_names_per_kind must be >= 0 (0: no name sentences)")
        require(self.names_per_sentence > 0, "pooled.names_per_sentence must be > 0")
        require("{corpus}" in self.gold_dir, "pooled.gold_dir must contain {corpus}")
        for pair in self.silver:
            require(len(pair) == 2 and all(pair), f"pooled.silver entries are [kind, prompt]; got {pair!r}")

    @property
    def silver_prompts(self) -> dict[str, str]:
        """KG kind → the prompt its silver spans get."""
        return {kind: prompt for kind, prompt in self.silver}


def uncovered_kinds(
    gold_labels: Sequence[str], silver_prompts: dict[str, str], table: dict[str, LabelInfo]
) -> list[str]:
    """The silver kinds whose prompt no gold label of the pool is prompted with, in config order."""
    covered = {label_prompt(lbl, table).lower() for lbl in gold_labels}
    return [kind for kind, prompt in silver_prompts.items() if prompt.lower() not in covered]


def fill_kinds(
    own_labels: Sequence[str],
    pool_labels: Sequence[str],
    silver_prompts: dict[str, str],
    table: dict[str, LabelInfo],
) -> dict[str, str]:
    """The silver kinds to fill into one corpus's sentences (``silver_fill``): kind → the pool's gold
    label it is labelled with, for each kind whose prompt a gold label of the pool has (so it is not
    an uncovered kind) but whose label family the corpus itself does not annotate."""
    by_prompt = {label_prompt(lbl, table).lower(): lbl for lbl in pool_labels}
    families = {label_family(lbl, table) for lbl in own_labels}
    out = {}
    for kind, prompt in silver_prompts.items():
        label = by_prompt.get(prompt.lower())
        if label is not None and label_family(label, table) not in families:
            out[kind] = label
    return out


def silver_kind_table(
    matched: Sequence[str], used: Sequence[str], silver_prompts: dict[str, str]
) -> dict[str, KindInfo]:
    """The kind table the silver matcher labels pooled spans with (pooled prompts, not the paper's);
    a matched kind that is not in use (a blocker) gets the empty prompt, and its matches are discarded."""
    return {kind: KindInfo(prompt=silver_prompts[kind] if kind in used else "") for kind in matched}


def add_silver(sentences: list[Sentence], matcher: SilverMatcher) -> tuple[list[Sentence], Counter[str]]:
    """Each sentence with the matcher's spans added (none on a gold span's exact tokens).

    Returns the new sentences and how many silver spans each prompt got."""
    counts: Counter[str] = Counter()
    silver = matcher.annotate(sentences)
    out = []
    for gold, found in zip(sentences, silver, strict=True):
        taken = {(s.start, s.end) for s in gold.spans}
        extra = [s for s in found.spans if s.label and (s.start, s.end) not in taken]
        counts.update(s.label for s in extra)
        spans = sorted([*gold.spans, *extra], key=lambda s: (s.start, s.end, s.label))
        out.append(Sentence(list(gold.tokens), spans, gold.corpus, gold.doc_id))
    return out, counts


def pool_splits(
    gold: dict[str, dict[str, list[Sentence]]],
    settings: PooledSettings,
    table: dict[str, LabelInfo],
    matcher_for: Callable[[list[str], dict[str, KindInfo]], SilverMatcher],
) -> tuple[dict[str, list[Sentence]], dict[str, dict[str, list[str]]], dict[str, Any]]:
    """Pool ``gold[corpus][split]``; ``matcher_for(kinds, kind_table)`` builds the ``SilverMatcher``.

    Returns the pooled splits (train: gold + silver; dev: gold only, shuffled), each split's label
    sets (dev: each corpus's gold labels; train: the gold labels + the silver prompts in use, per
    corpus, or per sentence as a function of it under ``silver_negatives = "matched"``) and
    statistics (whose ``label_sets`` are per corpus: every label a corpus's sentences may carry)."""
    if not gold:
        raise ConfigError("pooled corpus: no gold corpora given")
    own = {
        corpus: sorted({s.label for sents in splits.values() for x in sents for s in x.spans})
        for corpus, splits in gold.items()
    }
    kinds = uncovered_kinds(sorted({lbl for labels in own.values() for lbl in labels}), settings.silver_prompts, table)
    prompts = list(dict.fromkeys(settings.silver_prompts[k] for k in kinds))
    train_sets = {c: labels + [p for p in prompts if p not in labels] for c, labels in own.items()}
    label_sets: dict[str, Any] = {"train": train_sets, "dev": own}
    if settings.silver_negatives == "matched":
        label_sets["train"] = lambda sent: (
            own[sent.corpus] + sorted({s.label for s in sent.spans if _is_silver(s)} - set(own[sent.corpus]))
        )
    train: list[Sentence] = []
    silver_counts: Counter[str] = Counter()
    fill_counts: dict[str, dict[str, int]] = {}
    matcher = None
    if kinds:
        matched = matched_kinds(kinds, settings.blocking_kinds)
        matcher = matcher_for(matched, silver_kind_table(matched, kinds, settings.silver_prompts))
    pool_labels = sorted({lbl for labels in own.values() for lbl in labels})
    fill_matchers: dict[tuple[tuple[str, str], ...], SilverMatcher] = {}  # corpora with one fill share a matcher
    for corpus in gold:
        sents = gold[corpus].get("train", [])
        fill = fill_kinds(own[corpus], pool_labels, settings.silver_prompts, table) if settings.silver_fill else {}
        corpus_matcher = matcher
        if fill:  # this corpus's matcher: the uncovered kinds and its fill kinds (labelled as the pool's gold label)
            key = tuple(fill.items())
            if key not in fill_matchers:
                used = [*fill, *kinds]  # before the other kinds: a Compound name is not a Pharmacologic Class
                matched = matched_kinds(used, settings.blocking_kinds)
                prompts = {**settings.silver_prompts, **fill}
                fill_matchers[key] = matcher_for(matched, silver_kind_table(matched, used, prompts))
            corpus_matcher = fill_matchers[key]
            train_sets[corpus] = train_sets[corpus] + sorted(set(fill.values()) - set(train_sets[corpus]))
        if corpus_matcher is not None:
            sents, counts = add_silver(sents, corpus_matcher)
            fill_counts[corpus] = {lbl: counts.pop(lbl) for lbl in sorted(set(fill.values())) if lbl in counts}
            silver_counts.update(counts)
        train.extend(sents)
    names, name_counts = (
        name_sentences(matcher, kinds, settings.kg_names_per_kind, settings.names_per_sentence, settings.seed)
        if matcher is not None
        else ([], Counter())
    )
    if names:
        train.extend(names)
        own = {**own, NAMES_CORPUS: []}
        train_sets[NAMES_CORPUS] = list(prompts)
    dev = [s for corpus in gold for s in gold[corpus].get("dev", [])]
    rng = random.Random(settings.seed)
    rng.shuffle(dev)
    dev_silver = silver_only(add_silver(dev, matcher)[0]) if matcher is not None else []
    matched_only = settings.silver_negatives == "matched"
    label_sets["dev_silver"] = lambda sent: sorted({s.label for s in sent.spans}) if matched_only else list(prompts)
    stats = {
        "corpora": list(gold),
        "silver_kinds": kinds,
        "silver_spans": dict(sorted(silver_counts.items())),
        "name_spans": dict(sorted(name_counts.items())),
        "fill_spans": {corpus: counts for corpus, counts in fill_counts.items() if counts},
        "label_sets": train_sets,
        "sentences": {"train": len(train), "dev": len(dev), "dev_silver": len(dev_silver)},
        "gold_spans": {"train": sum(1 for x in train for s in x.spans if not _is_silver(s))},
        "dev_silver_spans": dict(sorted(Counter(s.label for x in dev_silver for s in x.spans).items())),
    }
    splits = {"train": train, "dev": dev}
    if dev_silver:
        splits["dev_silver"] = dev_silver
    return splits, label_sets, stats


def silver_only(sentences: list[Sentence]) -> list[Sentence]:
    """The sentences with a silver span, holding their silver spans only: the calibration split of
    the silver-only prompts (``dev_silver.json``), which no gold dev label can tune."""
    out = []
    for sent in sentences:
        spans = [s for s in sent.spans if _is_silver(s)]
        if spans:
            out.append(Sentence(list(sent.tokens), spans, sent.corpus, sent.doc_id))
    return out


def _is_silver(span: Span) -> bool:
    return bool(span.match) and span.match.startswith("silver")


def build_pooled(
    settings: PooledSettings,
    out_dir: str | Path,
    kg: Any,
    silver_section: dict[str, Any],
    linking_section: dict[str, Any],
    table: dict[str, LabelInfo],
) -> dict[str, Any]:
    """Read the gold corpora, pool them (``pool_splits``) and write train/dev JSON + ``stats.json``.

    ``kg`` is the loaded KG (``kg.graph.load_kg``) the silver names come from."""
    from .corpus import find_split
    from .readers import read_corpus, write_gliner_json
    from .silver import kind_matcher

    gold: dict[str, dict[str, list[Sentence]]] = {}
    for corpus in settings.corpora:
        folder = Path(settings.gold_dir.format(corpus=corpus))
        gold[corpus] = {}
        for split in ("train", "dev"):
            path = find_split(folder, split)
            if path is None:
                raise FileNotFoundError(f"{folder} has no {split} split (build it with build-corpus first)")
            gold[corpus][split] = read_corpus(path, corpus=corpus)

    def matcher_for(kinds: list[str], kind_table: dict[str, KindInfo]) -> SilverMatcher:
        return kind_matcher(kg, kinds, kind_table, silver_section, linking_section)

    splits, label_sets, stats = pool_splits(gold, settings, table, matcher_for)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split, sents in splits.items():
        write_gliner_json(sents, out / f"{split}.json", label_sets=label_sets[split], extras=False)
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf8")
    return stats
