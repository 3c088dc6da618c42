"""Corpus-scale annotation: ``python -m spacy_kogner annotate MODEL INPUT OUTPUT_DIR``.

The run is split so that each part can be read (and replaced) alone:

* ``inputs.py``: document readers (plain text, JSONL, Parquet, PubTator, BioC XML) that yield
  one record per input position, bad records included, so positions never shift;
* ``shards.py``: the Parquet entity shards, the manifest and the resume rules;
* ``engines.py``: where the pipeline runs (this process, a spawn pool, a Ray actor pool), all
  fed the same fixed chunks so that every engine writes the same bytes;
* ``run.py``: the driver that ties them together and shows progress.

May import every other folder except ``cli`` (it is part of ``workflow``).
"""

from .errors import AnnotateError
from .run import AnnotateSettings, EngineOptions, annotate_corpus

__all__ = ["AnnotateError", "AnnotateSettings", "EngineOptions", "annotate_corpus"]
