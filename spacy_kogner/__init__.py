"""spacy-kogner: knowledge-graph distilled GLiNER span NER as a spaCy pipeline component.

Importing the package registers the ``kogner`` factory (spaCy also finds it through the
``spacy_factories`` entry point, so ``nlp.add_pipe("kogner")`` works without this import).
"""

from .offline import set_offline_defaults

set_offline_defaults()

__version__ = "0.1.0"
