"""The data layer: corpus readers/writers, label tables, span → KG linking, silver and LLM corpora.

``readers`` (every corpus format ↔ ``Sentence``) · ``labels`` (label → prompt and KG kinds) ·
``linking`` (span → KG node) · ``corpus`` (training-ready folders) · ``silver`` (KG-name distant
supervision) · ``generate`` (the paper's LLM route).

May import: ``kg``, ``pipeline.gliner_compat`` (GLiNER's word splitter), ``config``, ``repro``,
``textio``.
"""

from .readers import CorpusFormatError, Sentence, Span, read_corpus, write_corpus

__all__ = ["CorpusFormatError", "Sentence", "Span", "read_corpus", "write_corpus"]
