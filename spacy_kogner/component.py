"""The ``kogner`` spaCy pipe: GLiNER span NER on spaCy's own tokens.

Design choices (each one closes a gap of gliner-spacy):

* **Token alignment.** The model is fed the doc's own tokens (whitespace tokens left out) and
  every prediction is a ``(first token, last token)`` pair, so spans are built with
  ``doc[start:end]`` and can never fall inside a token. Tokens the encoder's tokenizer would
  drop (zero-width spaces, lone combining marks) are fed as the unknown token so that word
  positions never shift.
* **Long documents.** A doc is cut into overlapping windows of at most ``max_window_tokens``
  words *and* at most the encoder's subword limit; consecutive windows overlap by at least the
  model's maximum span width, so every candidate span lies whole inside some window. A span
  seen in two windows is kept once, with its higher score.
* **Batching.** ``pipe`` collects the windows of a whole batch of docs, sorts them by length
  (so padding stays small) and runs the model on ``batch_size`` windows at a time; decoding is
  vectorised (one ``nonzero`` over the score tensor, no Python loop over candidate spans).
* **Serialisation.** Weights and tokenizer travel with ``to_disk``/``to_bytes``; nothing is
  downloaded when a saved pipeline is loaded.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import srsly
import torch
from spacy.language import Language
from spacy.pipeline.ner import ner_score
from spacy.scorer import Scorer
from spacy.tokens import Doc, Span, SpanGroup
from spacy.training import Example
from spacy.util import filter_spans, minibatch, registry

from .model import ModelLoadError, SpanModel

CFG_FILE = "kogner.json"
MODEL_DIR = "model"
RUNTIME_KEYS = (
    "labels",
    "threshold",
    "flat",
    "spans_key",
    "batch_size",
    "max_window_tokens",
    "stride",
    "multi_label",
    "overwrite_ents",
)

DEFAULT_CONFIG = {
    "model": "default",
    "labels": [],
    "threshold": 0.5,
    "flat": True,
    "spans_key": "kogner",
    "batch_size": 32,
    "max_window_tokens": 256,
    "stride": 224,
    "max_width": 12,
    "device": "cpu",
    "multi_label": False,
    "overwrite_ents": False,
    "quantize": False,
    "scorer": {"@scorers": "kogner.scorer.v1"},
}


class KognerConfigError(ValueError):
    """A component setting that cannot work, with what to do instead."""


@dataclass(frozen=True)
class LabelSpec:
    """One output label and the natural-language prompt the model sees for it."""

    label: str
    prompt: str


def parse_labels(labels: Iterable[Any]) -> list[LabelSpec]:
    """Accept ``"Disease"``, ``{"label": "Disease", "prompt": "disease or syndrome"}`` or
    ``("Disease", "disease or syndrome")``; reject empty or duplicate labels."""
    if isinstance(labels, (str, bytes)):
        raise KognerConfigError(f"labels must be a list, got the string {labels!r}")
    specs: list[LabelSpec] = []
    for item in labels:
        if isinstance(item, str):
            label, prompt = item, item
        elif isinstance(item, dict):
            unknown = set(item) - {"label", "prompt"}
            if "label" not in item or unknown:
                raise KognerConfigError(f"A label dict needs 'label' (and optionally 'prompt'), got {item!r}")
            label = item["label"]
            prompt = item.get("prompt") or label
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            label, prompt = item
        else:
            raise KognerConfigError(f"Cannot read label {item!r}: use a string or {{'label': .., 'prompt': ..}}")
        if not isinstance(label, str) or not isinstance(prompt, str) or not label.strip() or not prompt.strip():
            raise KognerConfigError(f"Empty label or prompt in {item!r}")
        specs.append(LabelSpec(label.strip(), prompt.strip()))
    seen: set[str] = set()
    for spec in specs:
        if spec.label in seen:
            raise KognerConfigError(f"Duplicate label {spec.label!r}")
        seen.add(spec.label)
    if len({s.prompt for s in specs}) != len(specs):
        raise KognerConfigError(f"Two labels share one prompt: {[s.prompt for s in specs]}")
    return specs


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise KognerConfigError(f"Unknown device {device!r}: use 'cpu', 'cuda', 'cuda:N' or 'auto'") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise KognerConfigError(f"device={device!r} but no CUDA device is available; use 'cpu' or 'auto'")
    return dev


@Language.factory(
    "kogner",
    default_config=DEFAULT_CONFIG,
    assigns=["doc.ents", "doc.spans"],
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_kogner(
    nlp: Language,
    name: str,
    model: str,
    labels: list[Any],
    threshold: float,
    flat: bool,
    spans_key: str,
    batch_size: int,
    max_window_tokens: int,
    stride: int,
    max_width: int,
    device: str,
    multi_label: bool,
    overwrite_ents: bool,
    quantize: bool,
    scorer: Callable | None,
) -> KognerComponent:
    """Factory behind ``nlp.add_pipe("kogner", config={...})``; see README for every setting."""
    return KognerComponent(
        nlp.vocab,
        name=name,
        model=model,
        labels=labels,
        threshold=threshold,
        flat=flat,
        spans_key=spans_key,
        batch_size=batch_size,
        max_window_tokens=max_window_tokens,
        stride=stride,
        max_width=max_width,
        device=device,
        multi_label=multi_label,
        overwrite_ents=overwrite_ents,
        quantize=quantize,
        scorer=scorer,
    )


def kogner_score(examples: Iterable[Example], spans_key: str = DEFAULT_CONFIG["spans_key"], **kwargs: Any) -> dict:
    """Entity scores (``ents_p/r/f``, ``ents_per_type``) plus exact-span scores of the span group."""
    examples = list(examples)
    scores = ner_score(examples, **kwargs)
    scores.update(
        Scorer.score_spans(
            examples,
            f"spans_{spans_key}",
            getter=lambda doc, _attr: doc.spans.get(spans_key, []),
            has_annotation=lambda doc: spans_key in doc.spans,
            allow_overlap=True,
        )
    )
    return scores


@registry.scorers("kogner.scorer.v1")
def make_kogner_scorer() -> Callable:
    return kogner_score


class KognerComponent:
    """GLiNER span NER as a spaCy pipe (see the module docstring for the design)."""

    def __init__(
        self,
        vocab: Any,
        name: str = "kogner",
        *,
        model: str = DEFAULT_CONFIG["model"],
        labels: Sequence[Any] = (),
        threshold: float = DEFAULT_CONFIG["threshold"],
        flat: bool = DEFAULT_CONFIG["flat"],
        spans_key: str = DEFAULT_CONFIG["spans_key"],
        batch_size: int = DEFAULT_CONFIG["batch_size"],
        max_window_tokens: int = DEFAULT_CONFIG["max_window_tokens"],
        stride: int = DEFAULT_CONFIG["stride"],
        max_width: int = DEFAULT_CONFIG["max_width"],
        device: str = DEFAULT_CONFIG["device"],
        multi_label: bool = DEFAULT_CONFIG["multi_label"],
        overwrite_ents: bool = DEFAULT_CONFIG["overwrite_ents"],
        quantize: bool = DEFAULT_CONFIG["quantize"],
        scorer: Callable | None = kogner_score,
        span_model: SpanModel | None = None,
    ) -> None:
        self.vocab = vocab
        self.name = name
        self.model_source = model
        self.max_width_cfg = int(max_width)
        self.device = _resolve_device(device)
        if quantize and self.device.type != "cpu":
            raise KognerConfigError(f"quantize=true (int8) runs on CPU only, but device={device!r}")
        self.quantize = bool(quantize)
        self.scorer = scorer
        self._model = span_model
        self.cfg: dict[str, Any] = {}
        self.configure(
            labels=list(labels),
            threshold=threshold,
            flat=flat,
            spans_key=spans_key,
            batch_size=batch_size,
            max_window_tokens=max_window_tokens,
            stride=stride,
            multi_label=multi_label,
            overwrite_ents=overwrite_ents,
        )

    # ------------------------------------------------------------------ configuration
    def configure(self, **settings: Any) -> None:
        """Validate and apply run-time settings (labels, threshold, windows, ...)."""
        unknown = set(settings) - set(RUNTIME_KEYS)
        if unknown:
            raise KognerConfigError(f"Unknown kogner setting(s) {sorted(unknown)}; known: {list(RUNTIME_KEYS)}")
        cfg = {**self.cfg, **settings}
        threshold = cfg["threshold"]
        if not isinstance(threshold, (int, float)) or not 0.0 <= float(threshold) <= 1.0:
            raise KognerConfigError(f"threshold must be in [0, 1], got {threshold!r}")
        for key in ("batch_size", "max_window_tokens", "stride"):
            if not isinstance(cfg[key], int) or cfg[key] < 1:
                raise KognerConfigError(f"{key} must be a positive integer, got {cfg[key]!r}")
        if cfg["stride"] > cfg["max_window_tokens"]:
            raise KognerConfigError(
                f"stride ({cfg['stride']}) must not exceed max_window_tokens ({cfg['max_window_tokens']})"
            )
        if not isinstance(cfg["spans_key"], str) or not cfg["spans_key"]:
            raise KognerConfigError("spans_key must be a non-empty string")
        self.label_specs = parse_labels(cfg["labels"])
        cfg["labels"] = [{"label": s.label, "prompt": s.prompt} for s in self.label_specs]
        cfg["threshold"] = float(threshold)
        self.cfg = cfg
        if self._model is not None:
            self._check_windows()

    def set_labels(self, labels: Sequence[Any]) -> None:
        """Change the label set at run time (zero-shot); saved with the pipeline."""
        self.configure(labels=list(labels))

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(s.label for s in self.label_specs)

    @property
    def model(self) -> SpanModel:
        """The span model, built from ``model`` on first use (``from_disk`` replaces it)."""
        if self._model is None:
            self.model = SpanModel.from_source(self.model_source, max_width=self.max_width_cfg)
        assert self._model is not None
        return self._model

    @model.setter
    def model(self, span_model: SpanModel) -> None:
        self._model = span_model.to(self.device)
        if self.quantize:
            self._model.quantize_encoder()
        self._check_windows()

    def _check_windows(self) -> None:
        model = self._model
        assert model is not None
        window, stride = self.cfg["max_window_tokens"], self.cfg["stride"]
        if window > model.max_words:
            raise KognerConfigError(f"max_window_tokens ({window}) exceeds the model's max_len ({model.max_words})")
        if window - stride < model.max_width:
            raise KognerConfigError(
                f"Windows overlap by {window - stride} tokens, less than the model's max span width "
                f"({model.max_width}): entities at window borders could be lost. Lower stride."
            )

    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]] | None = None,
        *,
        nlp: Language | None = None,
        labels: Sequence[Any] | None = None,
    ) -> None:
        """Set labels (given, or the entity labels found in the examples) and load the model."""
        if labels is not None:
            self.set_labels(labels)
        elif not self.label_specs and get_examples is not None:
            found = sorted({ent.label_ for eg in get_examples() for ent in eg.reference.ents})
            self.set_labels(found)
        _ = self.model

    # ---------------------------------------------------------------------- prediction
    def __call__(self, doc: Doc) -> Doc:
        return self._annotate([doc])[0]

    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 128) -> Iterator[Doc]:
        for docs in minibatch(stream, size=batch_size):
            yield from self._annotate(list(docs))

    def _require_labels(self) -> list[str]:
        if not self.label_specs:
            raise KognerConfigError(
                f"No labels configured for pipe '{self.name}': add it with "
                "config={'labels': ['Disease', ...]} or call nlp.get_pipe(...).set_labels([...])"
            )
        return [s.prompt for s in self.label_specs]

    def _windows(self, doc: Doc, prompt_len: int) -> list[tuple[list[int], list[str]]]:
        """Overlapping windows over the doc's non-space tokens: (token indices, words)."""
        model = self.model
        idx = [t.i for t in doc if not t.is_space]
        if not idx:
            return []
        words = [doc[i].text for i in idx]
        window, stride = self.cfg["max_window_tokens"], self.cfg["stride"]
        overlap = min(window - stride, window - 1)
        budget = max(1, model.max_subwords - prompt_len)
        out: list[tuple[list[int], list[str]]] = []
        start, n = 0, len(words)
        while True:
            end, used = start, 0
            while end < n and end - start < window:
                cost = max(1, model.subword_count(words[end]))
                if end > start and used + cost > budget:
                    break
                used += cost
                end += 1
            out.append((idx[start:end], words[start:end]))
            if end >= n:
                return out
            start = max(start + 1, min(start + stride, end - overlap))

    def _annotate(self, docs: list[Doc]) -> list[Doc]:
        prompts = self._require_labels()
        model = self.model
        prompt_len = model.prompt_subwords(prompts)
        windows: list[tuple[int, list[int], list[str]]] = []
        for d, doc in enumerate(docs):
            windows.extend((d, tok_idx, words) for tok_idx, words in self._windows(doc, prompt_len))
        windows.sort(key=lambda w: sum(model.subword_count(x) for x in w[2]))
        found: list[dict[tuple[int, int, int], float]] = [{} for _ in docs]
        threshold = self.cfg["threshold"]
        bs = self.cfg["batch_size"]
        for b in range(0, len(windows), bs):
            chunk = windows[b : b + bs]
            scores = model.score_windows([w[2] for w in chunk], prompts)
            hits = (scores.probs > threshold) & scores.valid.unsqueeze(-1)
            where = hits.nonzero().tolist()
            values = scores.probs[hits].tolist()
            for (wi, start, width, label), score in zip(where, values, strict=True):
                d, tok_idx, _ = chunk[wi]
                key = (tok_idx[start], tok_idx[start + width], label)
                if score > found[d].get(key, -1.0):
                    found[d][key] = score
        for doc, spans in zip(docs, found, strict=True):
            self._set_annotations(doc, spans)
        return docs

    def _set_annotations(self, doc: Doc, found: dict[tuple[int, int, int], float]) -> None:
        """Write all scored spans to ``doc.spans[spans_key]`` and the flat ones to ``doc.ents``."""
        labels = self.labels
        if not self.cfg["multi_label"]:
            best: dict[tuple[int, int], tuple[int, float]] = {}
            for (s, e, c), score in found.items():
                if (s, e) not in best or score > best[(s, e)][1]:
                    best[(s, e)] = (c, score)
            items = [((s, e, c), score) for (s, e), (c, score) in best.items()]
        else:
            items = list(found.items())
        items.sort(key=lambda kv: (-kv[1], kv[0][0], kv[0][1], kv[0][2]))
        spans = [Span(doc, s, e + 1, label=labels[c]) for (s, e, c), _ in items]
        scores = [float(score) for _, score in items]
        if self.cfg["flat"]:
            taken = [False] * len(doc)
            flat: list[tuple[Span, float]] = []
            for span, score in zip(spans, scores, strict=True):
                if not any(taken[span.start : span.end]):
                    taken[span.start : span.end] = [True] * (span.end - span.start)
                    flat.append((span, score))
            spans = [s for s, _ in flat]
            scores = [sc for _, sc in flat]
        order = sorted(range(len(spans)), key=lambda i: (spans[i].start, spans[i].end, spans[i].label_))
        spans = [spans[i] for i in order]
        scores = [scores[i] for i in order]
        doc.spans[self.cfg["spans_key"]] = SpanGroup(
            doc, name=self.cfg["spans_key"], spans=spans, attrs={"scores": scores}
        )
        candidates = [s for s, sc in sorted(zip(spans, scores, strict=True), key=lambda x: -x[1])]
        if self.cfg["overwrite_ents"]:
            doc.ents = filter_spans(candidates)
        else:
            # Like entity_ruler: existing entities win, new ones only fill free tokens.
            existing = list(doc.ents)
            taken = {i for ent in existing for i in range(ent.start, ent.end)}
            new = [s for s in filter_spans(candidates) if not taken.intersection(range(s.start, s.end))]
            doc.ents = sorted(existing + new, key=lambda s: s.start)

    def score(self, examples: Iterable[Example], **kwargs: Any) -> dict[str, Any]:
        if self.scorer is None:
            return {}
        return self.scorer(examples, spans_key=self.cfg["spans_key"], **kwargs)

    # ------------------------------------------------------------------ serialisation
    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        srsly.write_json(path / CFG_FILE, {k: self.cfg[k] for k in RUNTIME_KEYS})
        self.model.save(path / MODEL_DIR)

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> KognerComponent:
        path = Path(path)
        cfg_file = path / CFG_FILE
        if not path.is_dir():
            raise ModelLoadError(f"kogner component folder not found: {path}")
        if not cfg_file.is_file():
            raise ModelLoadError(f"kogner component folder {path} is missing {CFG_FILE}")
        try:
            cfg = srsly.read_json(cfg_file)
        except ValueError as err:
            raise ModelLoadError(f"{cfg_file} is not valid JSON: {err}") from err
        if not (path / MODEL_DIR).is_dir():
            raise ModelLoadError(f"kogner component folder {path} is missing the model folder '{MODEL_DIR}/'")
        self._model = None
        self.configure(**{k: v for k, v in cfg.items() if k in RUNTIME_KEYS})
        self.model = SpanModel.load(path / MODEL_DIR)
        return self

    def to_bytes(self, *, exclude: Iterable[str] = ()) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            self.to_disk(tmp)
            files = {str(p.relative_to(tmp)): p.read_bytes() for p in Path(tmp).rglob("*") if p.is_file()}
        return srsly.msgpack_dumps(files)

    def from_bytes(self, data: bytes, *, exclude: Iterable[str] = ()) -> KognerComponent:
        files = srsly.msgpack_loads(data)
        tmp = tempfile.mkdtemp()
        try:
            for rel, content in files.items():
                target = Path(tmp) / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
            return self.from_disk(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
