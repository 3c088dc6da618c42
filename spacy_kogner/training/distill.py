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

import json
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
from ..data.labels import label_prompt, load_label_table
from ..pipeline.gliner_compat import training_collator
from ..pipeline.span_model import SpanModel
from ..repro import peak_rss_mb, seed_everything
from ..run_summary import RunSummary
from . import checkpoint
from .batches import Record, batch_order, read_records
from .heads import DIST_LOSSES, DistillHeads, dist_loss

SECTIONS = ("paths", "model", "heads", "training")
SCHEDULERS = ("cosine", "linear")


@dataclass
class PathsSettings:
    """``[paths]``: the training data, the teacher and where the student starts from."""

    train: str
    dev: str
    teacher: str
    labels: str
    init_model: str


@dataclass
class ModelSettings:
    """``[model]``: the GLiNER span model built when ``init_model`` is an encoder."""

    max_width: int
    max_len: int
    hidden_size: int
    dropout: float


@dataclass
class HeadSettings:
    """``[heads]``: MLP_span / MLP_dist."""

    hidden: int
    shared: int
    dropout: float


@dataclass
class TrainingSettings:
    """``[training]``: the loop, the loss and its weights, evaluation and checkpoints."""

    seed: int
    steps: int
    batch_size: int
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
    eval_every: int
    checkpoint_every: int
    eval_threshold: float
    eval_batch_size: int
    max_train_sentences: int
    max_dev_sentences: int
    device: str
    stop_after: int
    num_threads: int

    def __post_init__(self) -> None:
        require(self.a >= 0 and self.b >= 0, f"training.a and training.b must be >= 0 (got a={self.a}, b={self.b})")
        require(
            self.dist_loss in DIST_LOSSES, f"training.dist_loss must be one of {DIST_LOSSES}, got {self.dist_loss!r}"
        )
        require(self.steps >= 1 and self.batch_size >= 1, "training.steps and training.batch_size must be >= 1")
        require(self.scheduler in SCHEDULERS, f"training.scheduler must be one of {SCHEDULERS}")
        require(self.eval_every >= 1 and self.checkpoint_every >= 1, "eval_every and checkpoint_every must be >= 1")


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
        seed_everything(t.seed)
        paths = self.config.paths
        self.label_table = load_label_table(paths.labels)
        self.train = read_records(paths.train, t.max_train_sentences)
        self.dev = read_records(paths.dev, t.max_dev_sentences) if paths.dev else []
        if not self.train:
            raise ConfigError(f"Training corpus {paths.train} has no sentences")
        m = self.config.model
        self.student = SpanModel.from_source(
            paths.init_model, max_width=m.max_width, max_len=m.max_len, hidden_size=m.hidden_size, dropout=m.dropout
        ).to(self.device)
        self.store = self._load_teacher(paths.teacher) if paths.teacher else None
        h = self.config.heads
        teacher_dim = self.store.dim if self.store is not None else 1
        self.heads = DistillHeads(
            self.student.hidden_size,
            teacher_dim,
            h.hidden,
            h.shared,
            h.dropout,
            freeze_teacher=t.dist_loss == "mse_frozen",
        ).to(self.device)
        self.collator = training_collator(self.student.gliner)
        self.optimizer = self._make_optimizer()
        self.scheduler = self._make_scheduler()
        self.linked_share = self._linked_share()
        self.fingerprint = checkpoint.run_fingerprint(cfg, self._teacher_file())
        # Re-seed after building: the heads' size depends on the teacher, and a b = 0 run must
        # see the same dropout masks and batches as its b > 0 counterpart.
        seed_everything(t.seed)

    # ------------------------------------------------------------------------ set-up
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
        return torch.optim.AdamW(groups, weight_decay=self.t.weight_decay)

    def _make_scheduler(self) -> torch.optim.lr_scheduler.LambdaLR:
        from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

        make = get_cosine_schedule_with_warmup if self.t.scheduler == "cosine" else get_linear_schedule_with_warmup
        return make(self.optimizer, int(self.t.warmup_ratio * self.t.steps), self.t.steps)

    def _linked_share(self) -> float:
        total = sum(len(r.ner) for r in self.train)
        linked = sum(1 for r in self.train for k in r.kge if k is not None and self._row(k) is not None)
        return linked / total if total else 0.0

    def _row(self, node_id: str) -> int | None:
        return self.store.row_of(node_id) if self.store is not None else None

    # ------------------------------------------------------------------------ one step
    def _batch(self, step: int) -> tuple[dict[str, Any], list[Record]]:
        idx = batch_order(len(self.train), self.t.batch_size, self.t.seed, step)
        records = [self.train[i] for i in idx]
        items = []
        for r in records:
            prompts = [label_prompt(lbl, self.label_table) for lbl in r.labels]
            random.shuffle(prompts)
            items.append({
                "tokenized_text": self.student.model_words(r.tokens),
                "ner": [[s, e, label_prompt(lbl, self.label_table)] for s, e, lbl in r.ner],
                "ner_labels": prompts,
            })  # fmt: skip
        return self.collator(items), records

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
        self.student.train()
        self.heads.train()
        batch, records = self._batch(step)
        inputs = {k: v.to(self.device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        where, rows = self._linked(records, inputs["span_idx"].size(1) // self.student.max_width)
        distil = self.t.b > 0 and bool(where)
        index = tuple(torch.tensor(x, device=self.device) for x in zip(*where, strict=True)) if distil else None
        l_lang, spans = self.student.train_forward(
            inputs, index, alpha=self.t.focal_alpha, gamma=self.t.focal_gamma, reduction=self.t.loss_reduction
        )
        l_dist = torch.zeros((), device=self.device)
        var = float("nan")
        if distil:
            assert self.store is not None
            h = torch.from_numpy(self.store.rows(rows)).to(self.device)  # only these rows are read
            student, teacher = self.heads(spans, h)
            l_dist = dist_loss(self.t.dist_loss, student, teacher, rows, self.t.temperature)
            if len(rows) > 1:
                var = float(teacher.detach().var(0).mean())
        loss = self.t.a * l_lang + self.t.b * l_dist
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, self.t.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return {
            "loss": loss.item(), "l_lang": l_lang.item(), "l_dist": l_dist.item(), "linked_spans": len(where),
            "teacher_var": var, "lr": self.scheduler.get_last_lr()[0],
        }  # fmt: skip

    # ------------------------------------------------------------------- evaluation
    def pipeline(self, corpora_labels: list[str] | None = None) -> Any:
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
                "threshold": self.t.eval_threshold, "batch_size": self.t.eval_batch_size,
                "max_width": self.student.max_width, "device": "auto",
            },
        )  # fmt: skip
        pipe.device = self.device
        pipe.model = self.student
        return nlp

    def evaluate(self, records: list[Record]) -> dict[str, float]:
        """Exact-span micro P/R/F1 (0-1); each corpus's sentences are prompted with that corpus's labels."""
        from spacy.tokens import Doc

        from ..evaluation.metrics import exact_scores

        self.student.train(False)
        by_corpus: dict[str, list[tuple[int, Record]]] = {}
        for i, r in enumerate(records):
            by_corpus.setdefault(r.corpus, []).append((i, r))
        gold, pred = [], []
        for items in by_corpus.values():
            nlp = self.pipeline(sorted({lbl for _, r in items for lbl in r.labels}))
            docs = [Doc(nlp.vocab, words=r.tokens) for _, r in items]
            for (i, r), doc in zip(items, nlp.pipe(docs, batch_size=self.t.eval_batch_size), strict=True):
                gold.extend((i, s, e + 1, lbl) for s, e, lbl in r.ner)
                pred.extend((i, ent.start, ent.end, ent.label_) for ent in doc.ents)
        total = exact_scores(gold, pred).total.as_dict()
        return {k: total[k] / 100 for k in ("p", "r", "f")}

    # ---------------------------------------------------------------- checkpointing
    def _state(self, step: int, best: float, best_step: int, elapsed: float) -> dict[str, Any]:
        return {
            "step": step, "best_f": best, "best_step": best_step, "elapsed_s": elapsed,
            "student": self.student.gliner.state_dict(), "heads": self.heads.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "rng": checkpoint.rng_state(),
        }  # fmt: skip

    def save_checkpoint(self, step: int, best: float, best_step: int, elapsed: float = 0.0) -> None:
        """Atomic write; ``elapsed`` is the training wall time so far, summed over resumed runs."""
        checkpoint.save(self.out, self.fingerprint, self._state(step, best, best_step, elapsed))

    def load_checkpoint(self) -> tuple[int, float, int, float]:
        state = checkpoint.load(self.out, self.fingerprint, self.device)
        if state is None:
            return 0, -1.0, -1, 0.0
        self.student.gliner.load_state_dict(state["student"])
        self.heads.load_state_dict(state["heads"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        checkpoint.set_rng_state(state["rng"])
        return int(state["step"]), float(state["best_f"]), int(state["best_step"]), float(state.get("elapsed_s", 0.0))

    # ---------------------------------------------------------------------- the loop
    def run(self) -> dict[str, Any]:
        steps = self.t.steps
        start, best, best_step, elapsed_before = self.load_checkpoint()
        stop = min(steps, self.t.stop_after) if self.t.stop_after else steps
        log_path = self.out / "log.jsonl"
        _truncate_log(log_path, start)
        t0 = time.time()
        bar = tqdm(range(start, stop), initial=start, total=steps, desc="distill", dynamic_ncols=True)
        with log_path.open("a", encoding="utf8") as log:
            for step in bar:
                t_step = time.perf_counter()
                parts = self.step(step)
                done = step + 1
                # step_s: the optimisation step alone (no dev evaluation), to compare b = 0 and b > 0 cost
                entry: dict[str, Any] = {"step": done, **parts, "step_s": time.perf_counter() - t_step}
                if self.dev and (done % self.t.eval_every == 0 or done == steps):
                    dev = self.evaluate(self.dev)
                    entry.update({f"dev_{k}": v for k, v in dev.items()})
                    if dev["f"] > best:
                        best, best_step = dev["f"], done
                        self.pipeline().to_disk(self.out / "model-best")
                bar.set_postfix(loss=f"{parts['loss']:.2f}", dist=f"{parts['l_dist']:.3f}", best_f=f"{best:.3f}")
                log.write(json.dumps(entry) + "\n")
                log.flush()
                if done % self.t.checkpoint_every == 0 or done == stop:
                    self.save_checkpoint(done, best, best_step, elapsed_before + time.time() - t0)
        if stop < steps:
            return {"stopped_at": stop}
        self.pipeline().to_disk(self.out / "model-last")
        if not self.dev or best_step < 0:
            self.pipeline().to_disk(self.out / "model-best")
        this_run = time.time() - t0
        summary = RunSummary(
            system="kogner",
            steps=steps,
            seed=self.t.seed,
            wall_s=elapsed_before + this_run,
            best_dev_f=best if best_step >= 0 else None,
            best_step=best_step if best_step >= 0 else None,
            train_sentences=len(self.train),
            device=str(self.device),
            details={
                "a": self.t.a, "b": self.t.b, "dist_loss": self.t.dist_loss, "linked_share": self.linked_share,
                "wall_s_this_run": this_run, "median_step_s": _median_step_s(log_path), "peak_rss_mb": peak_rss_mb(),
            },
        )  # fmt: skip
        summary.write(self.out)
        plot_log(log_path, self.out / "curves.png")
        return summary.__dict__


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


def _median_step_s(log_path: Path) -> float | None:
    """Median seconds per optimisation step over the whole log (resumed runs included)."""
    times = [entry["step_s"] for entry in iter_log(log_path) if "step_s" in entry]
    return float(np.median(times)) if times else None


def iter_log(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def plot_log(log_path: Path, png: Path) -> None:
    """Loss parts and dev F1 against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(iter_log(log_path))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    steps = [r["step"] for r in rows]
    for key in ("l_lang", "l_dist"):
        ax1.plot(steps, [r[key] for r in rows], label=key)
    ax1.set_yscale("symlog")
    ax1.set_xlabel("step")
    ax1.legend()
    dev = [(r["step"], r["dev_f"]) for r in rows if "dev_f" in r]
    if dev:
        ax2.plot(*zip(*dev, strict=True), marker="o")
    ax2.set_xlabel("step")
    ax2.set_ylabel("dev exact F1")
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def distill(
    config_path: str | Path, output_dir: str | Path, overrides: dict[str, Any] | None = None, profile: str | None = None
) -> dict:
    """Load and check the config, then train (or resume) into ``output_dir``."""
    cfg = load_config(config_path, overrides, profile)
    check_config(cfg, config_path)
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    cfg.to_disk(Path(output_dir) / "config.cfg")
    return Distiller(cfg, output_dir).run()
