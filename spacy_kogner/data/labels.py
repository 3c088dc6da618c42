"""Label harmonisation: one table maps each corpus label to a prompt and to KG node kinds.

The student is prompted with natural-language labels ("gene or gene product"), while corpora use
their own tags ("GENE", "protein"); the linker needs to know which KG kinds a label may name. The
table lives in ``configs/labels.cfg`` so that adding a corpus or a KG is a config edit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import load_config, read_section, resolve_config_path

DEFAULT_LABELS_CFG = "configs/labels.cfg"


@dataclass(frozen=True)
class LabelInfo:
    """How one corpus label is prompted and which KG node kinds (in preference order) it may link to."""

    prompt: str
    kg_kinds: list[str] = field(default_factory=list)
    # other wordings of the prompt, drawn in training (``prompt_variation``) so that a user's own
    # wording of the label still works
    synonyms: list[str] = field(default_factory=list)
    # labels of one family may name the same span (a BC2GM "GENE" can be a JNLPBA "protein"); a
    # span of one family is a negative for every other family's label (distill cross_negatives).
    # "" = the label is its own family
    family: str = ""


@dataclass(frozen=True)
class KindInfo:
    """How silver spans from one KG node kind are labelled, and which gold label they are scored as."""

    prompt: str
    gold_label: str = ""


def load_label_table(path: str | Path = DEFAULT_LABELS_CFG) -> dict[str, LabelInfo]:
    """Corpus label → ``LabelInfo`` from the ``[labels.*]`` sections of the label config."""
    cfg = load_config(resolve_config_path(path))
    return {
        label: read_section(LabelInfo, section, f"labels.{label}") for label, section in cfg.get("labels", {}).items()
    }


def load_kind_table(path: str | Path = DEFAULT_LABELS_CFG) -> dict[str, KindInfo]:
    """KG node kind → ``KindInfo`` from the ``[kinds.*]`` sections (used by the silver builder)."""
    cfg = load_config(resolve_config_path(path))
    return {kind: read_section(KindInfo, section, f"kinds.{kind}") for kind, section in cfg.get("kinds", {}).items()}


def prompt_variants(label: str, table: dict[str, LabelInfo]) -> list[str]:
    """Every wording training may prompt a label with: its prompt and synonyms, each also with a
    capital first letter (users write "Disease" as often as "disease")."""
    info = table.get(label)
    words = [info.prompt, *info.synonyms] if info is not None else [label]
    return list(dict.fromkeys(w for word in words for w in (word, word[:1].upper() + word[1:])))


def label_family(label: str, table: dict[str, LabelInfo]) -> str:
    """The label's family (``LabelInfo.family``, else the label itself, lower-cased)."""
    info = table.get(label)
    return (info.family if info is not None and info.family else label).lower()


def label_prompt(label: str, table: dict[str, LabelInfo]) -> str:
    """The prompt for a label; a label missing from the table (e.g. a silver prompt) is its own prompt."""
    info = table.get(label)
    return info.prompt if info is not None else label
