"""KoGNER distillation: train the GLiNER student with L = a·L_lang + b·L_dist.

* L_lang is GLiNER's own span loss (focal BCE over span × label pairs), computed by the model's
  forward pass; the *same* pass returns the span vectors before label scoring, so distillation
  costs no second encoder pass.
* L_dist (``heads.py``) pulls the span vectors of KG-linked training spans towards the teacher's
  rows of H = [Z, Z', Z''] through two MLPs into a shared space. The per-dimension variance of
  the projected teacher vectors is logged to watch for collapse.
* b = 0 is plain GLiNER fine-tuning on the same data, steps and seed: the ablation.

Training is resumable (``checkpoint.py``): weights, optimizer, scheduler, RNG states and step are
written atomically every ``checkpoint_every`` steps; the data order is a pure function of seed
and step (``batches.py``), and the same command continues from the checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..config import ConfigError, load_config, read_section, require
from ..data.labels import label_family, label_prompt, load_label_table, prompt_variants
from ..pipeline.dropout import use_packed_dropout
from ..pipeline.gliner_compat import training_collator
from ..pipeline.precision import PRECISIONS, autocast, resolve_precision
from ..pipeline.span_model import SpanModel
from ..repro import peak_rss_mb, seed_everything
from ..run_summary import SUMMARY_FILE, RunSummary
from . import checkpoint
from .batches import BatchPlan, Prefetcher, Record, read_records
from .calibrate import FALLBACKS, Scored, calibrate, decode, score_records
from .heads import DIST_LOSSES, FROZEN_TEACHER, DistillHeads, dist_loss
from .kg_term import TEACHER_ROWS, ShareBalancer, TeacherBank, bank_infonce, bank_scores, retrieval_counts
from .schedule import SCHEDULERS, Schedule

SECTIONS = ("paths", "model", "heads", "training")
LOSS_NORMS = ("sum", "per_span")
SPAN_DROPOUTS = ("shared", "full")
DROPOUT_MASKS = ("packed", "torch")


@dataclass
class PathsSettings:
    """``[paths]``: the training data, the teacher and where the student starts from.

    ``test`` (optional) is scored at every evaluation for the learning curves only; model and
    threshold selection use ``dev`` alone. ``extra_train`` (optional) is appended to the training
    sentences after ``train_fraction`` has drawn its subset: the KG's node-name sentences
    (``kg-names``) that every arm of a low-resource KG study sees whole. ``calibration`` (optional)
    calibrates the thresholds of the prompts no dev label carries (``training/calibrate.py``)."""

    train: str
    dev: str
    teacher: str
    labels: str
    init_model: str
    test: str = ""
    extra_train: str = ""
    calibration: str = ""


@dataclass
class ModelSettings:
    """``[model]``: the GLiNER span model built when ``init_model`` is an encoder."""

    max_width: int
    max_len: int
    hidden_size: int
    dropout: float
    span_dropout: str = "shared"
    # "packed": dropout masks from packed 16-bit draws (pipeline/dropout.py); "torch": torch's own
    dropout_masks: str = "packed"

    def __post_init__(self) -> None:
        require(self.span_dropout in SPAN_DROPOUTS, f"model.span_dropout must be one of {SPAN_DROPOUTS}")
        require(self.dropout_masks in DROPOUT_MASKS, f"model.dropout_masks must be one of {DROPOUT_MASKS}")
        # the masks scale kept units by 1/(1 - p): p = 1 would divide by zero
        require(0.0 <= self.dropout < 1.0, f"model.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class HeadSettings:
    """``[heads]``: MLP_span / MLP_dist."""

    hidden: int
    shared: int
    dropout: float
    # z-score H's columns over all nodes and scale each block by weight / sqrt(width) (kg_term.py)
    standardise: bool
    block_weights: list[float]
    # "kg" (each node's own row of H) or "shuffled" (rows permuted within each kind: the control)
    teacher_rows: str
    # kg_infonce / retrieval: subtract each kind's mean projected teacher row (kg_term.TeacherBank)
    bank_center: bool = True

    def __post_init__(self) -> None:
        require(all(w >= 0 for w in self.block_weights), "heads.block_weights must be >= 0")
        require(0.0 <= self.dropout < 1.0, f"heads.dropout must be in [0, 1), got {self.dropout}")
        require(self.teacher_rows in TEACHER_ROWS, f"heads.teacher_rows must be one of {TEACHER_ROWS}")


@dataclass
class TrainingSettings:
    """``[training]``: the loop, the loss and its weights, evaluation and checkpoints."""

    seed: int
    steps: int
    epochs: float
    max_minutes: float
    fit_to_budget: bool
    patience: int
    batch_size: int
    bucket: int
    precision: str
    lr_encoder: float
    lr_others: float
    weight_decay: float
    warmup_ratio: float
    scheduler: str
    grad_clip: float
    a: float
    b: float
    dist_loss: str
    temperature: float
    focal_alpha: float
    focal_gamma: float
    loss_reduction: str
    loss_norm: str
    share_balance: bool
    balance_momentum: float
    eval_every: int
    evals_per_epoch: float
    checkpoint_every: int
    eval_threshold: float
    eval_batch_size: int
    eval_docs_per_call: int
    tune_threshold: list[float]
    calibrate_min_spans: int
    fallback_threshold: str
    max_train_sentences: int
    train_fraction: float
    prompt_variation: float
    cross_negatives: bool
    max_dev_sentences: int
    device: str
    stop_after: int
    num_threads: int
    prefetch: str
    # AdamW's fused kernel (one pass over every parameter; measured 5× faster than the per-tensor
    # loop over the student's 34 M parameters on a 2-core CPU); false = torch's default loop
    fused_optimizer: bool = True
    # a pooled corpus's sources weigh n_s ** source_balance in each epoch (batches.BatchPlan); 1 = as pooled
    source_balance: float = 1.0

    def __post_init__(self) -> None:
        require(self.a >= 0 and self.b >= 0, f"training.a and training.b must be >= 0 (got a={self.a}, b={self.b})")
        require(
            self.dist_loss in DIST_LOSSES, f"training.dist_loss must be one of {DIST_LOSSES}, got {self.dist_loss!r}"
        )
        require(self.steps >= 1 and self.batch_size >= 1, "training.steps and training.batch_size must be >= 1")
        require(self.scheduler in SCHEDULERS, f"training.scheduler must be one of {SCHEDULERS}")
        require(self.eval_every >= 1 and self.checkpoint_every >= 1, "eval_every and checkpoint_every must be >= 1")
        require(self.eval_batch_size >= 1 and self.eval_docs_per_call >= 1, "eval batch sizes must be >= 1")
        require(self.evals_per_epoch >= 0, "training.evals_per_epoch must be >= 0")
        require(self.epochs >= 0 and self.max_minutes >= 0 and self.patience >= 0, "epochs, max_minutes, patience >= 0")
        require(self.precision in PRECISIONS, f"training.precision must be one of {PRECISIONS}")
        require(self.prefetch in PREFETCH, f"training.prefetch must be one of {PREFETCH}, got {self.prefetch!r}")
        require(all(0 < x < 1 for x in self.tune_threshold), "training.tune_threshold values must be in (0, 1)")
        require(self.calibrate_min_spans >= 0, "training.calibrate_min_spans must be >= 0 (0: one threshold)")
        require(
            self.fallback_threshold in FALLBACKS,
            f"training.fallback_threshold must be one of {FALLBACKS}, got {self.fallback_threshold!r}",
        )
        require(self.loss_norm in LOSS_NORMS, f"training.loss_norm must be one of {LOSS_NORMS}, got {self.loss_norm!r}")
        require(0 <= self.balance_momentum < 1, "training.balance_momentum must be in [0, 1)")
        require(0 < self.train_fraction <= 1, "training.train_fraction must be in (0, 1]")
        require(0 <= self.prompt_variation <= 1, "training.prompt_variation must be in [0, 1]")
        require(0 <= self.source_balance <= 1, "training.source_balance must be in [0, 1]")


@dataclass
class DistillConfig:
    """A whole distillation config, every section validated by ``read_section``."""

    paths: PathsSettings
    model: ModelSettings
    heads: HeadSettings
    training: TrainingSettings
    raw: dict[str, Any]

    @classmethod
    def from_config(cls, cfg: dict[str, Any], where: str | Path = "distill config") -> DistillConfig:
        unknown = sorted(set(cfg) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"{where}: unknown section(s) {unknown}")
        for section in SECTIONS:
            if section not in cfg:
                raise ConfigError(f"{where}: missing section [{section}]")
        out = cls(
            paths=read_section(PathsSettings, cfg["paths"], "paths"),
            model=read_section(ModelSettings, cfg["model"], "model"),
            heads=read_section(HeadSettings, cfg["heads"], "heads"),
            training=read_section(TrainingSettings, cfg["training"], "training"),
            raw={k: dict(v) for k, v in cfg.items()},
        )
        teacher = out.paths.teacher
        if out.training.b > 0 and not teacher:
            raise ConfigError("training.b > 0 needs paths.teacher (an H store written by `teacher`)")
        if teacher and not Path(teacher).is_dir():
            raise ConfigError(f"Teacher H store not found: {teacher} (run `python -m spacy_kogner teacher` first)")
        return out


def check_config(cfg: dict[str, Any], path: str | Path) -> DistillConfig:
    """Unknown sections/keys and impossible values fail before any work starts."""
    return DistillConfig.from_config(cfg, path)


def _label_universe(records: list[Record]) -> list[str]:
    """Every label of the training set (cross_negatives prompts each sentence with the ones it
    is not annotated for: another corpus's, or a silver kind that did not match in it)."""
    return sorted({lbl for r in records for lbl in r.labels})


class Distiller:
    """Owns the student, the heads, the teacher store and the loop; see the module docstring."""

    def __init__(self, cfg: dict[str, Any], output_dir: str | Path) -> None:
        self.config = DistillConfig.from_config(cfg)
        self.t = t = self.config.training
        self.out = Path(output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        if t.num_threads:
            torch.set_num_threads(t.num_threads)
        self.device = torch.device(t.device if t.device != "cuda" or torch.cuda.is_available() else "cpu")
        self.amp = resolve_precision(t.precision, self.device)
        seed_everything(t.seed)
        paths = self.config.paths
        self.label_table = load_label_table(paths.labels)
        self.train = _fraction(read_records(paths.train, t.max_train_sentences), t.train_fraction, t.seed)
        if paths.extra_train:
            self.train += read_records(paths.extra_train)
        self.dev = read_records(paths.dev, t.max_dev_sentences) if paths.dev else []
        self.universe = _label_universe(self.train) if t.cross_negatives else []
        self.test = read_records(paths.test) if paths.test else []
        self.calibration = read_records(paths.calibration) if paths.calibration else []
        if not self.train:
            raise ConfigError(f"Training corpus {paths.train} has no sentences")
        self.plan = BatchPlan(
            [len(r.tokens) for r in self.train],
            t.batch_size,
            t.seed,
            t.bucket,
            sources=[r.corpus for r in self.train],
            balance=t.source_balance,
        )
        self.steps = self._total_steps()
        # evaluate (and checkpoint at each evaluation) a fixed number of times per epoch when set,
        # so one profile fits corpora of every size
        self.eval_every = max(1, round(self.plan.per_epoch / t.evals_per_epoch)) if t.evals_per_epoch else t.eval_every
        self.checkpoint_every = min(t.checkpoint_every, self.eval_every) if t.evals_per_epoch else t.checkpoint_every
        m = self.config.model
        self.student = SpanModel.from_source(
            paths.init_model, max_width=m.max_width, max_len=m.max_len, hidden_size=m.hidden_size, dropout=m.dropout
        ).to(self.device)
        self.student.shared_span_dropout = m.span_dropout == "shared"
        self.student.set_precision(t.precision)
        self.store = self._load_teacher(paths.teacher) if paths.teacher else None
        h = self.config.heads
        self.bank = None
        if self.store is not None:
            self.bank = TeacherBank(self.store, h.standardise, h.block_weights, h.teacher_rows, h.bank_center)
        teacher_dim = self.store.dim if self.store is not None else 1
        frozen = t.dist_loss in FROZEN_TEACHER
        self.heads = DistillHeads(self.student.hidden_size, teacher_dim, h.hidden, h.shared, h.dropout, frozen)
        self.heads.to(self.device)
        if m.dropout_masks == "packed":
            for module in (self.student.gliner, self.heads):
                use_packed_dropout(module)
        self.balancer = ShareBalancer(t.balance_momentum)
        self.collator = training_collator(self.student.gliner)
        self.batches = Prefetcher(self._batch, self.steps, _prefetch_on(t.prefetch, self.device))
        self.optimizer = self._make_optimizer()
        self.scheduler = self._make_scheduler()
        # seconds spent scoring the test split for the learning curves: reporting, not training, so
        # outside the wall-time budget
        self.curve_s = 0.0
        self.linked_share = self._linked_share()
        self.fingerprint = checkpoint.run_fingerprint(cfg, self._teacher_file())
        # Re-seed after building: the heads' size depends on the teacher, and a b = 0 run must
        # see the same dropout masks and batches as its b > 0 counterpart.
        seed_everything(t.seed)

    # ------------------------------------------------------------------------ set-up
    def _total_steps(self) -> int:
        """The schedule's length: ``epochs`` over the training set when set, else ``steps``."""
        if self.t.epochs > 0:
            return max(1, math.ceil(self.t.epochs * self.plan.per_epoch))
        return self.t.steps

    @staticmethod
    def _load_teacher(path: str) -> Any:
        from ..teacher.store import HStore

        return HStore.load(path)

    def _teacher_file(self) -> Path | None:
        from ..teacher.store import H_FILE

        return Path(self.config.paths.teacher) / H_FILE if self.config.paths.teacher else None

    def _make_optimizer(self) -> torch.optim.Optimizer:
        encoder = self.student.encoder_parameters()
        enc_ids = {id(p) for p in encoder}
        others = [p for p in self.student.parameters() if id(p) not in enc_ids]
        others += [p for p in self.heads.parameters() if p.requires_grad]
        groups = [{"params": encoder, "lr": self.t.lr_encoder}, {"params": others, "lr": self.t.lr_others}]
        return torch.optim.AdamW(groups, weight_decay=self.t.weight_decay, fused=self.t.fused_optimizer or None)

    def _make_scheduler(self) -> torch.optim.lr_scheduler.LambdaLR:
        self.schedule = Schedule(self.t.scheduler, int(self.t.warmup_ratio * self.steps), self.steps)
        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.schedule.factor)

    def _linked_share(self) -> float:
        total = sum(len(r.ner) for r in self.train)
        linked = sum(1 for r in self.train for k in r.kge if k is not None and self._row(k) is not None)
        return linked / total if total else 0.0

    def _row(self, node_id: str) -> int | None:
        return self.store.row_of(node_id) if self.store is not None else None

    # ------------------------------------------------------------------------ one step
    def _batch(self, step: int) -> tuple[dict[str, Any], list[Record]]:
        """Step ``step``'s collated batch: a pure function of (seed, step), so that it can be built
        ahead in another thread and a resumed run sees the same batches."""
        records = [self.train[i] for i in self.plan(step)]
        rng = random.Random(f"{self.t.seed}:{step}")  # label-prompt order of this step's sentences
        return self._collate(records, rng), records

    def _collate(self, records: list[Record], rng: random.Random) -> dict[str, Any]:
        items, channels = [], []
        for r in records:
            worded = {lbl: self._wording(lbl, rng) for lbl in r.labels}
            for lbl in self.universe:  # cross_negatives: the labels this sentence is not annotated for
                if lbl in worded:
                    continue
                wording = self._wording(lbl, rng)
                if wording not in worded.values():
                    worded[lbl] = wording
            order = list(worded)
            rng.shuffle(order)
            channels.append(order)
            items.append({
                "tokenized_text": self.student.model_words(r.tokens),
                "ner": [[s, e, worded.get(lbl) or self._wording(lbl, rng)] for s, e, lbl in r.ner],
                "ner_labels": [worded[lbl] for lbl in order],
            })  # fmt: skip
        batch = self.collator(items)
        if self.universe:
            batch["pair_mask"] = self._pair_mask(records, channels, batch["labels"].shape)
        if self.device.type == "cuda":  # page-locked: the copy to the device runs asynchronously
            batch = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        return batch

    def _pair_mask(self, records: list[Record], channels: list[list[str]], shape: torch.Size) -> torch.Tensor:
        """1 for the (span, label) pairs whose loss is known: every span for the sentence's own
        labels; for a label it is not annotated for, only the sentence's annotated spans of another label
        family (a chemical is not a gene; whether an unannotated span is one, nobody said)."""
        mask = torch.ones(shape)  # [B, words × widths, C], GLiNER's label tensor layout
        width = self.student.max_width
        for b, (r, order) in enumerate(zip(records, channels, strict=True)):
            own = set(r.labels)
            for c, lbl in enumerate(order):
                if lbl in own:
                    continue
                mask[b, :, c] = 0.0
                family = label_family(lbl, self.label_table)
                for s, e, span_label in r.ner:
                    at = s * width + e - s
                    if e - s < width and at < shape[1] and label_family(span_label, self.label_table) != family:
                        mask[b, at, c] = 1.0
        return mask

    def _wording(self, label: str, rng: random.Random) -> str:
        """The label's prompt, or with probability ``prompt_variation`` another of its wordings."""
        if self.t.prompt_variation and rng.random() < self.t.prompt_variation:
            return rng.choice(prompt_variants(label, self.label_table))
        return label_prompt(label, self.label_table)

    def _linked(self, records: list[Record], n_words: int) -> tuple[list[tuple[int, int, int]], list[int]]:
        """(batch row, start, width index) and H row of every linked span that the model scored."""
        where, rows = [], []
        max_width = self.student.max_width
        for b, r in enumerate(records):
            for (s, e, _), node in zip(r.ner, r.kge, strict=True):
                row = self._row(node) if node else None
                if row is None or e - s >= max_width or e >= min(len(r.tokens), n_words):
                    continue
                where.append((b, s, e - s))
                rows.append(row)
        return where, rows

    def step(self, step: int) -> dict[str, float]:
        """One optimisation step; returns every loss part for the log."""
        return self._optimise(*self.batches.get(step))

    def _optimise(self, batch: dict[str, Any], records: list[Record]) -> dict[str, float]:
        """One optimisation step on a collated batch (``step`` without the batch schedule)."""
        self.student.train()
        self.heads.train()
        inputs = {k: v.to(self.device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        pair_mask = inputs.pop("pair_mask", None)
        where, rows = self._linked(records, inputs["span_idx"].size(1) // self.student.max_width)
        distil = self.t.b > 0 and bool(where)
        index = tuple(torch.tensor(x, device=self.device) for x in zip(*where, strict=True)) if distil else None
        with autocast(self.device, self.amp):
            l_lang, spans = self.student.train_forward(
                inputs, index, alpha=self.t.focal_alpha, gamma=self.t.focal_gamma, reduction=self.t.loss_reduction,
                pair_mask=pair_mask,
            )  # fmt: skip
        l_lang = l_lang.float()
        if self.t.loss_norm == "per_span":  # per gold (span, label) pair the batch scored
            l_lang = l_lang / inputs["labels"].sum().clamp(min=1)
        l_dist = torch.zeros((), device=self.device)
        var = float("nan")
        if distil:
            assert self.bank is not None
            l_dist, var = self._dist_loss(spans.float(), rows)
            if self.t.loss_norm == "per_span":
                l_dist = l_dist / len(rows)
        scale = 1.0
        if self.t.share_balance and self.t.b > 0:
            self.balancer.update(l_lang.item(), l_dist.item() if distil else None)
            scale = self.balancer.scale()
        loss = self.t.a * l_lang + self.t.b * scale * l_dist
        share = self.t.b * scale * l_dist.item() / max(self.t.a * l_lang.item(), 1e-12)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, self.t.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return {
            "loss": loss.item(), "l_lang": l_lang.item(), "l_dist": l_dist.item(), "linked_spans": len(where),
            "dist_share": share, "dist_scale": scale, "teacher_var": var, "lr": self.scheduler.get_last_lr()[0],
            "words": int(inputs["span_idx"].size(1)),
        }  # fmt: skip

    def paired_step_cost(self, steps: int, warmup: int) -> dict[str, Any]:
        """What the KG term costs per step, as a ratio measured in one process (issue 13: <= 1.15x).

        Ratios of two runs' step times mix the term's cost with the machine's speed at two times
        (b0 and an arm with the same compute measured 1.05x and 1.17x on one box). Here every batch
        is trained on twice, once with b = 0 and once with this run's b, alternating which goes
        first, so drift, batch length and cache state cancel within each pair. The weights move
        (it trains); a step's cost does not depend on them. Result: the median of the per-batch
        ratios and the ratio of the summed times, over ``steps`` pairs after ``warmup`` pairs. The
        trainer is spent afterwards (its weights trained twice per batch): build a new one to train."""
        b = self.t.b
        if b <= 0:
            raise ConfigError("paired_step_cost needs training.b > 0 (it compares b = 0 with this run's b)")
        if steps < 1 or warmup < 0:
            raise ConfigError(f"paired_step_cost: steps must be >= 1 and warmup >= 0, got {steps}, {warmup}")
        timed: dict[float, list[float]] = {0.0: [], b: []}
        linked = []
        try:
            for i in range(warmup + steps):
                batch, records = self._batch(i)
                for weight in (0.0, b) if i % 2 == 0 else (b, 0.0):
                    self.t.b = weight
                    start = time.perf_counter()
                    parts = self._optimise(batch, records)
                    if i >= warmup:
                        timed[weight].append(time.perf_counter() - start)
                if i >= warmup:
                    linked.append(parts["linked_spans"])
        finally:
            self.t.b = b
            self.batches.close()
        ratios = [with_kg / without for with_kg, without in zip(timed[b], timed[0.0], strict=True)]
        return {
            "b": b, "steps": steps, "warmup": warmup, "median_ratio": float(np.median(ratios)),
            "sum_ratio": sum(timed[b]) / sum(timed[0.0]), "median_step_s_b0": float(np.median(timed[0.0])),
            "median_step_s": float(np.median(timed[b])), "mean_linked_spans": float(np.mean(linked)),
            "threads": torch.get_num_threads(), "precision": "bf16" if self.amp is not None else "fp32",
        }  # fmt: skip

    def _dist_loss(self, spans: torch.Tensor, rows: list[int]) -> tuple[torch.Tensor, float]:
        """L_dist (summed over the linked spans) and the projected teacher's variance (collapse watch)."""
        assert self.bank is not None
        if self.t.dist_loss == "kg_infonce":
            student = self.heads.mlp_span(spans)
            return bank_infonce(student, rows, self.bank, self.heads.mlp_dist, self.t.temperature), float("nan")
        h = torch.from_numpy(self.bank.rows(rows)).to(self.device)  # only these rows are read
        student, teacher = self.heads(spans, h)
        var = float(teacher.detach().var(0).mean()) if len(rows) > 1 else float("nan")
        return dist_loss(self.t.dist_loss, student, teacher, rows, self.t.temperature), var

    def kg_retrieval(self, records: list[Record]) -> dict[str, Any] | None:
        """Evidence that knowledge went in: for every KG-linked span of ``records``, read in its
        sentence as training reads it, the rank of its node among all nodes of the same kind by
        cosine of MLP_span(span) and MLP_dist(teacher row) (frozen or not). Top-1 / top-10 in %,
        with chance (the mean of k / kind size) beside them, per kind, and split by whether the
        node was linked anywhere in the training data ("seen") or not ("unseen": a teacher that
        only tags each node with an arbitrary row can be memorised for seen nodes, never for
        unseen ones). None without a teacher or links."""
        if self.bank is None:
            return None
        self.student.train(False)
        self.heads.train(False)
        self.bank.clear()  # MLP_dist may have been trained since the last call
        seen_rows = {self._row(k) for r in self.train for k in r.kge if k} - {None}
        total: dict[str, dict[str, float]] = {}
        by_kind: dict[str, dict[str, float]] = {}
        by_seen: dict[str, dict[str, float]] = {}
        linked = [r for r in records if any(k and self._row(k) is not None for k in r.kge)]
        size = self.t.eval_batch_size
        with torch.no_grad():
            for i in range(0, len(linked), size):
                chunk = linked[i : i + size]
                batch = self._collate(chunk, random.Random(0))
                batch.pop("pair_mask", None)
                inputs = {k: v.to(self.device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
                where, rows = self._linked(chunk, inputs["span_idx"].size(1) // self.student.max_width)
                if not where:
                    continue
                index = tuple(torch.tensor(x, device=self.device) for x in zip(*where, strict=True))
                with autocast(self.device, self.amp):
                    _, spans = self.student.train_forward(inputs, index)
                student = self.heads.mlp_span(spans.float())
                scores = bank_scores(student, rows, self.bank, self.heads.mlp_dist, 1.0)
                # bank_scores gives one entry per kind present, in sorted kind order
                kinds = self.bank.kind_of[np.asarray(rows, dtype=np.int64)]
                for kind, (logits, target) in zip(np.unique(kinds), scores, strict=True):
                    _tally(total, "all", logits, target)
                    _tally(by_kind, str(self.bank.kind_names[kind]), logits, target)
                    seen = [rows[i] in seen_rows for i in np.flatnonzero(kinds == kind)]
                    seen_mask = torch.tensor(seen, device=logits.device)
                    for name, mask in (("seen", seen_mask), ("unseen", ~seen_mask)):
                        if mask.any():
                            _tally(by_seen, name, logits[mask], target[mask])
        self.bank.clear()
        if not total:
            return None
        return {**_percent(total)["all"], "by_kind": _percent(by_kind), "by_seen": _percent(by_seen)}

    # ------------------------------------------------------------------- evaluation
    def pipeline(
        self,
        corpora_labels: list[str] | None = None,
        threshold: float | None = None,
        prompt_thresholds: dict[str, float] | None = None,
    ) -> Any:
        """A spaCy pipeline around the current student (what ``model-best`` will be).

        Its config says ``device = "auto"``: a student trained on a GPU must load on a machine
        without one."""
        import spacy

        labels = corpora_labels or sorted({lbl for r in self.train for lbl in r.labels})
        nlp = spacy.blank("en")
        pipe = nlp.add_pipe(
            "kogner",
            config={
                "labels": [{"label": lbl, "prompt": label_prompt(lbl, self.label_table)} for lbl in labels],
                "threshold": self.t.eval_threshold if threshold is None else threshold,
                "prompt_thresholds": prompt_thresholds or {},
                "batch_size": self.t.eval_batch_size, "max_width": self.student.max_width, "device": "auto",
                "precision": self.t.precision,
            },
        )  # fmt: skip
        pipe.device = self.device
        pipe.model = self.student
        return nlp

    def _predict(self, records: list[Record], threshold: float) -> Scored:
        """Every scored (start, end exclusive, label) of each record at ``threshold``, per label set."""
        self.student.train(False)
        return score_records(self.pipeline, records, threshold, self.t.eval_docs_per_call)

    def evaluate(self, records: list[Record], thresholds: list[float] | None = None) -> dict[float, dict[str, float]]:
        """Exact-span micro P/R/F1 (0-1) at each threshold, from one pass of the model.

        Each corpus's sentences are prompted with that corpus's labels. The pipe runs once at the
        lowest threshold with every scored (span, label) kept; each threshold then keeps its spans
        and chooses ``doc.ents`` exactly as the component does (``calibrate.decode``), so the
        numbers equal separate runs at each threshold."""
        thresholds = sorted(thresholds or [self.t.eval_threshold])
        scored = self._predict(records, thresholds[0])
        results = {}
        for t in thresholds:
            total = decode(records, scored, lambda _lbl, t=t: t).total.as_dict()
            results[t] = {k: total[k] / 100 for k in ("p", "r", "f")}
        return results

    # ---------------------------------------------------------------- checkpointing
    def _state(self, step: int, best: float, best_step: int, elapsed: float, stale: int) -> dict[str, Any]:
        return {
            "step": step, "best_f": best, "best_step": best_step, "elapsed_s": elapsed, "stale_evals": stale,
            "student": self.student.gliner.state_dict(), "heads": self.heads.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "schedule": self.schedule.state_dict(), "curve_s": self.curve_s,
            "balancer": self.balancer.state_dict(), "rng": checkpoint.rng_state(),
        }  # fmt: skip

    def save_checkpoint(self, step: int, best: float, best_step: int, elapsed: float = 0.0, stale: int = 0) -> None:
        """Atomic write; ``elapsed`` is the training wall time so far, summed over resumed runs."""
        checkpoint.save(self.out, self.fingerprint, self._state(step, best, best_step, elapsed, stale))

    def load_checkpoint(self) -> tuple[int, float, int, float, int]:
        state = checkpoint.load(self.out, self.fingerprint, self.device)
        if state is None:
            return 0, -1.0, -1, 0.0, 0
        self.student.gliner.load_state_dict(state["student"])
        self.heads.load_state_dict(state["heads"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if "schedule" in state:
            self.schedule.load_state_dict(state["schedule"])
        self.curve_s = float(state.get("curve_s", 0.0))
        if "balancer" in state:
            self.balancer.load_state_dict(state["balancer"])
        checkpoint.set_rng_state(state["rng"])
        return (
            int(state["step"]), float(state["best_f"]), int(state["best_step"]),
            float(state.get("elapsed_s", 0.0)), int(state.get("stale_evals", 0)),
        )  # fmt: skip

    # ---------------------------------------------------------------------- the loop
    def run(self) -> dict[str, Any]:
        """Train until the schedule ends, the dev score stops improving (``patience`` evaluations)
        or the wall-time budget (``max_minutes``) is spent; keep the best dev model, then tune its
        threshold on dev. The budget clock counts training steps and dev evaluations, not the test
        scoring of the learning curves; with ``fit_to_budget`` the schedule ends where the budget does."""
        steps = self.steps
        start, best, best_step, elapsed_before, stale = self.load_checkpoint()
        stop = min(steps, self.t.stop_after) if self.t.stop_after else steps
        log_path = self.out / "log.jsonl"
        _truncate_log(log_path, start)
        retrieval_path = self.out / "retrieval.json"
        if start == 0 or not retrieval_path.exists():  # the untrained student and heads
            retrieval_path.write_text(json.dumps({"before": self.kg_retrieval(self.dev)}), encoding="utf8")
        t0, curve_before = time.time(), self.curve_s
        budget_s = self.t.max_minutes * 60 if self.t.max_minutes else math.inf

        def clock() -> float:  # the budget clock: this run's wall time less its curve scoring
            return elapsed_before + time.time() - t0 - (self.curve_s - curve_before)

        ended = "schedule"
        done = start
        bar = tqdm(range(start, stop), initial=start, total=steps, desc="distill", dynamic_ncols=True)
        with log_path.open("a", encoding="utf8") as log:
            for step in bar:
                t_step = time.perf_counter()
                parts = self.step(step)
                done = step + 1
                elapsed = clock()
                # step_s: the optimisation step alone (no dev evaluation), to compare b = 0 and b > 0 cost
                entry: dict[str, Any] = {
                    "step": done, "epoch": done / self.plan.per_epoch, **parts,
                    "step_s": time.perf_counter() - t_step, "elapsed_s": elapsed,
                }  # fmt: skip
                out_of_time = elapsed >= budget_s
                schedule_done = done >= self.schedule.horizon
                if self.dev and (done % self.eval_every == 0 or schedule_done or out_of_time):
                    self.batches.wait()
                    entry.update(self._eval_entry())
                    if entry["dev_f"] > best:
                        best, best_step, stale = entry["dev_f"], done, 0
                        self.pipeline().to_disk(self.out / "model-best")
                    else:
                        stale += 1
                    if self.t.fit_to_budget and done > start and not schedule_done:
                        pace = (clock() - elapsed_before) / (done - start)
                        entry["horizon"] = self.schedule.fit_to_budget(done, budget_s - clock(), pace)
                bar.set_postfix(loss=f"{parts['loss']:.2f}", dist=f"{parts['l_dist']:.3f}", best_f=f"{best:.3f}")
                log.write(json.dumps(entry) + "\n")
                log.flush()
                patience_out = bool(self.t.patience) and stale >= self.t.patience
                schedule_done = done >= self.schedule.horizon
                if done % self.checkpoint_every == 0 or done == stop or schedule_done or out_of_time or patience_out:
                    self.save_checkpoint(done, best, best_step, clock(), stale)
                if out_of_time or patience_out or schedule_done:
                    # a schedule fitted to the budget ends with it: the schedule's end is the designed one
                    ended = "schedule" if schedule_done else "max_minutes" if out_of_time else "patience"
                    break
        self.batches.close()
        budget_clock = clock()
        if done < self.schedule.horizon and ended == "schedule":
            return {"stopped_at": stop}
        self.pipeline().to_disk(self.out / "model-last")
        if not self.dev or best_step < 0:
            self.pipeline().to_disk(self.out / "model-best")
        retrieval = json.loads(retrieval_path.read_text(encoding="utf8"))
        retrieval["after"] = self.kg_retrieval(self.dev)  # the last student and heads
        retrieval_path.write_text(json.dumps(retrieval), encoding="utf8")
        tuned = self._tune_threshold() if self.dev and best_step >= 0 else {}
        this_run = time.time() - t0
        summary = RunSummary(
            system="kogner",
            steps=done,
            seed=self.t.seed,
            wall_s=elapsed_before + this_run,
            best_dev_f=tuned.get("dev_f", best if best_step >= 0 else None),
            best_step=best_step if best_step >= 0 else None,
            train_sentences=len(self.train),
            device=str(self.device),
            details={
                "a": self.t.a, "b": self.t.b, "dist_loss": self.t.dist_loss, "linked_share": self.linked_share,
                "loss_norm": self.t.loss_norm, "share_balance": self.t.share_balance,
                "block_weights": self.config.heads.block_weights if self.config.heads.standardise else None,
                "teacher_rows": self.config.heads.teacher_rows, "bank_center": self.config.heads.bank_center,
                "train_fraction": self.t.train_fraction, **_log_means(log_path), "kg_retrieval": retrieval,
                "scheduled_steps": steps, "schedule_horizon": self.schedule.horizon, "ended_by": ended,
                "epochs": done / self.plan.per_epoch, "budget_clock_s": budget_clock, "curve_s": self.curve_s,
                "precision": "bf16" if self.amp is not None else "fp32", "batch_size": self.t.batch_size,
                "bucket": self.t.bucket, "source_balance": self.t.source_balance,
                "epoch_sources": self.plan.shares(), "threshold": tuned.get("threshold", self.t.eval_threshold),
                "dev_f_by_threshold": tuned.get("by_threshold"),
                "prompt_thresholds": tuned.get("prompt_thresholds", {}), "calibration": tuned.get("by_prompt"),
                "dev_f_calibrated": tuned.get("dev_f_calibrated"), "dev_threshold": tuned.get("dev_threshold"),
                "silver_threshold": tuned.get("silver_threshold"),
                "wall_s_this_run": this_run, "peak_rss_mb": peak_rss_mb(),
                "threads": torch.get_num_threads(),
            },
        )  # fmt: skip
        summary.write(self.out)
        write_curves(log_path, self.out)
        return dataclasses.asdict(summary)

    def _eval_entry(self) -> dict[str, float]:
        """Dev (and, for the curves only, test) scores at the evaluation threshold."""
        entry = {f"dev_{k}": v for k, v in self.evaluate(self.dev)[self.t.eval_threshold].items()}
        if self.test:
            t0 = time.time()
            entry.update({f"test_{k}": v for k, v in self.evaluate(self.test)[self.t.eval_threshold].items()})
            self.curve_s += time.time() - t0
        return entry

    @contextlib.contextmanager
    def _student_from(self, pipeline_dir: Path) -> Iterator[None]:
        """Evaluate a saved pipeline's span model in place of the training student for a while."""
        saved = SpanModel.load(pipeline_dir / "kogner" / "model").to(self.device)
        saved.set_precision(self.t.precision)
        current, self.student = self.student, saved
        try:
            yield
        finally:
            self.student = current

    def score_model(self, pipeline_dir: Path, records: list[Record], threshold: float) -> dict[str, float]:
        """Exact-span P/R/F1 (0-1) of a saved pipeline's model on ``records`` at ``threshold``."""
        with self._student_from(pipeline_dir):
            return self.evaluate(records, [threshold])[threshold]

    def _tune_threshold(self) -> dict[str, Any]:
        """Pick the decision thresholds on dev for the best model (``training/calibrate.py``: the
        model's, and each prompt's where dev or the calibration split has enough spans) and save
        them in its config."""
        if not self.t.tune_threshold:
            return {}
        with self._student_from(self.out / "model-best"):
            grid = sorted(set(self.t.tune_threshold) | {self.t.eval_threshold})
            found = calibrate(
                self.dev, self._predict(self.dev, grid[0]), grid, self.t.eval_threshold,
                lambda lbl: label_prompt(lbl, self.label_table), self.t.calibrate_min_spans,
                self.calibration, self._predict(self.calibration, grid[0]) if self.calibration else None,
                self.t.fallback_threshold,
            )  # fmt: skip
            self.pipeline(threshold=found.threshold, prompt_thresholds=found.prompt_thresholds).to_disk(
                self.out / "model-best"
            )
        return dataclasses.asdict(found)


PREFETCH = ("auto", "on", "off")


def _prefetch_on(setting: str, device: torch.device) -> bool:
    """``auto``: build batches ahead only where the model runs on a GPU; on a CPU the collating
    thread would take cores from the step it is meant to overlap."""
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def _truncate_log(log_path: Path, step: int) -> None:
    """Keep only log entries up to the step training resumes from: steps after the last
    checkpoint are trained (and logged) again, and must not appear twice. A line torn by a kill
    mid-write is dropped too (its step is after the checkpoint, so it is trained again)."""
    if not log_path.exists():
        return
    if step == 0:
        log_path.unlink()
        return
    kept = []
    for line in log_path.read_text(encoding="utf8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # blank or torn
        if entry.get("step", 0) <= step:
            kept.append(line)
    log_path.write_text("".join(line + "\n" for line in kept), encoding="utf8")


def _fraction(records: list[Record], fraction: float, seed: int) -> list[Record]:
    """A seeded random ``fraction`` of the training sentences (the same subset for every b at one
    seed, so paired runs differ only in the loss), in corpus order."""
    if fraction >= 1:
        return records
    keep = sorted(random.Random(f"subset:{seed}").sample(range(len(records)), max(1, round(fraction * len(records)))))
    return [records[i] for i in keep]


def _log_means(log_path: Path) -> dict[str, float | None]:
    """From one read of the log (resumed runs included): the median seconds per optimisation step,
    the realised KG share (median over steps that carried linked spans) and linked spans per step."""
    rows = list(iter_log(log_path))
    times = [r["step_s"] for r in rows if "step_s" in r]
    shares = [r["dist_share"] for r in rows if r.get("linked_spans") and "dist_share" in r]
    linked = [r.get("linked_spans", 0) for r in rows]
    return {
        "median_step_s": float(np.median(times)) if times else None,
        "median_dist_share": float(np.median(shares)) if shares else None,
        "mean_linked_spans": float(np.mean(linked)) if linked else None,
    }


def iter_log(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def write_curves(log_path: Path, out: Path) -> None:
    """Learning curves: ``curves.json`` (dev/test F1 against steps, epochs and wall time) and
    ``curves.png`` (loss parts against step; dev and test F1 against training minutes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(iter_log(log_path))
    points = [
        {k: r.get(k) for k in ("step", "epoch", "elapsed_s", "dev_p", "dev_r", "dev_f", "test_p", "test_r", "test_f")}
        for r in rows
        if "dev_f" in r
    ]
    (out / "curves.json").write_text(json.dumps(points, indent=1), encoding="utf8")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [r["step"] for r in rows]
    for key in ("l_lang", "l_dist"):
        ax1.plot(steps, [r[key] for r in rows], label=key, linewidth=0.6)
    ax1.set_yscale("symlog")
    ax1.set_xlabel("step")
    ax1.legend()
    for key, label in (("dev_f", "dev"), ("test_f", "test")):
        pts = [(p["elapsed_s"] / 60, 100 * p[key]) for p in points if p.get(key) is not None]
        if pts:
            ax2.plot(*zip(*pts, strict=True), marker="o", markersize=3, label=label)
    ax2.set_xlabel("training wall time (min, evaluations included)")
    ax2.set_ylabel("exact-span F1 (%)")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)


_RETRIEVAL_KS = (1, 10)


def _tally(groups: dict[str, dict[str, float]], name: str, logits: torch.Tensor, target: torch.Tensor) -> None:
    """Add the spans of one kind (rows of ``logits`` against all its nodes) to group ``name``:
    top-k hits and chance (k / the kind's node count)."""
    tally = groups.setdefault(name, {"spans": 0})
    tally["spans"] += len(logits)
    for k, v in retrieval_counts([(logits, target)], _RETRIEVAL_KS).items():
        tally[f"top{k}"] = tally.get(f"top{k}", 0) + v
        tally[f"chance_top{k}"] = tally.get(f"chance_top{k}", 0.0) + len(logits) * min(1.0, k / logits.size(1))


def _percent(groups: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Hit and chance counts as % of each group's spans."""
    return {
        name: {"spans": t["spans"], **{k: 100 * v / t["spans"] for k, v in t.items() if k != "spans"}}
        for name, t in sorted(groups.items())
    }


def rescore_retrieval(run_dir: str | Path) -> dict[str, Any]:
    """Recompute a finished run's after-training retrieval from its last checkpoint (the weights
    ``after`` was measured on) with this code, e.g. for a per-kind breakdown a run predates; the
    top-1/top-10 must come out as stored. Updates ``retrieval.json`` and the run summary."""
    run = Path(run_dir)
    summary_path, retrieval_path = run / SUMMARY_FILE, run / "retrieval.json"
    meta_path = run / checkpoint.CHECKPOINT_META
    for path in (run / "config.cfg", summary_path, retrieval_path, run / checkpoint.CHECKPOINT, meta_path):
        if not path.is_file():
            raise ConfigError(f"{run} is not a finished distill run: {path.name} is missing")
    distiller = Distiller(load_config(run / "config.cfg"), run)
    # checked here, as a checkpoint of another config would be set aside by load_checkpoint
    if json.loads(meta_path.read_text(encoding="utf8")).get("fingerprint") != distiller.fingerprint:
        raise ConfigError(f"{run}: the checkpoint was not written under the run's config.cfg (with this code)")
    distiller.load_checkpoint()
    after = distiller.kg_retrieval(distiller.dev)
    retrieval = json.loads(retrieval_path.read_text(encoding="utf8"))
    stored = retrieval.get("after") or {}
    if after is None or any(abs(after[k] - stored.get(k, -1.0)) > 1e-6 for k in ("top1", "top10")):
        raise ConfigError(f"{run}: recomputed retrieval {after} differs from the stored {stored}")
    retrieval["after"] = after
    retrieval_path.write_text(json.dumps(retrieval), encoding="utf8")
    summary = json.loads(summary_path.read_text(encoding="utf8"))
    summary["details"]["kg_retrieval"] = retrieval
    summary_path.write_text(json.dumps(summary, indent=2), encoding="utf8")
    return retrieval


def distill(
    config_path: str | Path, output_dir: str | Path, overrides: dict[str, Any] | None = None, profile: str | None = None
) -> dict:
    """Load and check the config, then train (or resume) into ``output_dir``."""
    cfg = load_config(config_path, overrides, profile)
    check_config(cfg, config_path)
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    cfg.to_disk(Path(output_dir) / "config.cfg")
    return Distiller(cfg, output_dir).run()
