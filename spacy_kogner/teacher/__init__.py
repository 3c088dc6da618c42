"""The knowledge-graph teacher: KG tables → Z (text) · Z' (Graph Transformer) · Z'' (TransR) → H.

Modules are named after what they hold: ``graph`` (the KG), ``text`` (Z), ``gnn`` (Z'),
``transr`` (Z''), ``store`` (H on disk), ``pipeline`` (the resumable stages), ``cli`` (commands).
"""
