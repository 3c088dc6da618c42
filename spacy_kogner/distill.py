"""KoGNER distillation: train the GLiNER student with L = a·L_lang + b·L_dist.

* L_lang is GLiNER's own span loss (focal BCE over span × label pairs), computed by the model's
  forward pass; the *same* pass returns the span vectors before label scoring
  (``span_rep_layer`` output, ``[B, L, K, D]``), so distillation costs no second encoder pass.
* L_dist pulls the span vectors of KG-linked training spans towards the teacher's rows of
  H = [Z, Z', Z''] through two MLPs into a shared space. ``dist_loss`` picks the form:
  ``mse`` (the paper: both MLPs trained; has a collapsed trivial minimum), ``mse_frozen``
  (MSE to a fixed random projection of H: cannot collapse) or ``infonce`` (normalised vectors,
  in-batch contrastive loss over linked spans; collapse costs log N). The per-dimension
  variance of the projected teacher vectors is logged to watch for collapse.
* b = 0 is plain GLiNER fine-tuning on the same data, steps and seed: the ablation.

Training is resumable: a checkpoint (weights, optimizer, scheduler, RNG states, step; the data
order is a pure function of seed and step) is written atomically every ``checkpoint_every``
steps, and the same command continues from it.
"""

from __future__ import annotations

import json
import math
import os
import random
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .config import ConfigError, check_known_keys, load_config
from .data.labels import label_prompt, load_label_table
from .data.readers import corpus_label_sets, gliner_record_to_sentence
from .model import DistillHeads, SpanModel
from .teacher.pipeline import seed_everything

DIST_LOSSES = ("mse", "mse_frozen", "infonce")
SECTIONS = {
    "paths": {"train", "dev", "teacher", "labels", "init_model"},
    "model": {"max_width", "max_len", "hidden_size", "dropout"},
    "heads": {"hidden", "shared", "dropout"},
    "training": {
        "seed", "steps", "batch_size", "lr_encoder", "lr_others", "weight_decay", "warmup_ratio", "scheduler",
        "grad_clip", "a", "b", "dist_loss", "temperature", "focal_alpha", "focal_gamma", "loss_reduction",
        "eval_every", "checkpoint_every", "eval_threshold", "eval_batch_size", "max_train_sentences",
        "max_dev_sentences", "device", "stop_after", "num_threads",
    },
}  # fmt: skip


@dataclass
class Record:
    """One training sentence: tokens, gold spans (inclusive ends), KG links, the corpus label set."""

    tokens: list[str]
    ner: list[tuple[int, int, str]]
    kge: list[str | None]
    labels: list[str]
    corpus: str


def check_config(cfg: dict[str, Any], path: str | Path) -> None:
    """Unknown sections/keys and impossible values fail before any work starts."""
    for section, keys in SECTIONS.items():
        if section not in cfg:
            raise ConfigError(f"{path}: missing section [{section}]")
        check_known_keys(cfg[section], keys, section)
    extra = set(cfg) - set(SECTIONS)
    if extra:
        raise ConfigError(f"{path}: unknown section(s) {sorted(extra)}")
    t = cfg["training"]
    if t["a"] < 0 or t["b"] < 0:
        raise ConfigError(f"training.a and training.b must be >= 0 (got a={t['a']}, b={t['b']})")
    if t["dist_loss"] not in DIST_LOSSES:
        raise ConfigError(f"training.dist_loss must be one of {DIST_LOSSES}, got {t['dist_loss']!r}")
    if t["steps"] < 1 or t["batch_size"] < 1:
        raise ConfigError("training.steps and training.batch_size must be >= 1")
    teacher = cfg["paths"]["teacher"]
    if t["b"] > 0 and not teacher:
        raise ConfigError("training.b > 0 needs paths.teacher (an H store written by `teacher`)")
    if teacher and not Path(teacher).is_dir():
        raise ConfigError(f"Teacher H store not found: {teacher} (run `python -m spacy_kogner teacher` first)")


def read_records(path: str | Path, limit: int = 0) -> list[Record]:
    """Training-ready GLiNER JSON (see ``spacy_kogner.data.readers``) with per-corpus label sets."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Training corpus not found: {path}")
    raw = json.loads(path.read_text(encoding="utf8"))
    sentences = [gliner_record_to_sentence(rec, rec.get("corpus", path.stem), path, i) for i, rec in enumerate(raw)]
    seen_sets = corpus_label_sets(sentences)
    records = []
    for rec, sent in zip(raw, sentences, strict=True):
        labels = list(rec.get("labels") or seen_sets.get(sent.corpus, []))
        spans = [s for s in sent.spans]
        records.append(
            Record(
                tokens=sent.tokens,
                ner=[(s.start, s.end - 1, s.label) for s in spans],
                kge=[s.kge for s in spans],
                labels=labels,
                corpus=sent.corpus,
            )
        )
    return records[:limit] if limit else records


def batch_order(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Indices of the examples of ``step``: a pure function of (seed, step), so resume needs no state."""
    per_epoch = max(1, n // batch_size)
    epoch, offset = divmod(step, per_epoch)
    perm = np.random.default_rng(seed + epoch).permutation(n)
    return perm[offset * batch_size : (offset + 1) * batch_size].tolist()


def dist_loss(
    kind: str, student: torch.Tensor, teacher: torch.Tensor, nodes: list[int], temperature: float
) -> torch.Tensor:
    """L_dist over the linked spans of a batch (summed over spans, like GLiNER's summed L_lang)."""
    if kind in ("mse", "mse_frozen"):
        return F.mse_loss(student, teacher, reduction="none").mean(-1).sum()
    s = F.normalize(student, dim=-1)
    t = F.normalize(teacher, dim=-1)
    logits = s @ t.T / temperature
    ids = torch.tensor(nodes, device=logits.device)
    positive = (ids.unsqueeze(0) == ids.unsqueeze(1)).float()
    log_prob = logits.log_softmax(-1)
    return -((log_prob * positive).sum(-1) / positive.sum(-1)).sum()


class Distiller:
    """Owns the student, the heads, the teacher store and the loop; see the module docstring."""

    def __init__(self, cfg: dict[str, Any], output_dir: str | Path) -> None:
        self.cfg = cfg
        self.t = cfg["training"]
        self.out = Path(output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        if self.t["num_threads"]:
            torch.set_num_threads(int(self.t["num_threads"]))
        self.device = torch.device(
            self.t["device"] if self.t["device"] != "cuda" or torch.cuda.is_available() else "cpu"
        )
        seed_everything(self.t["seed"])
        paths = cfg["paths"]
        self.label_table = load_label_table(paths["labels"])
        self.train = read_records(paths["train"], self.t["max_train_sentences"])
        self.dev = read_records(paths["dev"], self.t["max_dev_sentences"]) if paths["dev"] else []
        if not self.train:
            raise ConfigError(f"Training corpus {paths['train']} has no sentences")
        m = cfg["model"]
        self.student = SpanModel.from_source(
            paths["init_model"],
            max_width=m["max_width"],
            max_len=m["max_len"],
            hidden_size=m["hidden_size"],
            dropout=m["dropout"],
        ).to(self.device)
        self.store = self._load_teacher(paths["teacher"]) if paths["teacher"] else None
        h = cfg["heads"]
        teacher_dim = self.store.dim if self.store is not None else 1
        self.heads = DistillHeads(
            int(self.student.config.hidden_size),
            teacher_dim,
            h["hidden"],
            h["shared"],
            h["dropout"],
            freeze_teacher=self.t["dist_loss"] == "mse_frozen",
        ).to(self.device)
        self.collator = self._make_collator()
        self.optimizer = self._make_optimizer()
        self.scheduler = self._make_scheduler()
        self.linked_share = self._linked_share()
        self.fingerprint = run_fingerprint(cfg)
        # Re-seed after building: the heads' size depends on the teacher, and a b = 0 run must
        # see the same dropout masks and batches as its b > 0 counterpart.
        seed_everything(self.t["seed"])

    # ------------------------------------------------------------------------ set-up
    @staticmethod
    def _load_teacher(path: str) -> Any:
        from .teacher.store import HStore

        return HStore.load(path)

    def _make_collator(self) -> Any:
        from gliner.data_processing.collator import SpanDataCollator

        return SpanDataCollator(self.student.config, data_processor=self.student.gliner.data_processor)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        encoder = self.student.gliner.model.token_rep_layer.bert_layer
        enc_ids = {id(p) for p in encoder.parameters()}
        others = [p for p in self.student.gliner.parameters() if id(p) not in enc_ids]
        others += [p for p in self.heads.parameters() if p.requires_grad]
        groups = [
            {"params": list(encoder.parameters()), "lr": self.t["lr_encoder"]},
            {"params": others, "lr": self.t["lr_others"]},
        ]
        return torch.optim.AdamW(groups, weight_decay=self.t["weight_decay"])

    def _make_scheduler(self) -> torch.optim.lr_scheduler.LambdaLR:
        steps = self.t["steps"]
        warmup = int(self.t["warmup_ratio"] * steps)
        cosine = self.t["scheduler"] == "cosine"

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / max(1, warmup)
            progress = (step - warmup) / max(1, steps - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress))) if cosine else max(0.0, 1 - progress)

        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)

    def _linked_share(self) -> float:
        total = sum(len(r.ner) for r in self.train)
        linked = sum(1 for r in self.train for k in r.kge if k is not None and self._row(k) is not None)
        return linked / total if total else 0.0

    def _row(self, node_id: str) -> int | None:
        return self.store.row_of(node_id) if self.store is not None else None

    # ------------------------------------------------------------------------ one step
    def _batch(self, step: int) -> tuple[dict[str, Any], list[Record]]:
        idx = batch_order(len(self.train), self.t["batch_size"], self.t["seed"], step)
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
        self.student.gliner.train()
        self.heads.train()
        batch, records = self._batch(step)
        inputs = {k: v.to(self.device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        where, rows = self._linked(records, inputs["span_idx"].size(1) // self.student.max_width)
        distil = self.t["b"] > 0 and bool(where)
        index = tuple(torch.tensor(x, device=self.device) for x in zip(*where, strict=True)) if distil else None
        l_lang, spans = self.student.train_forward(
            inputs,
            index,
            alpha=self.t["focal_alpha"],
            gamma=self.t["focal_gamma"],
            reduction=self.t["loss_reduction"],
        )
        l_dist = torch.zeros((), device=self.device)
        var = float("nan")
        if distil:
            h = torch.from_numpy(self.store.rows(rows)).to(self.device)  # only these rows are read
            student, teacher = self.heads(spans, h)
            l_dist = dist_loss(self.t["dist_loss"], student, teacher, rows, self.t["temperature"])
            if len(rows) > 1:
                var = float(teacher.detach().var(0).mean())
        loss = self.t["a"] * l_lang + self.t["b"] * l_dist
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, self.t["grad_clip"])
        self.optimizer.step()
        self.scheduler.step()
        return {
            "loss": loss.item(), "l_lang": l_lang.item(), "l_dist": l_dist.item(), "linked_spans": len(where),
            "teacher_var": var, "lr": self.scheduler.get_last_lr()[0],
        }  # fmt: skip

    # ------------------------------------------------------------------- evaluation
    def pipeline(self, corpora_labels: list[str] | None = None) -> Any:
        """A spaCy pipeline around the current student (what ``model-best`` will be)."""
        import spacy

        labels = corpora_labels or sorted({lbl for r in self.train for lbl in r.labels})
        nlp = spacy.blank("en")
        pipe = nlp.add_pipe(
            "kogner",
            config={
                "labels": [{"label": lbl, "prompt": label_prompt(lbl, self.label_table)} for lbl in labels],
                "threshold": self.t["eval_threshold"], "batch_size": self.t["eval_batch_size"],
                "max_width": self.student.max_width, "device": str(self.device),
            },
        )  # fmt: skip
        pipe.model = self.student
        return nlp

    def evaluate(self, records: list[Record]) -> dict[str, float]:
        """Exact-span micro P/R/F1 (0-1); each corpus's sentences are prompted with that corpus's labels."""
        from spacy.tokens import Doc

        from .evaluate import exact_scores

        self.student.gliner.eval()
        by_corpus: dict[str, list[tuple[int, Record]]] = {}
        for i, r in enumerate(records):
            by_corpus.setdefault(r.corpus, []).append((i, r))
        gold, pred = [], []
        for items in by_corpus.values():
            nlp = self.pipeline(sorted({lbl for _, r in items for lbl in r.labels}))
            docs = [Doc(nlp.vocab, words=r.tokens) for _, r in items]
            for (i, r), doc in zip(items, nlp.pipe(docs, batch_size=self.t["eval_batch_size"]), strict=True):
                gold.extend((i, s, e + 1, lbl) for s, e, lbl in r.ner)
                pred.extend((i, ent.start, ent.end, ent.label_) for ent in doc.ents)
        total = exact_scores(gold, pred).total.as_dict()
        return {k: total[k] / 100 for k in ("p", "r", "f")}

    # ---------------------------------------------------------------- checkpointing
    def _state(self, step: int, best: float, best_step: int, elapsed: float) -> dict[str, Any]:
        return {
            "step": step, "best_f": best, "best_step": best_step, "elapsed_s": elapsed,
            "fingerprint": self.fingerprint,
            "student": self.student.gliner.state_dict(), "heads": self.heads.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "rng": {
                "python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            },
        }  # fmt: skip

    def save_checkpoint(self, step: int, best: float, best_step: int, elapsed: float = 0.0) -> None:
        """Atomic write; ``elapsed`` is the training wall time so far, summed over resumed runs."""
        tmp = self.out / "checkpoint.pt.tmp"
        torch.save(self._state(step, best, best_step, elapsed), tmp)
        os.replace(tmp, self.out / "checkpoint.pt")

    def load_checkpoint(self) -> tuple[int, float, int, float]:
        path = self.out / "checkpoint.pt"
        if not path.exists():
            return 0, -1.0, -1, 0.0
        state = torch.load(path, map_location=self.device, weights_only=False)
        if state.get("fingerprint") != self.fingerprint:
            # A re-run after the config or the data changed (spacy project re-runs the step then)
            # must train again, not finish the old run.
            print(f"{path} was made with another config or other data: starting a new run", file=sys.stderr)
            path.unlink()
            return 0, -1.0, -1, 0.0
        self.student.gliner.load_state_dict(state["student"])
        self.heads.load_state_dict(state["heads"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        torch.set_rng_state(state["rng"]["torch"])
        return state["step"], state["best_f"], state["best_step"], float(state.get("elapsed_s", 0.0))

    # ---------------------------------------------------------------------- the loop
    def run(self) -> dict[str, Any]:
        steps = self.t["steps"]
        start, best, best_step, elapsed_before = self.load_checkpoint()
        stop = min(steps, self.t["stop_after"]) if self.t["stop_after"] else steps
        log_path = self.out / "log.jsonl"
        if start == 0 and log_path.exists():
            log_path.unlink()
        t0 = time.time()
        bar = tqdm(range(start, stop), initial=start, total=steps, desc="distill", dynamic_ncols=True)
        with log_path.open("a", encoding="utf8") as log:
            for step in bar:
                t_step = time.perf_counter()
                parts = self.step(step)
                done = step + 1
                # step_s: the optimisation step alone (no dev evaluation), to compare b = 0 and b > 0 cost
                entry: dict[str, Any] = {"step": done, **parts, "step_s": time.perf_counter() - t_step}
                if self.dev and (done % self.t["eval_every"] == 0 or done == steps):
                    dev = self.evaluate(self.dev)
                    entry.update({f"dev_{k}": v for k, v in dev.items()})
                    if dev["f"] > best:
                        best, best_step = dev["f"], done
                        self.pipeline().to_disk(self.out / "model-best")
                bar.set_postfix(loss=f"{parts['loss']:.2f}", dist=f"{parts['l_dist']:.3f}", best_f=f"{best:.3f}")
                log.write(json.dumps(entry) + "\n")
                log.flush()
                if done % self.t["checkpoint_every"] == 0 or done == stop:
                    self.save_checkpoint(done, best, best_step, elapsed_before + time.time() - t0)
        if stop < steps:
            return {"stopped_at": stop}
        self.pipeline().to_disk(self.out / "model-last")
        if not self.dev or best_step < 0:
            self.pipeline().to_disk(self.out / "model-best")
        this_run = time.time() - t0
        metrics = {
            "steps": steps, "seed": self.t["seed"], "a": self.t["a"], "b": self.t["b"],
            "dist_loss": self.t["dist_loss"], "best_dev_f": best, "best_step": best_step,
            "train_sentences": len(self.train), "linked_share": self.linked_share,
            "wall_s": elapsed_before + this_run, "wall_s_this_run": this_run,
            "median_step_s": _median_step_s(log_path), "peak_rss_mb": _peak_rss_mb(), "device": str(self.device),
        }  # fmt: skip
        (self.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        plot_log(log_path, self.out / "curves.png")
        return metrics


# Settings that do not change what a run computes: a checkpoint stays valid across them.
RESUME_IGNORED = ("stop_after", "num_threads", "device", "eval_batch_size")


def _content_hash(path: str | Path) -> str:
    """sha256 of a file, or of every file under a folder (names and contents)."""
    from .teacher.graph import file_sha256, json_sha256

    path = Path(path)
    if path.is_dir():
        return json_sha256({str(p.relative_to(path)): file_sha256(p) for p in sorted(path.rglob("*")) if p.is_file()})
    return file_sha256(path) if path.is_file() else "missing"


def run_fingerprint(cfg: dict[str, Any]) -> str:
    """What a checkpoint belongs to: the config (less ``RESUME_IGNORED``) and the content of the
    training data, dev data, label table and teacher H, so that a resume never mixes two runs."""
    from .teacher.graph import json_sha256
    from .teacher.store import H_FILE

    training = {k: v for k, v in cfg["training"].items() if k not in RESUME_IGNORED}
    paths = cfg["paths"]
    files = {key: _content_hash(paths[key]) for key in ("train", "dev", "labels") if paths.get(key)}
    if paths.get("teacher"):
        files["teacher"] = _content_hash(Path(paths["teacher"]) / H_FILE)
    return json_sha256({"config": {**cfg, "training": training}, "files": files})


def _median_step_s(log_path: Path) -> float | None:
    """Median seconds per optimisation step over the whole log (resumed runs included)."""
    times = [entry["step_s"] for entry in iter_log(log_path) if "step_s" in entry]
    return float(np.median(times)) if times else None


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


def distill(config_path: str | Path, output_dir: str | Path, overrides: dict[str, Any] | None = None) -> dict:
    """Load and check the config, then train (or resume) into ``output_dir``."""
    cfg = load_config(config_path, overrides)
    check_config(cfg, config_path)
    (Path(output_dir)).mkdir(parents=True, exist_ok=True)
    cfg.to_disk(Path(output_dir) / "config.cfg")
    return Distiller(cfg, output_dir).run()
