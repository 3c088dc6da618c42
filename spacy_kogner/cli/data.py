"""Data commands: ``convert``, ``link-report``, ``build-corpus``, ``silver``, ``pooled-corpus``,
``kg-names``, ``generate``.

Examples (from the repository root; paths default to ``configs/linking.cfg``'s ``[kg]``/``[paths]``)::

    python -m spacy_kogner convert ../shared/data/ner/NCBI-disease/train.tsv corpus/ncbi.json
    python -m spacy_kogner link-report NCBI-disease,BC5CDR,BC2GM,JNLPBA
    python -m spacy_kogner build-corpus NCBI-disease corpus/NCBI-disease
    python -m spacy_kogner build-corpus NCBI-disease,BC5CDR corpus/pooled --max-sentences 500
    python -m spacy_kogner silver BC5CDR corpus/silver-BC5CDR --kinds "Compound,Disease,Symptom,Side Effect"
    python -m spacy_kogner kg-names Disease corpus/kg-names/Disease.json
    python -m spacy_kogner generate corpus/llm.json --n 100 --base-url http://127.0.0.1:8000/v1

Config values can be overridden spaCy-style after the arguments, e.g.
``--linking.abbreviation_window 20`` or ``--kg.nodes other_nodes.tsv``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from ..config import load_config, resolve_config_path
from ..data.labels import DEFAULT_LABELS_CFG, load_label_table
from .app import OVERRIDES, app, fail, overrides_of


def _split_overrides(ctx: typer.Context, sections: set[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Overrides for a second config (its top sections named) apart from the linking config's."""
    overrides = overrides_of(ctx)
    mine = {k: v for k, v in overrides.items() if k.split(".", 1)[0] in sections}
    return mine, {k: v for k, v in overrides.items() if k not in mine}


def _linking_config(path: str, ctx: typer.Context, overrides: dict[str, Any] | None = None) -> Any:
    return load_config(resolve_config_path(path), overrides_of(ctx) if overrides is None else overrides)


def _load_kg(cfg: Any, nodes: str | None, edges: list[str] | None = None, nodes_only: bool = False) -> Any:
    """The config's ``[kg]`` with the command's node/edge tables; ``nodes_only`` when only names are
    matched (silver, KG names): the edges are not read."""
    from ..kg.graph import load_kg

    section = dict(cfg["kg"])
    if nodes:
        section["nodes"] = nodes
    if edges:
        section["edges"] = list(edges)
    return load_kg(section, nodes_only=nodes_only)


def _make_linker(cfg: Any, kg: Any, labels_cfg: str) -> Any:
    from ..data.linking import Linker, LinkingSettings, read_synonyms

    settings = LinkingSettings.from_section(cfg["linking"])
    synonyms = read_synonyms(cfg["paths"]["synonyms"]) if cfg["paths"].get("synonyms") else []
    return Linker.from_kg(kg, load_label_table(labels_cfg), settings, synonyms=synonyms), settings


@app.command("convert")
def convert(
    in_path: Path = typer.Argument(..., help="Corpus file (.tsv/.json/.jsonl/.spacy)"),
    out_path: Path = typer.Argument(..., help="Output file; format from its suffix unless --to"),
    from_format: str = typer.Option("auto", "--from", help="iob|gliner|jsonl|spacy|auto"),
    to_format: str = typer.Option("auto", "--to", help="iob|gliner|jsonl|spacy|auto"),
    corpus: str = typer.Option("", help="Corpus name (default: the input's folder name)"),
) -> None:
    """Convert a corpus between IOB/BIOES TSV, GLiNER JSON, nested JSONL and spaCy DocBin."""
    from ..data.readers import CorpusFormatError, read_corpus, write_corpus

    try:
        sents = read_corpus(in_path, from_format, corpus or None)
    except CorpusFormatError as err:
        fail(f"convert: {err}")
    if not sents:
        fail(f"convert: {in_path}: no sentences (an empty corpus); nothing written")
    write_corpus(sents, out_path, to_format)
    n = sum(len(s.spans) for s in sents)
    typer.echo(f"{in_path} -> {out_path}: {len(sents)} sentences, {n} spans")


@app.command("link-report", context_settings=OVERRIDES)
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
    from ..data.corpus import find_split, resolve_corpus_dir
    from ..data.linking import LinkStats, format_report
    from ..data.readers import CorpusFormatError, read_corpus

    cfg = _linking_config(linking, ctx)
    kg = _load_kg(cfg, kg_nodes, kg_edges)
    linker, settings = _make_linker(cfg, kg, labels)
    stats = LinkStats()
    for name in corpora.split(","):
        folder = resolve_corpus_dir(name, cfg["paths"]["mirror"])
        path = find_split(folder, split)
        if path is None:
            raise typer.BadParameter(f"{folder} has no {split} split")
        try:
            sentences = read_corpus(path, corpus=folder.name)
        except CorpusFormatError as err:
            fail(f"link-report: {err}")
        if not sentences:
            fail(f"link-report: {path}: no sentences (an empty corpus); a coverage of 0 of 0 would mean nothing")
        linker.link_sentences(sentences, stats)
    report = format_report(stats, dict(zip(kg.node_ids, kg.names, strict=True)), settings)
    typer.echo(report)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report + "\n", encoding="utf8")
        summary = {
            f"{c}/{lab}": {"mentions": n, "linked": stats.linked[(c, lab)]} for (c, lab), n in stats.total.items()
        }
        out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf8")


@app.command("build-corpus", context_settings=OVERRIDES)
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
    from ..data.corpus import build_corpus, read_splits

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


@app.command("silver", context_settings=OVERRIDES)
def silver(
    ctx: typer.Context,
    source: str = typer.Argument(..., help="Corpus name under the mirror or folder: its raw text is matched"),
    out_dir: Path = typer.Argument(..., help="Output folder (<split>.json/.spacy, stats.json)"),
    splits: str = typer.Option("train", help="Comma-separated splits to annotate"),
    kinds: str = typer.Option("", help="Comma-separated KG kinds (default: [silver] kinds)"),
    max_sentences: int = typer.Option(-1, help="Cap per split (default: [silver] max_sentences; 0 = all)"),
    config: str = typer.Option("configs/silver.cfg", help="Silver config"),
    linking: str = typer.Option("configs/linking.cfg", help="Linker config (normalisation, [kg], [paths])"),
    labels: str = typer.Option(DEFAULT_LABELS_CFG, help="Label table ([kinds.*] prompts and gold labels)"),
    kg_nodes: str = typer.Option(None, help="KG node table (default: [kg] in the linking config)"),
    kg_edges: list[str] = typer.Option(None, help="KG edge file(s) (repeatable)"),
) -> None:
    """Silver corpus by KG-name matching on a corpus's raw sentences, scored against its gold spans."""
    from ..data.corpus import find_split, resolve_corpus_dir, split_stats
    from ..data.labels import load_kind_table
    from ..data.linking import LinkingSettings
    from ..data.readers import read_corpus, write_docbin, write_gliner_json
    from ..data.silver import SilverMatcher, SilverSettings, evaluate_silver

    mine, rest = _split_overrides(ctx, {"silver"})
    settings = SilverSettings.from_section(load_config(resolve_config_path(config), mine)["silver"])
    if kinds:
        settings.kinds = [k.strip() for k in kinds.split(",") if k.strip()]
    if max_sentences >= 0:
        settings.max_sentences = max_sentences
    cfg = _linking_config(linking, ctx, rest)
    kg = _load_kg(cfg, kg_nodes, kg_edges)
    kind_table = load_kind_table(labels)
    matcher = SilverMatcher(
        kg.node_ids, kg.names, kg.kinds, kind_table, settings, LinkingSettings.from_section(cfg["linking"])
    )
    folder = resolve_corpus_dir(source, cfg["paths"]["mirror"])
    kind_of = dict(zip(kg.node_ids, kg.kinds, strict=True))
    stats: dict[str, Any] = {"source": folder.name, "settings": dict(settings.__dict__), "splits": {}}
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in splits.split(","):
        path = find_split(folder, split)
        if path is None:
            raise typer.BadParameter(f"{folder} has no {split} split")
        gold = read_corpus(path, corpus=folder.name)
        if settings.max_sentences:
            gold = gold[: settings.max_sentences]
        sents = matcher.annotate(gold, corpus=f"silver-{folder.name}")
        evaluation = evaluate_silver(sents, gold, kind_of, kind_table)  # on every sentence, before dropping
        annotated = len(sents)
        if settings.drop_empty:
            sents = [s for s in sents if s.spans]
        write_docbin(sents, out_dir / f"{split}.spacy")
        write_gliner_json(sents, out_dir / f"{split}.json", extras=False)
        stats["splits"][split] = {
            **split_stats(sents),
            "sentences_annotated": annotated,
            "sentences_dropped_empty": annotated - len(sents),
            "evaluation_vs_gold": evaluation,
        }
        micro = evaluation["micro"]
        typer.echo(
            f"{split}: {len(sents)} of {annotated} sentences kept, {sum(len(s.spans) for s in sents)} silver spans; "
            "vs gold "
            f"P={micro['precision']:.3f} R={micro['recall']:.3f} F1={micro['f1']:.3f}"
        )
        for label, row in evaluation["per_label"].items():
            typer.echo(f"  {label}: P={row['precision']:.3f} R={row['recall']:.3f} ({row['silver_spans']} spans)")
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf8")
    typer.echo(f"Wrote {out_dir}")


# the options of the commands that match KG names (pooled-corpus, kg-names)
SILVER_CONFIG_OPTION = typer.Option("configs/silver.cfg", help="Silver matcher config (names, stop names)")
LINKING_OPTION = typer.Option("configs/linking.cfg", help="Linker config (normalisation, [kg])")
KG_NODES_OPTION = typer.Option(None, help="KG node table (default: [kg] in the linking config)")


def _silver_inputs(
    ctx: typer.Context, config: str, silver_config: str, linking: str
) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """The ``[pooled]`` section, the ``[silver]`` section and the linking config, each with its
    command-line overrides."""
    mine, rest = _split_overrides(ctx, {"pooled", "silver"})
    pooled = load_config(resolve_config_path(config), {k: v for k, v in mine.items() if k.startswith("pooled.")})
    silver = load_config(resolve_config_path(silver_config), {k: v for k, v in mine.items() if k.startswith("silver.")})
    return pooled["pooled"], silver["silver"], _linking_config(linking, ctx, rest)


@app.command("pooled-corpus", context_settings=OVERRIDES)
def pooled_corpus(
    ctx: typer.Context,
    out_dir: Path = typer.Argument(..., help="Output folder (train.json, dev.json, stats.json)"),
    config: str = typer.Option("configs/pooled.cfg", help="Pooled-corpus config ([pooled])"),
    corpora: str = typer.Option("", help="Comma-separated gold corpora (default: [pooled] corpora)"),
    silver_config: str = SILVER_CONFIG_OPTION,
    linking: str = LINKING_OPTION,
    labels: str = typer.Option(DEFAULT_LABELS_CFG, help="Label table (gold labels' prompts)"),
    kg_nodes: str = KG_NODES_OPTION,
) -> None:
    """Pool gold corpora (each keeps its label set) with KG silver for the kinds no gold label prompts."""
    from ..data.pooled import PooledSettings, build_pooled

    pooled, silver, cfg = _silver_inputs(ctx, config, silver_config, linking)
    settings = PooledSettings.from_section(pooled)
    if corpora:
        settings.corpora = [c.strip() for c in corpora.split(",") if c.strip()]
    kg = _load_kg(cfg, kg_nodes, nodes_only=True) if settings.silver else None
    try:
        stats = build_pooled(settings, out_dir, kg, silver, cfg["linking"], load_label_table(labels))
    except FileNotFoundError as err:
        fail(str(err))
    typer.echo(f"silver kinds: {', '.join(stats['silver_kinds']) or 'none'}; silver spans {stats['silver_spans']}")
    typer.echo(f"Wrote {out_dir}: {stats['sentences']['train']} train, {stats['sentences']['dev']} dev sentences")


@app.command("kg-names", context_settings=OVERRIDES)
def kg_names(
    ctx: typer.Context,
    label: str = typer.Argument(
        ..., help="Corpus label whose KG kinds (labels.cfg kg_kinds) name the spans, e.g. Disease"
    ),
    out: Path = typer.Argument(..., help="Output GLiNER JSON (statistics in OUT.stats.json)"),
    per_kind: int = typer.Option(0, help="Names per kind (0 = every name the matcher keeps)"),
    per_sentence: int = typer.Option(10, help="Names listed per sentence"),
    seed: int = typer.Option(42, help="Sampling and order seed"),
    holdout: float = typer.Option(
        0.0, help="Fraction of each kind's nodes (drawn with the seed) whose names are left out"
    ),
    holdout_from: Path = typer.Option(
        None, help="GLiNER JSON (e.g. a dev split): draw the held-out nodes among those its spans link to"
    ),
    config: str = typer.Option("configs/pooled.cfg", help="Config whose [pooled] blocking_kinds apply"),
    silver_config: str = SILVER_CONFIG_OPTION,
    linking: str = LINKING_OPTION,
    labels: str = typer.Option(DEFAULT_LABELS_CFG, help="Label table (the label's KG kinds)"),
    kg_nodes: str = KG_NODES_OPTION,
) -> None:
    """Training sentences listing the KG's node names of a label's kinds, each span linked to its node."""
    from ..config import ConfigError
    from ..data.kg_names import build_label_names

    pooled, silver, cfg = _silver_inputs(ctx, config, silver_config, linking)
    kg = _load_kg(cfg, kg_nodes, nodes_only=True)
    try:
        pool = None
        if holdout_from is not None:
            from ..data.readers import CorpusFormatError, read_gliner_records

            try:
                pool = {sp.kge for _, sent in read_gliner_records(holdout_from) for sp in sent.spans if sp.kge}
            except (CorpusFormatError, OSError) as err:
                fail(f"--holdout-from {holdout_from}: {err}")
        stats = build_label_names(
            label, out, kg, load_label_table(labels), silver, cfg["linking"], pooled["blocking_kinds"],
            per_kind or len(kg.node_ids), per_sentence, seed, holdout, pool,
        )  # fmt: skip
    except ConfigError as err:
        fail(str(err))
    typer.echo(f"Wrote {out}: {stats['sentences']} sentences, names by kind {stats['by_kind']}")


@app.command("generate", context_settings=OVERRIDES)
def generate(
    ctx: typer.Context,
    out: Path = typer.Argument(..., help="Output GLiNER JSON file (progress kept in OUT.parts.jsonl)"),
    n: int = typer.Option(0, help="Edges to sample (default: [generate] n)"),
    seed: int = typer.Option(-1, help="Sampling seed (default: [generate] seed)"),
    base_url: str = typer.Option("", help="OpenAI-compatible base URL, e.g. https://api.openai.com/v1"),
    model: str = typer.Option("", help="Model name"),
    concurrency: int = typer.Option(0, help="Requests in flight (default: [generate] concurrency)"),
    config: str = typer.Option("configs/generate.cfg", help="Generation config (prompt, retries, ...)"),
    linking: str = typer.Option("configs/linking.cfg", help="Config holding the [kg] section"),
    labels: str = typer.Option(DEFAULT_LABELS_CFG, help="Label table ([kinds.*] prompts)"),
    kg_nodes: str = typer.Option(None, help="KG node table (default: [kg] in the linking config)"),
    kg_edges: list[str] = typer.Option(None, help="KG edge file(s) to sample from (repeatable)"),
) -> None:
    """Ask an LLM for one sentence per sampled KG edge (paper App. B); resumable, writes GLiNER JSON.

    The API key is read from the environment variable named by ``[generate] api_key_env``
    (OPENAI_API_KEY by default), never from the command line, where the process list shows it."""
    from ..data.generate import GenerateError, GenerateSettings
    from ..data.generate import generate as run_generate
    from ..data.labels import load_kind_table

    mine, rest = _split_overrides(ctx, {"generate"})
    settings = GenerateSettings.from_section(load_config(resolve_config_path(config), mine)["generate"])
    for name, value in (("n", n), ("base_url", base_url), ("model", model), ("concurrency", concurrency)):
        if value:
            setattr(settings, name, value)
    if seed >= 0:
        settings.seed = seed
    kg = _load_kg(_linking_config(linking, ctx, rest), kg_nodes, kg_edges)
    try:
        stats = run_generate(kg, out, settings, load_kind_table(labels), log=typer.echo)
    except GenerateError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    typer.echo(f"Wrote {out}: {stats}")
