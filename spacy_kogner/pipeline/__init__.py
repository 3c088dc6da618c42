"""What an installed ``kogner`` pipeline needs, and nothing more.

``component`` (the ``kogner`` Pipe and its settings) · ``span_model`` (the GLiNER span model and
its factorised head) · ``windows`` (long documents) · ``prompts`` (labels and prompts) ·
``scorer`` · ``hub`` (offline-first model sources) · ``gliner_compat`` (the only module that
touches GLiNER internals) · ``linker`` (the ``kogner_linker`` pipe) with ``dictionary`` (the name
rules, shared with training-time linking) and ``kb_index`` (the dense route's node index).

May import: spaCy, torch, GLiNER and the standard library; nothing else from this package, so a
packaged pipeline installs without the training stack (PyKEEN, PyG, scikit-learn, matplotlib).
"""
