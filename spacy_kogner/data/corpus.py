"""Training-ready corpus folders: read splits, link spans to the KG, write ``.spacy`` + GLiNER JSON.

The folder is the hand-off to training and evaluation:

```
OUT/train.spacy dev.spacy test.spacy   DocBin; doc.spans["sc"] = all spans (kge in kb_id_), doc.ents if flat
OUT/train.json  dev.json  test.json    GLiNER JSON records with "kge", "corpus", "labels"
OUT/stats.json                         sentences, spans per label, linked share, match types, settings
```
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from .linking import Linker
from .readers import CorpusFormatError, Sentence, read_corpus, write_docbin, write_gliner_json

SPLITS = ("train", "dev", "test")
_SPLIT_ALIASES = {"dev": ("dev", "devel", "validation")}
_SUFFIXES = (".tsv", ".json", ".jsonl", ".spacy", ".iob", ".conll")


def find_split(folder: Path, split: str) -> Path | None:
    """The file holding one split in a corpus folder (``devel.tsv`` counts as dev), or None."""
    for stem in _SPLIT_ALIASES.get(split, (split,)):
        for suffix in _SUFFIXES:
            path = folder / f"{stem}{suffix}"
            if path.is_file():
                return path
    return None


def resolve_corpus_dir(name_or_dir: str, mirror: str | Path) -> Path:
    """A folder given directly, or a corpus name under the mirror's ``ner/`` folder."""
    path = Path(name_or_dir)
    if path.is_dir():
        return path
    candidate = Path(mirror) / name_or_dir
    if candidate.is_dir():
        return candidate
    raise CorpusFormatError(name_or_dir, None, f"not a folder and not a corpus under {mirror}")


def read_splits(sources: list[str], mirror: str | Path, max_sentences: int | None = None) -> dict[str, list[Sentence]]:
    """Read (and pool) the train/dev/test splits of one or more corpora; a missing split is empty.

    Pooled corpora keep their own ``corpus`` name per sentence, so each record's label set stays
    that corpus's own. ``max_sentences`` caps each split of each corpus (first N, deterministic).
    """
    out: dict[str, list[Sentence]] = {s: [] for s in SPLITS}
    for source in sources:
        folder = resolve_corpus_dir(source, mirror)
        for split in SPLITS:
            path = find_split(folder, split)
            if path is None:
                continue
            sents = read_corpus(path, corpus=folder.name)
            out[split].extend(sents[:max_sentences] if max_sentences else sents)
    return out


def split_stats(sentences: list[Sentence]) -> dict[str, Any]:
    """Counts a reader of the folder wants before training: sizes, label mix, link coverage."""
    spans = Counter(s.label for x in sentences for s in x.spans)
    linked = Counter(s.label for x in sentences for s in x.spans if s.kge)
    matches = Counter(s.match for x in sentences for s in x.spans if s.kge)
    n_spans, n_linked = sum(spans.values()), sum(linked.values())
    return {
        "sentences": len(sentences),
        "spans": n_spans,
        "spans_per_label": dict(sorted(spans.items())),
        "linked": n_linked,
        "linked_share": round(n_linked / n_spans, 4) if n_spans else 0.0,
        "linked_per_label": {k: linked[k] for k in sorted(spans)},
        "linked_share_per_label": {k: round(linked[k] / spans[k], 4) for k in sorted(spans)},
        "links_per_match": dict(sorted(matches.items())),
        "distinct_nodes": len({s.kge for x in sentences for s in x.spans if s.kge}),
    }


def build_corpus(
    splits: dict[str, list[Sentence]],
    out_dir: str | Path,
    linker: Linker | None,
    extra_stats: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Link (when a linker is given) and write every split; returns (and writes) ``stats.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    label_sets: dict[str, set[str]] = {}
    for sents in splits.values():
        for sent in sents:
            label_sets.setdefault(sent.corpus, set()).update(s.label for s in sent.spans)
    sorted_sets = {c: sorted(v) for c, v in label_sets.items()}
    stats: dict[str, Any] = {"corpora": sorted_sets, "splits": {}}
    for split, sents in splits.items():
        if linker is not None:
            linker.link_sentences(sents)
        write_docbin(sents, out / f"{split}.spacy")
        write_gliner_json(sents, out / f"{split}.json", label_sets=sorted_sets, extras=False)
        stats["splits"][split] = split_stats(sents)
    stats.update(extra_stats or {})
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf8")
    return stats
