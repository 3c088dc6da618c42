"""Knowledge-graph tables: nodes (id, name, kind) and typed edges in a fixed row order.

Used by the teacher (``teacher/``) and the data layer (``data/``: linking, silver corpora).
May import: ``config``, ``repro``, ``textio``; nothing else from this package.
"""
