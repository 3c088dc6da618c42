"""spacy-kogner: knowledge-graph distilled GLiNER span NER as a spaCy pipeline component.

The package is laid out along the data flow; each folder's docstring says what it holds and what
it may import (``tests/test_house.py`` checks the rules and that no import circle exists):

* ``pipeline/``   the ``kogner`` pipe and everything an installed pipeline needs (no training deps)
* ``kg/``         knowledge-graph tables, used by the teacher and the data layer
* ``teacher/``    the KG teacher H = [Z, Z', Z'']
* ``data/``       corpus readers, label tables, span → KG linking, silver and LLM corpora
* ``training/``   the distillation trainer and the spaCy baselines
* ``evaluation/`` metrics, the evaluation harness and reports
* ``workflow/``   assets, profile slices, packaging, benchmarks
* ``cli/``        the one ``python -m spacy_kogner`` app

spaCy finds the ``kogner`` factory through the ``spacy_factories`` entry point, so
``nlp.add_pipe("kogner")`` works without importing this package. Importing it changes no
environment variable: offline defaults apply where a model is loaded (``pipeline/hub.py``).
"""

__version__ = "0.2.0"
