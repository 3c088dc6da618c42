"""The data layer: corpus readers/writers, label harmonisation, span → KG linking, silver corpora.

Every training and evaluation run reads its data through ``readers.read_corpus`` and the
training-ready folders written by ``python -m spacy_kogner build-corpus``.
"""

from .readers import CorpusFormatError, Sentence, Span, read_corpus, write_corpus

__all__ = ["CorpusFormatError", "Sentence", "Span", "read_corpus", "write_corpus"]
