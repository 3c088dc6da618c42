"""How often a pooled student names, in one corpus's test text, the KG entities of a type that corpus
does not annotate: KG genes in NCBI-disease test sentences, KG compounds in BC2GM test sentences.

The reference is KG silver (``configs/silver.cfg`` rules, the pooled corpus's blocking kinds), not
gold: no gold says which genes an NCBI-disease sentence mentions. It measures the shortcut that
``[pooled] silver_fill`` is for: a label learnt only in its own corpus's prose is not said in the
other corpora's prose. Each test sentence is prompted with one label (the probed one) and, as the
packaged pipeline is used, with every label of the model at once.

    python scripts/cross_corpus_probe.py MODEL [MODEL ...] --out docs/results/cross_corpus_probe.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import spacy
import torch
from spacy.tokens import Doc

from spacy_kogner.config import load_config
from spacy_kogner.data.pooled import silver_kind_table
from spacy_kogner.data.readers import read_corpus
from spacy_kogner.data.silver import kind_matcher, matched_kinds
from spacy_kogner.kg.graph import load_kg
from spacy_kogner.teacher.store import teacher_kg_section

# (test corpus, KG kind, the pooled model's label for it)
PROBES = [("NCBI-disease", "Gene", "GENE"), ("BC2GM", "Compound", "Chemical")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--sources", default="corpus/full/sources/ner")
    parser.add_argument("--teacher", default="training/full/teacher")
    parser.add_argument("--pooled-config", default="configs/pooled.cfg")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0, help="first N test sentences of each corpus (0 = all)")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kg = load_kg(teacher_kg_section(args.teacher), nodes_only=True)
    blocking = load_config(args.pooled_config)["pooled"]["blocking_kinds"]
    silver, linking = load_config("configs/silver.cfg")["silver"], load_config("configs/linking.cfg")["linking"]
    refs = {}
    for corpus, kind, label in PROBES:
        kinds = matched_kinds([kind], blocking)
        matcher = kind_matcher(kg, kinds, silver_kind_table(kinds, [kind], {kind: label}), silver, linking)
        sents = read_corpus(Path(args.sources) / corpus / "test.tsv")[: args.limit or None]
        print(f"{corpus}: {len(sents)} test sentences, matching KG {kind} names", flush=True)
        found = matcher.annotate(sents)
        refs[corpus] = (sents, [{(s.start, s.end) for s in f.spans if s.label == label} for f in found])
    out = {"reference": "KG silver (configs/silver.cfg), exact spans", "probes": {}}
    for model in args.models:
        nlp = spacy.load(model)
        pipe = nlp.get_pipe("kogner")
        every = list(pipe.cfg["labels"])
        for corpus, _kind, label in PROBES:
            sents, gold = refs[corpus]
            if label not in pipe.labels:
                raise SystemExit(f"{model}: no label {label!r} among its labels; the probe needs a pooled student")
            for offered, labels in (("one", [every[pipe.labels.index(label)]]), ("all", every)):
                pipe.set_labels(labels)
                t0 = time.perf_counter()
                docs = list(nlp.pipe(Doc(nlp.vocab, words=s.tokens) for s in sents))
                pred = [{(e.start, e.end) for e in d.ents if e.label_ == label} for d in docs]
                hit = sum(len(p & g) for p, g in zip(pred, gold, strict=True))
                n_gold, n_pred = sum(map(len, gold)), sum(map(len, pred))
                row = {
                    "sentences": len(sents), "kg_mentions": n_gold, "predicted": n_pred, "kg_found": hit,
                    "kg_recall": round(100 * hit / n_gold, 2) if n_gold else None,
                    "seconds": round(time.perf_counter() - t0, 1),
                }  # fmt: skip
                name = f"{label} in {corpus} ({offered} label{'s' if offered == 'all' else ''})"
                out["probes"].setdefault(model, {})[name] = row
                print(model, label, corpus, offered, row, flush=True)
        pipe.set_labels(every)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf8")


if __name__ == "__main__":
    main()
