"""``evaluate-linking``: the ``kogner_linker`` routes beside a scispaCy-style TF-IDF linker.

Mentions are the gold entities of a corpus split whose label maps to KG kinds. The reference is
the training-time dictionary linker (``configs/linking.cfg``, abbreviations scoped as in
training), hand-checked at 120/120 for diseases and chemicals: a mention it links has that node
as its answer, a mention it leaves alone counts as NIL. That makes (a) "dictionary only" the
reference itself (its accuracy@1 is 1.0 by construction, its real precision is the hand check);
the comparison that means something is between (b) dense, (c) both and (d) TF-IDF, and the
hand-checked sample of links only the dense route made (written beside the table).

Methods: (a) ``dictionary``, (b) ``dense`` (the student's span projection against the projected
teacher rows, NIL below the index's threshold), (c) ``both`` (dictionary, then dense where it
finds nothing), (d) ``tfidf``: character 3-gram TF-IDF cosine over the same node names of the
label's kinds, 5 candidates, NIL below 0.7 (scispaCy's EntityLinker defaults; exact sparse search,
built with scikit-learn).
"""

from __future__ import annotations

import json
import random
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from ..config import load_config, resolve_config_path
from ..data.corpus import find_split, resolve_corpus_dir
from ..data.labels import load_label_table
from ..data.linking import Linker, LinkingSettings, abbreviation_scopes
from ..data.readers import read_corpus
from ..pipeline.linker import ROUTES, KognerLinker, Mention, Resolution

METHODS = ("dictionary", "dense", "both", "tfidf")


class TfidfLinker:
    """scispaCy-style candidate generator: char 3-gram TF-IDF over node names, cosine, top k."""

    def __init__(self, names: list[str], kinds: list[str], ngram: int = 3, threshold: float = 0.7, k: int = 5) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(ngram, ngram), lowercase=True, dtype=np.float32)
        self.matrix = self.vectorizer.fit_transform(names).tocsr()
        self.kinds = np.asarray(kinds)
        self.threshold, self.k = threshold, k

    def nbytes(self) -> int:
        m = self.matrix
        return int(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes)

    def resolve(self, texts: list[str], allowed: list[list[str]], canonical: Any) -> list[Resolution]:
        out = []
        queries = self.vectorizer.transform(texts)
        for b in range(0, len(texts), 512):
            sims = (queries[b : b + 512] @ self.matrix.T).toarray()
            for i, row in enumerate(sims):
                row = np.where(np.isin(self.kinds, allowed[b + i]), row, -1.0)
                top = np.argsort(-row, kind="stable")[: 3 * self.k]
                cands: list[tuple[int, float]] = []
                for r in top:
                    c = canonical(int(r), allowed[b + i])
                    if row[r] >= 0 and c not in [x for x, _ in cands]:
                        cands.append((c, float(row[r])))
                cands = cands[: self.k]
                ok = bool(cands) and cands[0][1] >= self.threshold
                out.append(Resolution(cands[0][0] if ok else None, cands[0][1] if cands else 0.0, "tfidf", cands))
        return out


def corpus_mentions(
    corpus: str, split: str, mirror: str, reference: Linker, labels: dict[str, Any], row_of: dict[str, int]
) -> tuple[list[Mention], list[int | None], list[str]]:
    """Mentions of one split (read alone, with their abbreviation scope), the reference row of
    each (None = NIL) and the sentence each comes from."""
    path = find_split(resolve_corpus_dir(corpus, mirror), split)
    if path is None:
        raise FileNotFoundError(f"{corpus} has no {split} split under {mirror}")
    sentences = read_corpus(path, corpus=Path(corpus).name)
    reference.link_sentences(sentences)
    mentions, truth, context = [], [], []
    for sent, abbrevs in abbreviation_scopes(sentences, reference.settings):
        for span in sent.spans:
            if span.label not in labels:
                continue
            words = list(sent.tokens[span.start : span.end])
            mentions.append(Mention(sent.text_of(span), span.label, words, 0, len(words) - 1, abbrevs))
            truth.append(row_of.get(span.kge) if span.kge else None)
            context.append(" ".join(sent.tokens))
    return mentions, truth, context


def score(results: list[Resolution], truth: list[int | None], seconds: float) -> dict[str, float]:
    """accuracy@1 and recall@5 over reference-linked mentions, NIL precision over predicted NILs."""
    linked = [i for i, t in enumerate(truth) if t is not None]
    acc1 = np.mean([results[i].row == truth[i] for i in linked]) if linked else 0.0
    recall5 = np.mean([truth[i] in [r for r, _ in results[i].candidates[:5]] for i in linked]) if linked else 0.0
    nil = [i for i, r in enumerate(results) if r.row is None]
    nil_precision = np.mean([truth[i] is None for i in nil]) if nil else 0.0
    return {
        "acc1": round(float(acc1), 4),
        "recall5": round(float(recall5), 4),
        "nil_precision": round(float(nil_precision), 4),
        "linked_share": round(1 - len(nil) / max(1, len(results)), 4),
        "mentions": len(results),
        "reference_linked": len(linked),
        "mentions_per_s": round(len(results) / max(seconds, 1e-9), 1),
    }


def evaluate_linking(
    pipeline: str | Path,
    corpora: list[str],
    split: str = "test",
    mirror: str = "../shared/data/ner",
    linking_cfg: str = "configs/linking.cfg",
    labels_cfg: str = "configs/labels.cfg",
    sample: int = 150,
    seed: int = 0,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The table ``{method: {corpus: metrics}}`` (plus sizes) and a seeded sample of dense-only links."""
    import spacy

    nlp = spacy.load(pipeline)
    pipe = next((nlp.get_pipe(n) for n in nlp.pipe_names if isinstance(nlp.get_pipe(n), KognerLinker)), None)
    if pipe is None:
        raise ValueError(f"{pipeline}: no kogner_linker pipe")
    index = pipe._require_index()
    routes = list(pipe.settings.routes)
    pipe.settings.routes = list(ROUTES)  # the span model, checked against the index
    model = pipe._span_model()
    settings = LinkingSettings.from_section(load_config(resolve_config_path(linking_cfg))["linking"])
    reference = Linker(index.node_ids, index.names, index.kinds, load_label_table(labels_cfg), settings)
    row_of = {nid: i for i, nid in enumerate(index.node_ids)}
    tracemalloc.start()  # the TF-IDF build's peak memory, for the table
    tfidf = TfidfLinker(index.names, index.kinds)
    tfidf_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    table: dict[str, Any] = {m: {} for m in METHODS}
    dense_only: list[dict[str, Any]] = []
    for corpus in corpora:
        mentions, truth, context = corpus_mentions(corpus, split, mirror, reference, index.labels, row_of)
        results: dict[str, list[Resolution]] = {}
        for method, method_routes in (("dictionary", ["dictionary"]), ("dense", ["dense"]), ("both", list(ROUTES))):
            pipe.settings.routes = method_routes
            t0 = time.perf_counter()
            results[method] = pipe.resolve(mentions, model if "dense" in method_routes else None)
            table[method][corpus] = score(results[method], truth, time.perf_counter() - t0)
        pipe.settings.routes = routes
        t0 = time.perf_counter()
        allowed = [index.labels[m.label]["kg_kinds"] for m in mentions]
        results["tfidf"] = tfidf.resolve([m.text for m in mentions], allowed, index.canonical)
        table["tfidf"][corpus] = score(results["tfidf"], truth, time.perf_counter() - t0)
        for i, (a, c) in enumerate(zip(results["dictionary"], results["both"], strict=True)):
            if a.row is None and c.row is not None and c.route == "dense":
                dense_only.append({
                    "corpus": corpus, "label": mentions[i].label, "mention": mentions[i].text,
                    "node": index.node_ids[c.row], "name": index.names[c.row], "kind": index.kinds[c.row],
                    "score": round(c.score, 4), "sentence": context[i],
                })  # fmt: skip
    table["sizes"] = {
        "index_nodes": len(index.node_ids),
        "dense_index_bytes": index.nbytes(),
        "tfidf_matrix_bytes": tfidf.nbytes(),
        "tfidf_build_peak_bytes": int(tfidf_peak),
        "threshold": pipe.threshold,
    }
    rng = random.Random(seed)
    picked = rng.sample(dense_only, min(sample, len(dense_only)))
    table["sizes"]["dense_only_links"] = len(dense_only)
    return table, picked


def write_linking(table: dict[str, Any], picked: list[dict[str, Any]], out: Path, note: str = "") -> None:
    """``out``.json (the table), ``out``.md (readable table) and ``out``_dense_sample.tsv (to hand-check)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(table, indent=2) + "\n", encoding="utf8")
    corpora = sorted(table["dictionary"])
    lines = ["| method | " + " | ".join(f"{c} acc@1 | R@5 | NIL prec | mentions/s" for c in corpora) + " |"]
    lines.append("|---|" + "---|---|---|---|" * len(corpora))
    for method in METHODS:
        cells = []
        for c in corpora:
            m = table[method][c]
            pcts = [f"{100 * m[k]:.1f}" for k in ("acc1", "recall5", "nil_precision")]
            cells.append(" | ".join([*pcts, f"{m['mentions_per_s']:.0f}"]))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    sizes = table["sizes"]
    text = "# KG linking at inference\n\n" + (note + "\n\n" if note else "") + "\n".join(lines) + "\n\n"
    text += "\n".join(f"- {k}: {v}" for k, v in sizes.items()) + "\n"
    out.with_suffix(".md").write_text(text, encoding="utf8")
    keys = ["corpus", "label", "mention", "node", "name", "kind", "score", "sentence"]
    with open(str(out) + "_dense_sample.tsv", "w", encoding="utf8") as fh:
        fh.write("\t".join(keys) + "\tcorrect\n")
        for row in picked:
            fh.write("\t".join(str(row[k]).replace("\t", " ") for k in keys) + "\t\n")
