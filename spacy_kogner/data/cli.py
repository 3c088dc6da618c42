"""Data commands: ``convert``, ``link-report``, ``build-corpus``, ``silver``, ``generate``.

Examples (from the repository root; paths default to ``configs/linking.cfg``'s ``[kg]``/``[paths]``)::

    python -m spacy_kogner convert ../shared/data/ner/NCBI-disease/train.tsv corpus/ncbi.json
    python -m spacy_kogner link-report NCBI-disease,BC5CDR,BC2GM,JNLPBA
    python -m spacy_kogner build-corpus NCBI-disease corpus/NCBI-disease
    python -m spacy_kogner build-corpus NCBI-disease,BC5CDR corpus/pooled --max-sentences 500
    python -m spacy_kogner silver NCBI-disease corpus/silver-ncbi --kinds Disease,Symptom,"Side Effect"
    python -m spacy_kogner generate corpus/llm.json --n 100 --base-url http://127.0.0.1:8000/v1

Config values can be overridden spaCy-style after the arguments, e.g.
``--linking.abbreviation_window 20`` or ``--kg.nodes other_nodes.tsv``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from ..config import load_config, parse_overrides
from .labels import DEFAULT_LABELS_CFG, _resolve, load_label_table

OVERRIDES = {"allow_extra_args": True, "ignore_unknown_options": True}


def _linking_config(path: str, ctx: typer.Context) -> Any:
    return load_config(_resolve(path), parse_overrides(ctx.args))


def _load_kg(cfg: Any, nodes: str | None, edges: list[str] | None) -> Any:
    from ..teacher.graph import load_kg

    section = dict(cfg["kg"])
    if nodes:
        section["nodes"] = nodes
    if edges:
        section["edges"] = list(edges)
    return load_kg(section)


def _make_linker(cfg: Any, kg: Any, labels_cfg: str) -> Any:
    from .linking import Linker, LinkingSettings, read_synonyms

    settings = LinkingSettings.from_section(cfg["linking"])
    synonyms = read_synonyms(cfg["paths"]["synonyms"]) if cfg["paths"].get("synonyms") else []
    return Linker.from_kg(kg, load_label_table(labels_cfg), settings, synonyms=synonyms), settings


def convert(
    in_path: Path = typer.Argument(..., help="Corpus file (.tsv/.json/.jsonl/.spacy)"),
    out_path: Path = typer.Argument(..., help="Output file; format from its suffix unless --to"),
    from_format: str = typer.Option("auto", "--from", help="iob|gliner|jsonl|spacy|auto"),
    to_format: str = typer.Option("auto", "--to", help="iob|gliner|jsonl|spacy|auto"),
    corpus: str = typer.Option("", help="Corpus name (default: the input's folder name)"),
) -> None:
    """Convert a corpus between IOB/BIOES TSV, GLiNER JSON, nested JSONL and spaCy DocBin."""
    from .readers import read_corpus, write_corpus

    sents = read_corpus(in_path, from_format, corpus or None)
    write_corpus(sents, out_path, to_format)
    n = sum(len(s.spans) for s in sents)
    typer.echo(f"{in_path} -> {out_path}: {len(sents)} sentences, {n} spans")


def link_report(
    ctx: typer.Context,
    corpora: str = typer.Argument(..., help="Comma-separated corpus names or folders"),
    split: str = typer.Option("train", help="Which split to link"),
    kg_nodes: str = typer.Option(None, help="KG node table (default: [kg] in the config)"),
    kg_edges: list[str] = typer.Option(None, help="KG edge file(s) (repeatable)"),
    linking: str = typer.Option("configs/linking.cfg", help="Linker config"),
    labels: str = typer.Option(DEFAULT_LABELS_CFG, help="Label table"),
    out: Path = typer.Option(None, help="Also write the report (and a JSON summary next to it)"),
) -> None:
    """Link gold spans of each corpus to the KG; print coverage and random links per match type."""
    from .corpus import find_split, resolve_corpus_dir
    from .linking import LinkStats, format_report
    from .readers import read_corpus

    cfg = _linking_config(linking, ctx)
    kg = _load_kg(cfg, kg_nodes, kg_edges)
    linker, settings = _make_linker(cfg, kg, labels)
    stats = LinkStats()
    for name in corpora.split(","):
        folder = resolve_corpus_dir(name, cfg["paths"]["mirror"])
        path = find_split(folder, split)
        if path is None:
            raise typer.BadParameter(f"{folder} has no {split} split")
        linker.link_sentences(read_corpus(path, corpus=folder.name), stats)
    report = format_report(stats, dict(zip(kg.node_ids, kg.names, strict=True)), settings)
    typer.echo(report)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report + "\n", encoding="utf8")
        summary = {
            f"{c}/{lab}": {"mentions": n, "linked": stats.linked[(c, lab)]}
            for (c, lab), n in stats.total.items()
        }
        out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf8")


def build_corpus_cmd(
    ctx: typer.Context,
    sources: str = typer.Argument(..., help="Corpus name(s) under the mirror or folder(s), comma-separated"),
    out_dir: Path = typer.Argument(..., help="Output folder (train/dev/test .spacy + .json, stats.json)"),
    kg_nodes: str = typer.Option(None, help="KG node table (default: [kg] in the config)"),
    kg_edges: list[str] = typer.Option(None, help="KG edge file(s) (repeatable)"),
    linking: str = typer.Option("configs/linking.cfg", help="Linker config"),
    labels: str = typer.Option(DEFAULT_LABELS_CFG, help="Label table"),
    max_sentences: int = typer.Option(0, help="Cap each split of each corpus (0 = all)"),
    no_link: bool = typer.Option(False, help="Write the corpus without KG links"),
) -> None:
    """Write a training-ready folder: splits as DocBin + GLiNER JSON with kge links, and stats.json.

    Several corpora given as ``A,B`` are pooled; every record keeps its own corpus and label set.
    """
    from .corpus import build_corpus, read_splits

    cfg = _linking_config(linking, ctx)
    splits = read_splits(sources.split(","), cfg["paths"]["mirror"], max_sentences or None)
    linker, extra = None, {}
    if not no_link:
        kg = _load_kg(cfg, kg_nodes, kg_edges)
        linker, _ = _make_linker(cfg, kg, labels)
        extra = {"kg": {"nodes": kg_nodes or cfg["kg"]["nodes"], "num_nodes": kg.num_nodes}}
    extra["linking"] = dict(cfg["linking"])
    stats = build_corpus(splits, out_dir, linker, extra)
    for split, s in stats["splits"].items():
        typer.echo(
            f"{split}: {s['sentences']} sentences, {s['spans']} spans, linked {s['linked_share']:.1%} "
            f"{s['linked_share_per_label']}"
        )
    typer.echo(f"Wrote {out_dir}")


def register(app: typer.Typer) -> None:
    """Add the data commands to the package CLI."""
    app.command("convert")(convert)
    app.command("link-report", context_settings=OVERRIDES)(link_report)
    app.command("build-corpus", context_settings=OVERRIDES)(build_corpus_cmd)
