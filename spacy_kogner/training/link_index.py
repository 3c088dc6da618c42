"""Build a linker index: fit MLP_span / MLP_dist on dictionary-linked spans, project the KG.

The dense route of ``kogner_linker`` maps a span vector of the (frozen) student and a teacher row
of H = [Z, Z', Z''] into one shared space. This module fits the two projections on pairs we trust:

* gold training mentions that the dictionary linked (hand-checked at 98-100 % for diseases and
  chemicals), read in their sentence;
* every KG node's own name read as a one-span sentence under its kind's prompt, so that nodes no
  training mention names still get a place in the space (NCBI-disease names ~100 distinct nodes).

The loss is a softmax over the node's kind group (the positive against ``negatives`` sampled
nodes of the allowed kinds, InfoNCE with ``temperature``): an MSE to teacher rows has a collapsed
minimum and in-batch contrast sees too few nodes. H's columns are standardised first, so the
text block Z (384-d, small values) and the graph blocks (58-d each) enter on one scale.

The span space is whitened on the build's spans (``SpanProjector``): the student's span vectors
are so anisotropic that a float16 index loses their ranking otherwise.

Spans are read on their own (the mention's words as the whole window, its label's prompt in
front), the way node names are: in a sentence, GLiNER's span vectors say what *type* a span is
and little about *which* concept it is (nearest node name by cosine, BC5CDR dev, BC5CDR student,
no projection: 1.9 % top-1 in the sentence, 79 % read alone); ``context = "sentence"`` keeps the
in-sentence reading for comparison.

The NIL threshold is the smallest top-1 cosine at which the dev mentions that the dictionary
linked are linked right by the dense route alone at ``target_precision`` or better.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..config import Section, load_config, read_section, require, resolve_config_path
from ..data.corpus import find_split, resolve_corpus_dir
from ..data.labels import load_label_table
from ..data.linking import Linker, LinkingSettings, read_synonyms
from ..data.readers import read_corpus
from ..pipeline.component import KognerComponent
from ..pipeline.kb_index import LinkIndex, SpanProjector, preferred_copies, projection_mlp
from ..teacher.store import HStore

_WORDS = re.compile(r"\w+|[^\w\s]")


@dataclass
class IndexBuildSettings(Section):
    """The ``[build]`` section of ``configs/link_index.cfg``."""

    SECTION = "build"
    DEFAULT_CONFIG = "configs/link_index.cfg"

    corpora: list[str]
    labels: list[str]
    names: bool
    hidden: int
    dropout: float
    steps: int
    batch_size: int
    negatives: int
    lr: float
    weight_decay: float
    temperature: float
    seed: int
    encode_batch_size: int
    train_span: bool
    whiten_eps: float
    max_pairs_per_node: int
    context: str
    target_precision: float
    max_name_words: int
    num_threads: int

    def __post_init__(self) -> None:
        require(self.steps >= 0, "steps must be >= 0 (0 = no fit: the student's own readings)")
        require(self.batch_size >= 1 and self.negatives >= 1, "batch_size and negatives must be >= 1")
        require(self.names or self.steps > 0, "names = false needs steps > 0 (nodes need a place in the space)")
        require(0.0 < self.target_precision <= 1.0, "target_precision must be in (0, 1]")
        require(self.temperature > 0, "temperature must be > 0")
        require(
            self.context in ("mention", "sentence"), f"context must be 'mention' or 'sentence', got {self.context!r}"
        )


@dataclass
class Pair:
    """One (span in context, node row) training or dev pair; ``row`` None = the dictionary found nothing."""

    words: list[str]
    start: int
    end: int  # inclusive
    prompt: str
    label: str
    row: int | None
    text: str = ""
    source: str = "mention"  # "mention", "abbreviation" (linked through a definition) or "name"


def name_words(name: str) -> list[str]:
    """A node name split like corpus tokens ("Huntington's disease" → Huntington ' s disease)."""
    return _WORDS.findall(name)


def mention_pairs(
    corpus: str, split: str, mirror: str, linker: Linker, store: HStore, labels: dict[str, Any]
) -> list[Pair]:
    """Gold mentions of one split whose label maps to KG kinds, with the dictionary's node (or None)."""
    path = find_split(resolve_corpus_dir(corpus, mirror), split)
    if path is None:
        raise FileNotFoundError(f"{corpus} has no {split} split under {mirror}")
    sentences = read_corpus(path, corpus=Path(corpus).name)
    linker.link_sentences(sentences)
    out = []
    for sent in sentences:
        for span in sent.spans:
            if span.label not in labels:
                continue
            row = store.row_of(span.kge) if span.kge else None
            out.append(
                Pair(
                    list(sent.tokens),
                    span.start,
                    span.end - 1,
                    labels[span.label]["prompt"],
                    span.label,
                    row,
                    sent.text_of(span),
                    "abbreviation" if span.match == "abbreviation" else "mention",
                )
            )
    return out


def node_name_pairs(store: HStore, kinds: dict[str, str], label_of_kind: dict[str, str], max_words: int) -> list[Pair]:
    """Each node of the index kinds as its own name, read under its kind's prompt."""
    out = []
    for row, (name, kind) in enumerate(zip(store.names, store.kinds, strict=True)):
        if kind not in kinds:
            continue
        words = name_words(name)
        if not words or len(words) > max_words:
            continue
        out.append(Pair(words, 0, len(words) - 1, kinds[kind], label_of_kind[kind], row, name, "name"))
    return out


def encode(model: Any, pairs: list[Pair], batch_size: int, desc: str) -> torch.Tensor:
    """Span vectors of the pairs (frozen student), batched by prompt and length."""
    out = torch.zeros((len(pairs), model.hidden_size))
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        groups.setdefault(p.prompt, []).append(i)
    with tqdm(total=len(pairs), desc=desc, unit="span") as bar:
        for prompt, idx in groups.items():
            idx.sort(key=lambda i: len(pairs[i].words))
            for b in range(0, len(idx), batch_size):
                chunk = idx[b : b + batch_size]
                words = [pairs[i].words[: model.max_words] for i in chunk]
                spans = [(k, pairs[i].start, pairs[i].end) for k, i in enumerate(chunk)]
                out[chunk] = model.span_vectors(words, [prompt], spans)
                bar.update(len(chunk))
    return out


def read_alone(pair: Pair) -> Pair:
    """The pair with its mention's words as the whole window (how names are read)."""
    words = pair.words[pair.start : pair.end + 1]
    return Pair(words, 0, len(words) - 1, pair.prompt, pair.label, pair.row, pair.text, pair.source)


def usable(pair: Pair, max_width: int, max_words: int) -> bool:
    """A span the model scores: narrower than ``max_width`` words and inside the window it reads."""
    return pair.end - pair.start < max_width and pair.end < max_words


def block_scales(h: np.ndarray, blocks: dict[str, list[int]]) -> np.ndarray:
    """Per-column divisor: each block of H (Z, Z', Z'') scaled by its own overall deviation.

    Per-block, not per-column: H has constant columns (a z-score would divide by ~0) and the
    blocks differ in scale by an order of magnitude."""
    scale = np.ones(h.shape[1], dtype=np.float32)
    spans = list(blocks.values()) or [[0, h.shape[1]]]
    for start, stop in spans:
        block = h[:, start:stop]
        scale[start:stop] = max(float((block - block.mean(0)).std()), 1e-6)
    return scale


class Heads(torch.nn.Module):
    """MLP_span and MLP_dist, with H's column standardisation fixed at build time. Both start at
    the student's space: MLP_span is residual with a zero last layer, MLP_dist's output starts at 0."""

    def __init__(self, span_dim: int, h: np.ndarray, s: IndexBuildSettings, blocks: dict[str, list[int]]) -> None:
        super().__init__()
        self.span = SpanProjector(span_dim, s.hidden, s.dropout)
        self.dist = projection_mlp(h.shape[1], s.hidden, span_dim, s.dropout)
        torch.nn.init.zeros_(self.dist[3].weight)  # starts at the student's own name matching
        torch.nn.init.zeros_(self.dist[3].bias)
        self.register_buffer("mean", torch.from_numpy(h.mean(0)).float())
        self.register_buffer("std", torch.from_numpy(block_scales(h, blocks)).float())

    def teacher(self, h: torch.Tensor, names: torch.Tensor) -> torch.Tensor:
        """A node's index vector: its projected teacher row plus its own name read by the student
        (through MLP_span, the mentions' projection): the name carries the identity that the
        frozen student can match, the teacher row the graph's position and kind."""
        return torch.nn.functional.normalize(self.dist((h - self.mean) / self.std) + self.span(names), dim=-1)

    def student(self, v: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.span(v), dim=-1)


def fit_heads(
    vectors: torch.Tensor,
    rows: np.ndarray,
    groups: np.ndarray,
    h: np.ndarray,
    names: torch.Tensor,
    scope_groups: np.ndarray,
    s: IndexBuildSettings,
    duplicate: np.ndarray | None = None,
    blocks: dict[str, list[int]] | None = None,
) -> tuple[Heads, list[float]]:
    """InfoNCE of each span against its node and ``negatives`` sampled nodes of its kind group.

    ``rows``/``groups``: the pairs' node (index into ``h``) and kind group; ``scope_groups``: each
    node's kind group; ``duplicate``: nodes whose name a node of a preferred kind also has
    (Hetionet's "Hypotension" is a Symptom and a Side Effect): left out of the softmax, since the
    frozen student reads both names the same and the search keeps the preferred copy anyway."""
    torch.manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    heads = Heads(vectors.size(1), h, s, blocks or {})
    heads.span.fit_whitening(vectors, s.whiten_eps)
    if s.steps == 0:
        heads.eval()
        return heads, []
    heads.span.requires_grad_(s.train_span)
    opt = torch.optim.AdamW([p for p in heads.parameters() if p.requires_grad], lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=s.steps, pct_start=0.1)
    h_t = torch.from_numpy(h).float()
    scope_groups_t = torch.from_numpy(scope_groups)
    losses = []
    heads.train()
    for _ in tqdm(range(s.steps), desc="fit MLP_span/MLP_dist", unit="step"):
        batch = rng.choice(len(rows), size=min(s.batch_size, len(rows)), replace=False)
        pos = rows[batch]
        cand = np.unique(np.concatenate([pos, rng.choice(len(h), size=min(s.negatives, len(h)), replace=False)]))
        target = torch.from_numpy(np.searchsorted(cand, pos))
        q = heads.student(vectors[batch])
        t = heads.teacher(h_t[cand], names[cand])
        logits = q @ t.T / s.temperature
        same = torch.from_numpy(groups[batch]).unsqueeze(1) == scope_groups_t[cand].unsqueeze(0)
        if duplicate is not None:  # a same-name copy of a preferred node is no negative (nor a target)
            same &= ~torch.from_numpy(duplicate[cand]).unsqueeze(0)
        logits = logits.masked_fill(~same, float("-inf"))
        loss = torch.nn.functional.cross_entropy(logits, target)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the projection fit diverged at step {len(losses)}; lower build.lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(heads.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    heads.eval()
    return heads, losses


def cap_per_node(pairs: list[Pair], cap: int, seed: int) -> list[Pair]:
    """At most ``cap`` pairs per node (seeded choice; 0 = all): frequent nodes otherwise become hubs."""
    if cap <= 0:
        return pairs
    count: dict[int | None, int] = {}
    keep = []
    for i in np.random.default_rng(seed).permutation(len(pairs)):
        count[pairs[i].row] = count.get(pairs[i].row, 0) + 1
        if count[pairs[i].row] <= cap:
            keep.append(int(i))
    return [pairs[i] for i in sorted(keep)]


def duplicates(names: list[str], kinds: list[str], groups: np.ndarray, kind_order: dict[str, int]) -> np.ndarray:
    """True for a node whose name (case-folded) a node of a preferred kind in its group also has
    (the nodes ``LinkIndex.search`` never returns)."""
    out = np.zeros(len(names), dtype=bool)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        preferred = preferred_copies([names[i] for i in idx], [kinds[i] for i in idx], kind_order)
        out[idx] = preferred != np.arange(len(idx))
    return out


def retrieval(scores_top: np.ndarray, rows_top: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """top-1 / top-10 accuracy of the true row among ranked rows."""
    if len(truth) == 0:
        return {"top1": 0.0, "top10": 0.0, "n": 0}
    top1 = float(np.mean(rows_top[:, 0] == truth))
    top10 = float(np.mean([t in r[:10] for t, r in zip(truth, rows_top, strict=True)]))
    return {"top1": top1, "top10": top10, "n": int(len(truth))}


def tune_threshold(scores: np.ndarray, correct: np.ndarray, target: float) -> tuple[float, dict[str, float]]:
    """Smallest cosine t with precision(score ≥ t) ≥ target on dictionary-linked dev mentions."""
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(correct[order])
    precision = hits / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(precision >= target)
    if len(ok) == 0:
        return float(scores.max() + 1e-3 if len(scores) else 1.0), {"precision": 0.0, "coverage": 0.0}
    k = int(ok.max())
    return float(scores[order[k]]), {"precision": float(precision[k]), "coverage": float((k + 1) / len(order))}


def build_link_index(
    config_path: str | Path,
    output: str | Path,
    overrides: dict[str, Any] | None = None,
    pipeline_out: str | Path | None = None,
) -> dict:
    """Fit the projections, project the KG, tune the NIL threshold; write the index and metrics,
    and with ``pipeline_out`` also the config's pipeline with a ``kogner_linker`` pipe."""
    import spacy

    cfg = load_config(resolve_config_path(config_path), overrides)
    s = read_section(IndexBuildSettings, cfg["build"], "build")
    paths = cfg["paths"]
    if s.num_threads:
        torch.set_num_threads(s.num_threads)
    t0 = time.perf_counter()
    nlp = spacy.load(paths["pipeline"])
    pipe = next((p for _, p in nlp.pipeline if isinstance(p, KognerComponent)), None)
    if pipe is None:
        raise ValueError(f"{paths['pipeline']}: no kogner pipe to read span vectors from")
    model = pipe.ensure_model()
    store = HStore.load(paths["teacher"])
    table = load_label_table(paths["labels"])
    names = s.labels or list(pipe.labels)
    labels = {
        lab: {"prompt": table[lab].prompt, "kg_kinds": list(table[lab].kg_kinds)}
        for lab in names
        if lab in table and table[lab].kg_kinds
    }
    if not labels:
        raise ValueError(f"none of the labels {names} maps to a KG kind in {paths['labels']}")
    kind_group: dict[str, int] = {}
    label_of_kind: dict[str, str] = {}
    groups_of_label: dict[tuple[str, ...], int] = {}
    for lab, info in labels.items():
        key = tuple(info["kg_kinds"])
        g = groups_of_label.setdefault(key, len(groups_of_label))
        for kind in key:
            kind_group.setdefault(kind, g)
            label_of_kind.setdefault(kind, lab)
    link_cfg = load_config(resolve_config_path(paths["linking"]))
    link_settings = LinkingSettings.from_section(link_cfg["linking"])
    synonyms = read_synonyms(paths["synonyms"]) if paths.get("synonyms") else []
    linker = Linker(store.node_ids, store.names, store.kinds, table, link_settings, synonyms=synonyms)

    scope = np.array([k in kind_group for k in store.kinds])
    scope_rows = np.flatnonzero(scope)
    local = -np.ones(len(store.kinds), dtype=np.int64)
    local[scope_rows] = np.arange(len(scope_rows))
    h = np.asarray(store.H[scope_rows], dtype=np.float32)
    scope_groups = np.array([kind_group[store.kinds[r]] for r in scope_rows])

    def group_of(p: Pair) -> int:
        return groups_of_label[tuple(labels[p.label]["kg_kinds"])]

    train: list[Pair] = []
    dev: list[Pair] = []
    for corpus in s.corpora:
        train += mention_pairs(corpus, "train", paths["mirror"], linker, store, labels)
        dev += mention_pairs(corpus, "dev", paths["mirror"], linker, store, labels)
    # a mention linked through an in-document definition ("METH") does not name its node: no pair
    train = [
        p
        for p in train
        if p.row is not None
        and local[p.row] >= 0
        and p.source == "mention"
        and usable(p, model.max_width, model.max_words)
    ]
    train = cap_per_node(train, s.max_pairs_per_node, s.seed)  # also sets the centre when steps = 0
    dev = [p for p in dev if usable(p, model.max_width, model.max_words) and (p.row is None or local[p.row] >= 0)]
    if s.context == "mention":
        train, dev = [read_alone(p) for p in train], [read_alone(p) for p in dev]
    if s.names:
        train += node_name_pairs(
            store,
            {k: labels[label_of_kind[k]]["prompt"] for k in kind_group},  # the first label linking to it
            label_of_kind,
            min(s.max_name_words, model.max_width),
        )
    vectors = encode(model, train, s.encode_batch_size, "span vectors (train)")
    rows = np.array([local[p.row] for p in train])  # type: ignore[index]
    groups = np.array([group_of(p) for p in train])
    names = torch.zeros((len(scope_rows), vectors.size(1)))  # each node's name read by the student
    for i, p in enumerate(train):
        if p.source == "name":
            names[rows[i]] = vectors[i]
    kind_order: dict[str, int] = {}
    for info in labels.values():
        for i, kind in enumerate(info["kg_kinds"]):
            kind_order.setdefault(kind, i)
    duplicate = duplicates(
        [store.names[r] for r in scope_rows], [store.kinds[r] for r in scope_rows], scope_groups, kind_order
    )
    keep = ~duplicate[rows]
    heads, losses = fit_heads(
        vectors[torch.from_numpy(keep)], rows[keep], groups[keep], h, names, scope_groups, s, duplicate,
        store.meta.get("blocks", {}),
    )  # fmt: skip

    with torch.inference_mode():
        h_t = torch.from_numpy(h)
        node_vectors = torch.cat(
            [heads.teacher(h_t[b : b + 4096], names[b : b + 4096]) for b in range(0, len(h), 4096)]
        ).numpy()
    index = LinkIndex(
        [store.node_ids[r] for r in scope_rows],
        [store.names[r] for r in scope_rows],
        [store.kinds[r] for r in scope_rows],
        node_vectors.astype(np.float16),
        heads.span,
        {"student": model.fingerprint(), "labels": labels, "dictionary": link_settings.to_dict(), "context": s.context},
        synonyms,
    )
    dev_vectors = encode(model, dev, s.encode_batch_size, "span vectors (dev)")
    queries = index.project(dev_vectors)
    top_rows = np.zeros((len(dev), 10), dtype=np.int64)
    top_scores = np.zeros((len(dev), 10), dtype=np.float32)
    for lab, info in labels.items():
        js = [j for j, p in enumerate(dev) if p.label == lab]
        if js:
            r, sc = index.search(queries[js], info["kg_kinds"], 10)
            top_rows[js, : r.shape[1]], top_scores[js, : sc.shape[1]] = r, sc
    linked = np.array([p.row is not None for p in dev])
    truth = np.array([local[p.row] if p.row is not None else -1 for p in dev])
    correct = top_rows[linked, 0] == truth[linked]
    threshold, at = tune_threshold(top_scores[linked, 0], correct, s.target_precision)
    index.meta["threshold"] = threshold
    metrics = {
        "pipeline": str(paths["pipeline"]),
        "teacher": str(paths["teacher"]),
        "student": index.student,
        "nodes": len(scope_rows),
        "kinds": sorted(kind_group),
        "train_pairs": {
            "mentions": int(sum(p.source == "mention" for p in train)),
            "names": int(sum(p.source == "name" for p in train)),
        },
        "dev_mentions": {"linked": int(linked.sum()), "nil": int((~linked).sum())},
        "dev_retrieval": retrieval(top_scores[linked], top_rows[linked], truth[linked]),
        "threshold": threshold,
        "threshold_at": at,
        "dev_dense_only_above_threshold": int(((~linked) & (top_scores[:, 0] >= threshold)).sum()),
        "loss_first_last": [losses[0], float(np.mean(losses[-20:]))] if losses else [],
        "index_bytes": index.nbytes(),
        "seconds": round(time.perf_counter() - t0, 1),
        "settings": dict(vars(s)),
    }
    index.meta["metrics"] = metrics
    out = Path(output)
    index.save(out)
    (out / "build_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf8")
    if pipeline_out is not None:
        nlp.add_pipe("kogner_linker", config={"index": str(out)})
        nlp.to_disk(pipeline_out)
    return metrics
