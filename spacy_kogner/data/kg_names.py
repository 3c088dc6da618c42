"""Training sentences made of the knowledge graph's own node names, each span linked to its node.

Two uses, one builder:

* **the pooled corpus** (``data/pooled.py``): text matched in gold sentences carries few names of
  a kind no gold corpus covers (1,838 chemicals in the 34,805 sentences of a pool without BC5CDR);
  the graph itself lists every name;
* **the KG study** (``workflow/kg_study.py``, issue 13): a low-resource regime has too few
  KG-linked spans for the distillation term to learn from (~140 in 10 % of NCBI-disease), while
  the graph names every node of the label's kinds (137 diseases, 438 symptoms, 5,734 side effects).
  ``python -m spacy_kogner kg-names Disease OUT.json`` writes them as linked training sentences
  that every arm of the study sees, so that arms differ only in the loss.

A name is kept only where the silver matcher, run on it alone, finds exactly that node's kind over
all its tokens, so every silver rule (stop names, one-word generic names, blocking kinds) applies
here as in text. ``per_sentence`` names are joined into a comma-separated list ending in ".".
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import ConfigError, require
from .labels import KindInfo, LabelInfo
from .readers import Sentence, Span
from .silver import SilverMatcher

NAMES_CORPUS = "kg-names"
_NAME_TOKEN = re.compile(r"\w+|[^\w\s]")


def name_sentences(
    matcher: SilverMatcher,
    used: Sequence[str],
    per_kind: int,
    per_sentence: int,
    seed: int,
    holdout: float = 0.0,
    holdout_pool: set[str] | None = None,
) -> tuple[list[Sentence], Counter[str]]:
    """Sentences listing up to ``per_kind`` names (sampled with ``seed``; 0 = none) of each kind in
    ``used``, ``per_sentence`` to a sentence; spans labelled by the matcher's kind table.

    ``holdout``: the fraction of each kind's nodes (drawn with ``seed``) whose names are left out,
    so that dev spans linked to them test what the student learned of nodes it never saw named
    (the KG study's seen / unseen retrieval); with ``holdout_pool`` (node ids, e.g. those a dev
    split links to) the fraction is drawn among the kind's nodes in the pool, so that enough dev
    spans are unseen. Returns the sentences and the name spans per label."""
    require(per_kind >= 0, "names per kind must be >= 0 (0: no name sentences)")
    require(per_sentence > 0, "names per sentence must be > 0")
    require(0 <= holdout < 1, "holdout must be in [0, 1)")
    rng = random.Random(seed)
    counts: Counter[str] = Counter()
    out: list[Sentence] = []
    if not per_kind:
        return out, counts
    by_kind: dict[str, list[int]] = {}
    for row, kind in enumerate(matcher.kinds):
        if kind in used:
            by_kind.setdefault(kind, []).append(row)
    for kind in used:
        rows = by_kind.get(kind, [])
        rng.shuffle(rows)
        pool = [r for r in rows if holdout_pool is None or matcher.node_ids[r] in holdout_pool]
        held = set(pool[: round(holdout * len(pool))])
        rows = [r for r in rows if r not in held]
        names: list[tuple[list[str], Span]] = []
        for row in rows:
            tokens = _NAME_TOKEN.findall(matcher.names[row])
            found = matcher.match_sentence(tokens)
            if len(found) != 1 or found[0][:2] != (0, len(tokens)) or matcher.kinds[found[0][2]] != kind:
                continue
            span = matcher.span(0, len(tokens), found[0][2], "name")
            if span.label:
                names.append((tokens, span))
            if len(names) == per_kind:
                break
        for i in range(0, len(names), per_sentence):
            tokens, spans = [], []
            for j, (name, span) in enumerate(names[i : i + per_sentence]):
                if j:
                    tokens.append(",")
                spans.append(Span(len(tokens), len(tokens) + len(name), span.label, span.kge, span.match))
                tokens.extend(name)
            out.append(Sentence(tokens + ["."], spans, NAMES_CORPUS))
            counts.update(sp.label for sp in spans)
    return out, counts


def build_label_names(
    label: str,
    out: str | Path,
    kg: Any,
    table: dict[str, LabelInfo],
    silver_section: dict[str, Any],
    linking_section: dict[str, Any],
    blocking_kinds: Sequence[str],
    per_kind: int,
    per_sentence: int,
    seed: int,
    holdout: float = 0.0,
    holdout_pool: set[str] | None = None,
) -> dict[str, Any]:
    """Write the name sentences of every KG kind a corpus ``label`` links to (``labels.cfg``
    ``kg_kinds``), spans labelled ``label``, as training-ready GLiNER JSON; return statistics.

    Names of a ``blocking_kinds`` kind outside the label's kinds are dropped ("aspirin" is no
    disease name even where a side effect is called that)."""
    from .readers import write_gliner_json
    from .silver import kind_matcher, matched_kinds

    if label not in table:
        raise ConfigError(f"kg-names: unknown label {label!r}; labels.cfg has {sorted(table)}")
    kinds = list(table[label].kg_kinds)
    if not kinds:
        raise ConfigError(f"kg-names: label {label!r} links to no KG kind (labels.cfg kg_kinds is empty)")
    matched = matched_kinds(kinds, blocking_kinds)
    kind_table = {kind: KindInfo(prompt=label if kind in kinds else "") for kind in matched}
    matcher = kind_matcher(kg, matched, kind_table, silver_section, linking_section)
    sents, counts = name_sentences(matcher, kinds, per_kind, per_sentence, seed, holdout, holdout_pool)
    kind_of = dict(zip(matcher.node_ids, matcher.kinds, strict=True))
    by_kind = Counter(kind_of[s.kge] for x in sents for s in x.spans)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_gliner_json(sents, path, label_sets=lambda _: [label], extras=False)
    stats = {
        "label": label, "kinds": kinds, "sentences": len(sents), "names": dict(counts), "by_kind": dict(by_kind),
        "holdout": holdout, "holdout_pool": None if holdout_pool is None else len(holdout_pool), "seed": seed,
    }  # fmt: skip
    path.with_suffix(".stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf8")
    return stats
