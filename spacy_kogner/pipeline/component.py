"""The ``kogner`` spaCy pipe: GLiNER span NER on spaCy's own tokens.

Design choices (each one closes a gap of gliner-spacy):

* **Token alignment.** The model is fed the doc's own tokens (whitespace tokens left out) and
  every prediction is a ``(first token, last token)`` pair, so spans are built with
  ``doc[start:end]`` and can never fall inside a token. Tokens the encoder's tokenizer would
  drop (zero-width spaces, lone combining marks) are fed as the unknown token so that word
  positions never shift.
* **Long documents.** Overlapping windows (``windows.py``); a span seen in two windows is kept
  once, with its higher score.
* **Batching.** ``pipe`` collects the windows of a whole batch of docs, sorts them by length
  (so padding stays small) and runs the model on ``batch_size`` windows at a time; decoding is
  vectorised (one ``nonzero`` over the score tensor, no Python loop over candidate spans).
* **Flat output by score.** ``doc.ents`` (and the span group when ``flat``) keep the
  highest-scoring non-overlapping spans, never simply the longest.
* **A real spaCy ``Pipe``.** ``nlp.set_error_handler`` reaches it; ``to_disk``/``from_disk``
  honour ``exclude`` (``"cfg"``, ``"model"``); weights and tokenizer travel with the pipeline and
  nothing is downloaded when it is loaded. Reading the ``model`` attribute never builds a model
  (spaCy inspects it while adding pipes); ``ensure_model()`` does.
* **Settings declared once**, in ``KognerSettings``: the factory's signature and
  ``DEFAULT_CONFIG`` are derived from it.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import srsly
import torch
from spacy.language import Language
from spacy.pipeline import Pipe
from spacy.tokens import Doc, Span, SpanGroup
from spacy.training import Example
from spacy.util import load_config as load_spacy_config
from spacy.util import minibatch

from .precision import PRECISIONS
from .prompts import KognerConfigError, LabelSpec, parse_labels
from .scorer import DEFAULT_SPANS_KEY, kogner_score
from .span_model import CODE_FILE_RE, MODEL_DIR, ModelLoadError, SpanModel
from .windows import SpanHits, Window, best_label_per_span, collect_hits, cut_windows, greedy_flat, group_prompts

CFG_FILE = "kogner.json"
# batch_size = 0: windows per forward pass by device. CPU: the measured best of the pipe on 2 cores;
# CUDA: on one H100 (random-weight MiniLM) window batch 128 ran 1.5x window batch 32.
AUTO_BATCH_SIZE = {"cpu": 32, "cuda": 128}
# What a serialised component may contain: its settings file and the model folder's flat files
# of these kinds. Anything else (a path outside the folder, a Python module unless the user set
# ``trust_remote_code``: see ``span_model.CODE_FILE_RE``) is refused on load.
# ``pytorch_model.bin`` is what version 0.1 wrote; GLiNER reads it with ``weights_only=True``.
MODEL_FILE_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*\.(json|safetensors|txt|model)|pytorch_model\.bin)$")

__all__ = ["KognerComponent", "KognerConfigError", "KognerSettings", "LabelSpec", "make_kogner"]


def _setting(default: Any, doc: str, *, runtime: bool = False) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"doc": doc, "runtime": runtime})
    return field(default=default, metadata={"doc": doc, "runtime": runtime})


@dataclass
class KognerSettings:
    """Every setting of the ``kogner`` component, its default and what it means (README's table).

    ``runtime`` settings can change after creation (``configure``/``set_labels``) and are saved
    in ``kogner.json``; the others decide how the model is built or placed."""

    model: str = _setting(
        "default",
        "Model to build: 'default' (shipped MiniLM), a HF encoder id/folder, a GLiNER checkpoint "
        "folder/id, or a saved kogner pipeline folder (its span model); replaced by the saved weights on spacy.load.",
    )
    labels: list[Any] = _setting([], "Output labels: strings, or {'label': .., 'prompt': ..}.", runtime=True)
    threshold: float = _setting(0.5, "Minimum span score in [0, 1].", runtime=True)
    prompt_thresholds: dict[str, float] = _setting(
        {},
        "Calibrated minimum score per prompt (case-insensitive; tuned on dev by training or `calibrate`); "
        "prompts not listed use threshold. A load-time override sets prompts one by one (spaCy merges dict "
        "settings); `configure(prompt_thresholds={})` drops them all.",
        runtime=True,
    )
    flat: bool = _setting(True, "Greedy non-overlapping spans (highest score first) in the span group.", runtime=True)
    spans_key: str = _setting(DEFAULT_SPANS_KEY, "Span group holding all scored spans.", runtime=True)
    batch_size: int = _setting(
        0, "Windows per forward pass; 0 = by device (CPU 32, CUDA 128: the measured best of each).", runtime=True
    )
    max_window_tokens: int = _setting(256, "Longest window in spaCy tokens.", runtime=True)
    stride: int = _setting(224, "Step between window starts.", runtime=True)
    min_window_subwords: int = _setting(
        128, "Subwords every window keeps for text; labels whose prompts need more are scored in groups.", runtime=True
    )
    max_width: int = _setting(12, "Longest candidate span in tokens (new models only).")
    device: str = _setting("cpu", "'cpu', 'cuda', 'cuda:N' or 'auto'.")
    multi_label: bool = _setting(False, "Allow several labels per span in the span group.", runtime=True)
    overwrite_ents: bool = _setting(False, "Replace existing doc.ents (else only fill free tokens).", runtime=True)
    quantize: bool = _setting(False, "Opt-in dynamic int8 encoder (CPU only).")
    precision: str = _setting("fp32", "'fp32', 'bf16' (autocast) or 'auto' (bf16 where the device runs it natively).")
    trust_remote_code: bool = _setting(
        False, "Allow a model folder to import code (auto_map) and to carry Python modules; trusted folders only."
    )


SETTING_FIELDS = {f.name: f for f in dataclasses.fields(KognerSettings)}
RUNTIME_KEYS = tuple(name for name, f in SETTING_FIELDS.items() if f.metadata["runtime"])
_TYPES = {"float": (int, float), "int": (int,), "bool": (bool,), "str": (str,)}


def _defaults() -> dict[str, Any]:
    return dataclasses.asdict(KognerSettings())


DEFAULT_CONFIG: dict[str, Any] = {**_defaults(), "scorer": {"@scorers": "kogner.scorer.v1"}}


def _check_type(key: str, value: Any) -> None:
    kind = SETTING_FIELDS[key].type
    allowed = _TYPES.get(kind if isinstance(kind, str) else getattr(kind, "__name__", ""))
    if allowed is None:
        return
    if isinstance(value, bool) and bool not in allowed:
        raise KognerConfigError(f"{key} must be a {kind}, got the boolean {value!r}")
    if not isinstance(value, allowed):
        raise KognerConfigError(f"{key} must be a {kind}, got {type(value).__name__} {value!r}")


def _prompt_thresholds(value: Any) -> dict[str, float]:
    """``{prompt: threshold}`` checked, keys case-folded (a prompt's casing does not change its calibration)."""
    if not isinstance(value, dict):
        raise KognerConfigError(f"prompt_thresholds must be a dict {{prompt: threshold}}, got {value!r}")
    out: dict[str, float] = {}
    for prompt, cut in value.items():
        if not isinstance(prompt, str) or not prompt.strip():
            raise KognerConfigError(f"prompt_thresholds: a prompt must be a non-empty string, got {prompt!r}")
        if isinstance(cut, bool) or not isinstance(cut, (int, float)) or not 0.0 <= float(cut) <= 1.0:
            raise KognerConfigError(f"prompt_thresholds[{prompt!r}] must be a number in [0, 1], got {cut!r}")
        out[prompt.strip().casefold()] = float(cut)
    return out


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU; an explicit CUDA device must exist."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise KognerConfigError(f"Unknown device {device!r}: use 'cpu', 'cuda', 'cuda:N' or 'auto'") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise KognerConfigError(f"device={device!r} but no CUDA device is available; use 'cpu' or 'auto'")
    return dev


def make_kogner(nlp: Language, name: str, **settings: Any) -> KognerComponent:
    """Factory behind ``nlp.add_pipe("kogner", config={...})``; see ``KognerSettings``."""
    scorer = settings.pop("scorer", kogner_score)
    return KognerComponent(nlp.vocab, name, settings=KognerSettings(**settings), scorer=scorer)


# spaCy validates a factory's config against its signature: derive it from the settings.
make_kogner.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        inspect.Parameter("nlp", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Language),
        inspect.Parameter("name", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str),
        *(
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation={"float": float, "int": int, "bool": bool, "str": str}.get(f.type, Any),
            )
            for f in dataclasses.fields(KognerSettings)
        ),
        inspect.Parameter("scorer", inspect.Parameter.KEYWORD_ONLY, annotation=Callable | None),
    ]
)
Language.factory(
    "kogner",
    default_config=DEFAULT_CONFIG,
    assigns=["doc.ents", "doc.spans"],
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)(make_kogner)


class BatchPipe(Pipe):
    """A pipe that works on lists of docs: ``__call__`` and ``pipe`` hand batches to ``_process``
    and failures to spaCy's error handler (``nlp.set_error_handler``), as ``TrainablePipe`` does."""

    def _process(self, docs: list[Doc]) -> list[Doc]:
        raise NotImplementedError

    def __call__(self, doc: Doc) -> Doc:
        try:
            return self._process([doc])[0]
        except Exception as err:  # noqa: BLE001 - handed to spaCy's error handler, which re-raises by default
            self.get_error_handler()(self.name, self, [doc], err)
            return doc

    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 128) -> Iterator[Doc]:
        for docs in minibatch(stream, size=batch_size):
            try:
                yield from self._process(list(docs))
            except Exception as err:  # noqa: BLE001 - as in spaCy's TrainablePipe.pipe
                self.get_error_handler()(self.name, self, list(docs), err)


class KognerComponent(BatchPipe):
    """GLiNER span NER as a spaCy pipe (see the module docstring for the design)."""

    def __init__(
        self,
        vocab: Any,
        name: str = "kogner",
        *,
        settings: KognerSettings | None = None,
        scorer: Callable | None = kogner_score,
        span_model: SpanModel | None = None,
        **overrides: Any,
    ) -> None:
        settings = dataclasses.replace(settings or KognerSettings(), **overrides)
        for key in SETTING_FIELDS:
            if key not in RUNTIME_KEYS:
                _check_type(key, getattr(settings, key))
        self.vocab = vocab
        self.name = name
        self.model_source = settings.model
        self.max_width_cfg = int(settings.max_width)
        self.device = resolve_device(settings.device)
        if settings.quantize and self.device.type != "cpu":
            raise KognerConfigError(f"quantize=true (int8) runs on CPU only, but device={settings.device!r}")
        self.quantize = bool(settings.quantize)
        if settings.precision not in PRECISIONS:
            raise KognerConfigError(f"precision must be one of {PRECISIONS}, got {settings.precision!r}")
        self.precision = settings.precision
        self.trust_remote_code = bool(settings.trust_remote_code)
        self.scorer = scorer
        self._model: SpanModel | None = None
        self.cfg: dict[str, Any] = {}
        # as created (the pipeline's config.cfg with the user's load-time overrides merged in):
        # from_disk tells an override from the folder's own value with it
        self._created_with = {k: getattr(settings, k) for k in RUNTIME_KEYS}
        self.configure(**self._created_with)
        if span_model is not None:
            self.model = span_model

    # ------------------------------------------------------------------ configuration
    def configure(self, **settings: Any) -> None:
        """Validate and apply run-time settings (labels, threshold, windows, ...)."""
        unknown = set(settings) - set(RUNTIME_KEYS)
        if unknown:
            raise KognerConfigError(f"Unknown kogner setting(s) {sorted(unknown)}; known: {list(RUNTIME_KEYS)}")
        cfg = {**self.cfg, **settings}
        for key in RUNTIME_KEYS:
            if key != "labels":
                _check_type(key, cfg[key])
        if not 0.0 <= float(cfg["threshold"]) <= 1.0:
            raise KognerConfigError(f"threshold must be in [0, 1], got {cfg['threshold']!r}")
        cfg["prompt_thresholds"] = _prompt_thresholds(cfg["prompt_thresholds"])
        if cfg["batch_size"] < 0:
            raise KognerConfigError(f"batch_size must be a positive integer or 0 (auto), got {cfg['batch_size']!r}")
        for key in ("max_window_tokens", "stride", "min_window_subwords"):
            if cfg[key] < 1:
                raise KognerConfigError(f"{key} must be a positive integer, got {cfg[key]!r}")
        if cfg["stride"] > cfg["max_window_tokens"]:
            raise KognerConfigError(
                f"stride ({cfg['stride']}) must not exceed max_window_tokens ({cfg['max_window_tokens']})"
            )
        if not cfg["spans_key"]:
            raise KognerConfigError("spans_key must be a non-empty string")
        self.label_specs = parse_labels(cfg["labels"])
        cfg["labels"] = [{"label": s.label, "prompt": s.prompt} for s in self.label_specs]
        cfg["threshold"] = float(cfg["threshold"])
        self.cfg = cfg
        if self._model is not None:
            self._check_windows(self._model)

    def thresholds_for(self, prompts: Sequence[str], device: torch.device | None = None) -> float | torch.Tensor:
        """The decision threshold of each prompt: its calibrated one, else ``threshold`` (a float when
        no prompt has its own, so the common case stays one comparison)."""
        own = self.cfg["prompt_thresholds"]
        cuts = [own.get(p.casefold(), self.cfg["threshold"]) for p in prompts]
        if all(c == self.cfg["threshold"] for c in cuts):
            return self.cfg["threshold"]
        return torch.tensor(cuts, device=device)

    def set_labels(self, labels: Sequence[Any]) -> None:
        """Change the label set at run time (zero-shot); saved with the pipeline."""
        self.configure(labels=list(labels))

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(s.label for s in self.label_specs)

    @property
    def model(self) -> SpanModel | None:
        """The span model, or None before it is built: reading it never builds one."""
        return self._model

    @model.setter
    def model(self, span_model: SpanModel) -> None:
        span_model = span_model.to(self.device).set_precision(self.precision)
        if self.quantize:
            span_model.quantize_encoder()
        self._check_windows(span_model)
        self._model = span_model

    def ensure_model(self) -> SpanModel:
        """The span model, built from the ``model`` setting on first use."""
        if self._model is None:
            self.model = SpanModel.from_source(
                self.model_source, trust_remote_code=self.trust_remote_code, max_width=self.max_width_cfg
            )
        assert self._model is not None
        return self._model

    def _check_windows(self, model: SpanModel) -> None:
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
        self.ensure_model()

    # ---------------------------------------------------------------------- prediction
    def _prompts(self) -> list[str]:
        if not self.label_specs:
            raise KognerConfigError(
                f"No labels configured for pipe '{self.name}': add it with "
                "config={'labels': ['Disease', ...]} or call nlp.get_pipe(...).set_labels([...])"
            )
        return [s.prompt for s in self.label_specs]

    def _label_groups(self, model: SpanModel, prompts: list[str]) -> list[tuple[int, list[str]]]:
        """The prompts, split into groups that leave every window ``min_window_subwords`` of text."""
        limit = model.max_subwords - self.cfg["min_window_subwords"]
        if limit < model.prompt_subwords(prompts[:1]):
            raise KognerConfigError(
                f"min_window_subwords ({self.cfg['min_window_subwords']}) leaves no room for label prompts in "
                f"the encoder's {model.max_subwords} subwords; lower it"
            )
        try:
            return group_prompts(prompts, model.prompt_subwords, limit)
        except ValueError as err:
            raise KognerConfigError(str(err)) from err

    def _windows(self, model: SpanModel, docs: list[Doc], prompt_len: int) -> list[Window]:
        windows: list[Window] = []
        budget = max(1, model.max_subwords - prompt_len)
        for d, doc in enumerate(docs):
            idx = [t.i for t in doc if not t.is_space]
            windows += cut_windows(
                d,
                idx,
                [doc[i].text for i in idx],
                max_words=self.cfg["max_window_tokens"],
                stride=self.cfg["stride"],
                subword_budget=budget,
                subword_count=model.subword_count,
            )
        return windows

    def _process(self, docs: list[Doc]) -> list[Doc]:
        prompts = self._prompts()
        model = self.ensure_model()
        groups = self._label_groups(model, prompts)
        widest = max(model.prompt_subwords(group) for _, group in groups)
        windows = self._windows(model, docs, widest)
        windows.sort(key=lambda w: sum(model.subword_count(x) for x in w.words))
        found: list[SpanHits] = [{} for _ in docs]
        bs = self.cfg["batch_size"] or AUTO_BATCH_SIZE.get(model.device.type, AUTO_BATCH_SIZE["cpu"])
        for offset, group in groups:
            cuts = self.thresholds_for(group, model.device)
            for b in range(0, len(windows), bs):
                chunk = windows[b : b + bs]
                scores = model.score_windows([w.words for w in chunk], group)
                collect_hits(chunk, scores.probs, scores.valid, cuts, found, offset)
        for doc, spans in zip(docs, found, strict=True):
            self._set_annotations(doc, spans)
        return docs

    def _set_annotations(self, doc: Doc, found: SpanHits) -> None:
        """All scored spans to ``doc.spans[spans_key]``, the best flat ones (by score) to ``doc.ents``."""
        hits = found if self.cfg["multi_label"] else best_label_per_span(found)
        items = sorted(hits.items(), key=lambda kv: (-kv[1], kv[0]))
        flat = [items[i] for i in greedy_flat(items, len(doc))]
        group = flat if self.cfg["flat"] else items
        group = sorted(group, key=lambda kv: (kv[0][0], kv[0][1], self.labels[kv[0][2]]))
        labels = self.labels
        doc.spans[self.cfg["spans_key"]] = SpanGroup(
            doc,
            name=self.cfg["spans_key"],
            spans=[Span(doc, s, e + 1, label=labels[c]) for (s, e, c), _ in group],
            attrs={"scores": [float(score) for _, score in group]},
        )
        ents = [Span(doc, s, e + 1, label=labels[c]) for (s, e, c), _ in flat]  # score order
        if self.cfg["overwrite_ents"]:
            doc.ents = sorted(ents, key=lambda s: s.start)
        else:
            # Like entity_ruler: existing entities win, new ones only fill free tokens.
            existing = list(doc.ents)
            taken = {i for ent in existing for i in range(ent.start, ent.end)}
            new = [s for s in ents if not taken.intersection(range(s.start, s.end))]
            doc.ents = sorted(existing + new, key=lambda s: s.start)

    def score(self, examples: Iterable[Example], **kwargs: Any) -> dict[str, Any]:
        if self.scorer is None:
            return {}
        return self.scorer(examples, spans_key=self.cfg["spans_key"], **kwargs)

    # ------------------------------------------------------------------ serialisation
    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        exclude = set(exclude)
        if "cfg" not in exclude:
            srsly.write_json(path / CFG_FILE, {k: self.cfg[k] for k in RUNTIME_KEYS})
        if "model" not in exclude:
            self.ensure_model().save(path / MODEL_DIR)

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> KognerComponent:
        path = Path(path)
        exclude = set(exclude)
        if not path.is_dir():
            raise ModelLoadError(f"kogner component folder not found: {path}")
        if "cfg" not in exclude:
            cfg_file = path / CFG_FILE
            if not cfg_file.is_file():
                raise ModelLoadError(f"kogner component folder {path} is missing {CFG_FILE}")
            try:
                # json, not srsly: ujson reads the tuned threshold "0.35" as 0.35000000000000003
                cfg = json.loads(cfg_file.read_text(encoding="utf8"))
            except ValueError as err:
                raise ModelLoadError(f"{cfg_file} is not valid JSON: {err}") from err
            if not isinstance(cfg, dict):
                raise ModelLoadError(f"{cfg_file} must hold a JSON object")
            # a setting overridden in spacy.load(..., config=...) wins over the folder's saved state
            overridden = _load_overrides(path, self.name, self._created_with)
            try:
                self.configure(**{k: v for k, v in cfg.items() if k in RUNTIME_KEYS and k not in overridden})
            except KognerConfigError as err:
                raise ModelLoadError(f"{cfg_file}: {err}") from err
        if "model" not in exclude:
            model_dir = path / MODEL_DIR
            if not model_dir.is_dir():
                raise ModelLoadError(f"kogner component folder {path} is missing the model folder '{MODEL_DIR}/'")
            # spacy.load builds this component from the folder's own config.cfg: a true there is
            # the folder author's word, not the user's, and a folder must not vouch for itself.
            self_granted = _self_granted_trust(path, self.name) if self.trust_remote_code else None
            trusted = self.trust_remote_code and self_granted is None
            note = (
                f" (trust_remote_code is ignored: {self_granted} sets it, and a pipeline folder cannot grant "
                "itself the right to run its code; if you trust its author, set it to false in that file and "
                "pass trust_remote_code = true when loading)"
                if self_granted is not None
                else ""
            )
            unexpected = sorted(
                p.name for p in model_dir.iterdir() if not (p.is_file() and _is_model_file(p.name, trusted))
            )
            if unexpected:
                code = [name for name in unexpected if CODE_FILE_RE.match(name)]
                hint = (
                    f" {code} are Python modules: a model folder is data and loading it runs no code unless "
                    "you set trust_remote_code = true in the kogner component config (only for a folder "
                    "whose author you trust)."
                    if code and not self.trust_remote_code
                    else ""
                )
                raise ModelLoadError(
                    f"{model_dir} holds files a kogner model folder never contains: {unexpected}.{hint}{note}"
                )
            self._model = None
            try:
                self.model = SpanModel.load(model_dir, trust_remote_code=trusted)
            except ModelLoadError as err:
                if note:
                    raise ModelLoadError(f"{err}{note}") from err
                raise
        return self

    def to_bytes(self, *, exclude: Iterable[str] = ()) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            self.to_disk(tmp, exclude=exclude)
            files = {p.relative_to(tmp).as_posix(): p.read_bytes() for p in Path(tmp).rglob("*") if p.is_file()}
        return srsly.msgpack_dumps(files)

    def from_bytes(self, data: bytes, *, exclude: Iterable[str] = ()) -> KognerComponent:
        files = srsly.msgpack_loads(data)
        if not isinstance(files, dict):
            raise ModelLoadError("kogner bytes must hold a mapping of file names to contents")
        bad = [name for name in files if not _is_component_file(name, self.trust_remote_code)]
        if bad:
            hint = " (Python modules need trust_remote_code = true)" if not self.trust_remote_code else ""
            raise ModelLoadError(
                f"kogner bytes hold file names the component never writes: {sorted(map(str, bad))}{hint}"
            )
        tmp = tempfile.mkdtemp()
        folder = Path(tmp, self.name)  # in a fresh folder: no config.cfg beside it (``_self_granted_trust``)
        try:
            for rel, content in files.items():
                target = Path(folder, *rel.split("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
            return self.from_disk(folder, exclude=exclude)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _folder_section(path: Path, name: str, *, interpolate: bool = False) -> dict[str, Any] | None:
    """This component's block of the pipeline's own ``config.cfg`` (beside the component folder),
    or None where there is none (``from_bytes``, a bare component folder, an unreadable file)."""
    cfg_path = path.parent / "config.cfg"
    if not cfg_path.is_file():
        return None
    try:
        cfg = load_spacy_config(cfg_path, interpolate=interpolate)
    except Exception:  # noqa: BLE001 - spacy.load cannot have built this component from an unreadable file
        return None
    section = cfg.get("components", {}).get(name)
    return section if isinstance(section, dict) else None


def _self_granted_trust(path: Path, name: str) -> Path | None:
    """The pipeline's own ``config.cfg`` (beside the component folder) when it sets
    ``trust_remote_code`` for this component, else None.

    ``spacy.load`` creates the component from that file (user overrides merged in), so the
    component cannot tell the user's true from the author's: a true in the file is never enough."""
    section = _folder_section(path, name)
    value = section.get("trust_remote_code") if section is not None else None
    return path.parent / "config.cfg" if str(value).strip().lower() in _TRUE_WORDS else None


def _load_overrides(path: Path, name: str, created: dict[str, Any]) -> set[str]:
    """The run-time settings given in ``spacy.load(..., config={...})``: the component was created
    with a value other than the pipeline's own ``config.cfg`` holds. The folder's ``kogner.json``
    (its saved state: tuned threshold, labels set after creation) must not undo them, or
    ``config={"components.kogner.threshold": 0.3}`` would be silently ignored; without a
    ``config.cfg`` beside the folder the saved state applies as it is. Compared interpolated, as
    spaCy created the component (a ``${vars.x}`` value is not an override)."""
    section = _folder_section(path, name, interpolate=True)
    if section is None:
        return set()
    return {key for key in RUNTIME_KEYS if key in section and section[key] != created.get(key)}


_TRUE_WORDS = {"true", "1", "yes", "on", "t", "y"}  # what spaCy's config validation reads as true


def _is_model_file(name: str, trust_remote_code: bool) -> bool:
    """A file name a model folder may hold: data files, and Python modules only when trusted."""
    return bool(MODEL_FILE_RE.match(name)) or (trust_remote_code and bool(CODE_FILE_RE.match(name)))


def _is_component_file(name: Any, trust_remote_code: bool = False) -> bool:
    """``kogner.json`` or ``model/<flat file of an allowed kind>``: nothing else, no paths."""
    if not isinstance(name, str):
        return False
    if name == CFG_FILE:
        return True
    head, sep, tail = name.partition("/")
    return head == MODEL_DIR and bool(sep) and "/" not in tail and _is_model_file(tail, trust_remote_code)
