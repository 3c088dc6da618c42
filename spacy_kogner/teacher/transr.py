"""Z'': logical node embeddings from the typed triples with PyKEEN's TransR (paper §2.2).

* **Ids map exactly.** PyKEEN's entity id *is* the KG row (``entity_to_id = {node_id: row}``) and
  its relation id is the KG relation index, so row i of Z'' belongs to ``kg.node_ids[i]`` with no
  re-labelling (PyKEEN would otherwise sort labels and drop unused ones).
* **Seeded triple split** (PyKEEN's ``split`` with its default clean-up, which moves triples so
  every entity and relation of val/test also occurs in training).
* **Evaluation**: PyKEEN's own ``RankBasedEvaluator``, filtered (train + val + test known triples
  are filtered out of the ranking), head and tail, on the test split (or a seeded subsample of it,
  ``eval_max_triples``, because scoring TransR against all 47k entities is the costly part on
  CPU; the number used is recorded). The **random-embedding baseline** is the same model before
  training (its seeded random initialisation), evaluated on the same triples the same way.
* **Nodes without training triples** (isolated in the KG) never get a positive training signal,
  only random pushes as negative samples; their Z'' row is set to **zeros** (an explicit "no
  logical information" vector) and counted in the metrics.
* ``PYSTOW_HOME`` must point inside the run's output folder *before* PyKEEN is imported (PyKEEN
  fixes its home directory at import time); ``set_pystow_home`` does that and the CLI calls it first.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ConfigError, require
from ..kg.graph import KnowledgeGraph


@dataclass
class TransRSettings:
    """The ``[transr]`` section: PyKEEN TransR sizes, training budget and evaluation sample."""

    embedding_dim: int
    relation_dim: int
    scoring_fct_norm: int
    epochs: int
    batch_size: int
    lr: float
    num_negs_per_pos: int
    train_frac: float
    val_frac: float
    eval_max_triples: int
    eval_batch_size: int

    def __post_init__(self) -> None:
        require(
            0 < self.train_frac and 0 < self.val_frac and self.train_frac + self.val_frac < 1,
            "[transr] need 0 < train_frac, 0 < val_frac, train_frac + val_frac < 1",
        )


METRIC_KEYS = {
    "mrr": ("both", "realistic", "inverse_harmonic_mean_rank"),
    "hits_at_1": ("both", "realistic", "hits_at_1"),
    "hits_at_3": ("both", "realistic", "hits_at_3"),
    "hits_at_10": ("both", "realistic", "hits_at_10"),
    "mean_rank": ("both", "realistic", "arithmetic_mean_rank"),
}


def set_pystow_home(folder: str | Path) -> Path:
    """Point pystow (and so PyKEEN) inside ``folder``; warn-free no-op if already set there."""
    home = Path(folder).resolve() / "pystow"
    home.mkdir(parents=True, exist_ok=True)
    os.environ["PYSTOW_HOME"] = str(home)
    return home


def _project(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``x @ m`` over broadcast batch dims, as one GEMM when x and m broadcast against each other.

    PyKEEN's TransR projects with ``einsum("...e,...er->...r")``; when all entities (1, n, e) meet a
    batch of relation matrices (b, 1, e, r) that einsum expands the broadcast and runs ~40x slower
    on CPU than contracting with separate batch letters, which is what this does. Same numbers.
    """
    batch = torch.broadcast_shapes(x.shape[:-1], m.shape[:-2])
    nd = len(batch)
    xb = x.reshape((1,) * (nd - (x.dim() - 1)) + tuple(x.shape))
    mb = m.reshape((1,) * (nd - (m.dim() - 2)) + tuple(m.shape))
    letters = "abcdfghijklmnopq"
    x_letters = "".join(letters[i] for i in range(nd) if xb.shape[i] != 1)
    m_letters = "".join(letters[i] for i in range(nd) if mb.shape[i] != 1)
    out_letters = "".join(letters[i] for i in range(nd) if xb.shape[i] != 1 or mb.shape[i] != 1)
    x_sq = xb.reshape([s for s in xb.shape[:-1] if s != 1] + [xb.shape[-1]])
    m_sq = mb.reshape([s for s in mb.shape[:-2] if s != 1] + list(mb.shape[-2:]))
    out = torch.einsum(f"{x_letters}y,{m_letters}yz->{out_letters}z", x_sq, m_sq)
    return out.reshape(tuple(batch) + (m.shape[-1],))


def fast_transr_class() -> type:
    """PyKEEN's ``TransR`` with the same interaction computed by ``_project`` (see there).

    Built lazily so that importing this module does not import PyKEEN (``PYSTOW_HOME`` first).
    """
    from pykeen.models import TransR
    from pykeen.nn.modules import TransRInteraction
    from pykeen.utils import clamp_norm, negative_norm_of_sum

    class FastTransRInteraction(TransRInteraction):
        def forward(self, h: torch.Tensor, r: tuple[torch.Tensor, torch.Tensor], t: torch.Tensor) -> torch.Tensor:
            r, m_r = r
            h_bot = clamp_norm(_project(h, m_r), p=self.p, dim=-1, maxnorm=self.max_projection_norm)
            t_bot = clamp_norm(_project(t, m_r), p=self.p, dim=-1, maxnorm=self.max_projection_norm)
            return negative_norm_of_sum(h_bot, r, -t_bot, p=self.p, power_norm=self.power_norm)

    class FastTransR(TransR):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            old = self.interaction
            self.interaction = FastTransRInteraction(
                p=old.p, power_norm=old.power_norm, max_projection_norm=old.max_projection_norm
            )

    return FastTransR


def _train_slcwa(model: Any, triples: torch.Tensor, cfg: TransRSettings, *, seed: int, progress: bool) -> list[float]:
    """Stochastic local closed-world training with PyKEEN's sampler, loss and constraints.

    A plain loop instead of ``SLCWATrainingLoop``: on 2 CPU cores the latter's data loading cost
    several times the model's own work. Shuffling and negatives come from seeded generators.
    """
    from pykeen.sampling import BasicNegativeSampler
    from tqdm.auto import tqdm

    sampler = BasicNegativeSampler(
        mapped_triples=triples,
        num_entities=model.num_entities,
        num_relations=model.num_relations,
        num_negs_per_pos=int(cfg.num_negs_per_pos),
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=float(cfg.lr))
    batch_size = int(cfg.batch_size)
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    bar = tqdm(range(int(cfg.epochs)), desc="Z'': TransR", unit="epoch", disable=not progress)
    for _ in bar:
        model.train()
        order = torch.randperm(triples.shape[0], generator=gen)
        total, count = 0.0, 0
        for start in range(0, order.numel(), batch_size):
            positive = triples[order[start : start + batch_size]]
            negative = sampler.corrupt_batch(positive)
            pos_scores = model.score_hrt(positive)
            neg_scores = model.score_hrt(negative.view(-1, 3)).view(positive.shape[0], -1)
            loss = model.loss.process_slcwa_scores(pos_scores, neg_scores)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            model.post_parameter_update()
            total += float(loss.detach()) * positive.shape[0]
            count += positive.shape[0]
        losses.append(total / max(count, 1))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    bar.close()
    model.eval()
    return losses


def _metrics(result: Any) -> dict[str, float]:
    return {name: float(result.get_metric(".".join(key))) for name, key in METRIC_KEYS.items()}


def train_transr(
    kg: KnowledgeGraph, cfg: TransRSettings, *, seed: int, progress: bool = True
) -> tuple[np.ndarray, dict[str, Any]]:
    """Train TransR on the KG's triples; return (Z'' [M, embedding_dim] float32, metrics)."""
    if "PYSTOW_HOME" not in os.environ:
        raise RuntimeError("Set PYSTOW_HOME (teacher.transr.set_pystow_home) before training TransR")
    from pykeen.evaluation import RankBasedEvaluator
    from pykeen.triples import TriplesFactory

    start = time.perf_counter()
    if kg.num_edges == 0:
        raise ConfigError("TransR needs at least one edge; the KG has none")
    triples = torch.from_numpy(kg.triples())
    factory = TriplesFactory(
        mapped_triples=triples,
        entity_to_id={node_id: row for row, node_id in enumerate(kg.node_ids)},
        relation_to_id={rel: i for i, rel in enumerate(kg.relations)},
        num_entities=kg.num_nodes,
        num_relations=len(kg.relations),
    )
    train_frac, val_frac = float(cfg.train_frac), float(cfg.val_frac)
    train, val, test = factory.split([train_frac, val_frac, 1.0 - train_frac - val_frac], random_state=seed)
    eval_triples = test.mapped_triples
    max_eval = int(cfg.eval_max_triples)
    if 0 < max_eval < eval_triples.shape[0]:
        gen = torch.Generator().manual_seed(seed)
        pick = torch.randperm(eval_triples.shape[0], generator=gen)[:max_eval].sort().values
        eval_triples = eval_triples[pick]

    torch.manual_seed(seed)
    model = fast_transr_class()(
        triples_factory=train,
        embedding_dim=int(cfg.embedding_dim),
        relation_dim=int(cfg.relation_dim),
        scoring_fct_norm=int(cfg.scoring_fct_norm),
        random_seed=seed,
    )
    evaluator = RankBasedEvaluator(filtered=True)
    filters = [train.mapped_triples, val.mapped_triples]
    eval_kwargs = {
        "additional_filter_triples": filters,
        "batch_size": int(cfg.eval_batch_size),
        "use_tqdm": progress,
    }
    t0 = time.perf_counter()
    random_result = _metrics(evaluator.evaluate(model, eval_triples, **eval_kwargs))
    eval_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    losses = _train_slcwa(model, train.mapped_triples, cfg, seed=seed, progress=progress)
    train_seconds = time.perf_counter() - t0
    model.eval()
    t0 = time.perf_counter()
    trained_result = _metrics(evaluator.evaluate(model, eval_triples, **eval_kwargs))
    eval_seconds += time.perf_counter() - t0

    with torch.no_grad():
        z2 = model.entity_representations[0](indices=None).detach().cpu().numpy().astype(np.float32)
    in_train = np.zeros(kg.num_nodes, dtype=bool)
    train_np = train.mapped_triples.numpy()
    in_train[train_np[:, 0]] = True
    in_train[train_np[:, 2]] = True
    z2[~in_train] = 0.0
    no_triples = int((kg.degree() == 0).sum())
    metrics = {
        "triples": {
            "train": int(train.num_triples),
            "val": int(val.num_triples),
            "test": int(test.num_triples),
            "evaluated": int(eval_triples.shape[0]),
        },
        "test_filtered": {"transr": trained_result, "random": random_result},
        "beats_random": bool(trained_result["mrr"] > random_result["mrr"]),
        "loss_per_epoch": [float(x) for x in (losses or [])],
        "nodes_without_triples": no_triples,
        "nodes_without_training_triples": int((~in_train).sum()),
        "rows_for_nodes_without_training_triples": "zeros",
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "seconds": time.perf_counter() - start,
    }
    return z2, metrics
