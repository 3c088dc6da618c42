"""The knowledge-graph teacher: KG tables → Z (text) · Z' (Graph Transformer) · Z'' (TransR) → H.

``text`` (Z) · ``gnn`` (Z') · ``transr`` (Z'') · ``store`` (H on disk) · ``stages`` (the
resumable run). The KG itself is read by ``kg/``.

May import: ``kg``, ``pipeline.hub`` (the default encoder), ``config``, ``repro``, ``textio``.
"""
