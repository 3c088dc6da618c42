"""Z': a Graph Transformer (PyG ``TransformerConv``, Shi et al. 2020) pretrained as a node-kind
classifier on (Z, E, Y), then run once over the whole graph (paper §2.2: Z' = GNN_pre(Z, E; K)).

Design choices, and why:

* **Undirected, typed message passing.** Every KG edge is used in both directions, each direction
  with its own learned relation embedding fed to the attention as ``edge_attr``. Otherwise a
  Biological Process node would never hear from the genes that participate in it, and the model
  could not tell "interacts" from "regulates".
* **Name masking.** Hetionet kinds are easy to guess from names alone, so a classifier could ignore
  the graph. During pretraining a seeded random share of nodes (``name_mask_rate``) has its name
  features replaced by zeros plus a "masked" flag each epoch, which forces the model to also
  read the neighbourhood. Evaluation uses the real names; a second "names masked" test score
  shows what the graph alone recovers.
* **Z' is the last hidden layer** (the output of the last ``TransformerConv`` after its activation),
  not the logits: it keeps structure the kind labels do not need.
* **Baselines on the same split:** the majority kind of the training nodes, and an MLP on Z alone
  (same hidden size and depth, same optimiser and early stopping, no edges, no masking). The MLP
  gets its own learning rate and epoch budget (``baseline_*``): an epoch costs it a fraction of a
  Graph Transformer epoch, so it is trained to convergence rather than held to the GNN's budget.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import require
from ..kg.graph import KnowledgeGraph


@dataclass
class GNNSettings:
    """The ``[gnn]`` section: the Graph Transformer and its MLP-on-Z baseline."""

    layers: int
    hidden: int
    heads: int
    dropout: float
    attention_dropout: float
    relation_dim: int
    lr: float
    weight_decay: float
    max_epochs: int
    patience: int
    name_mask_rate: float
    train_frac: float
    val_frac: float
    baseline_lr: float
    baseline_max_epochs: int

    def __post_init__(self) -> None:
        require(
            self.hidden % self.heads == 0, f"[gnn] hidden ({self.hidden}) must be divisible by heads ({self.heads})"
        )
        require(
            0 < self.train_frac and 0 < self.val_frac and self.train_frac + self.val_frac < 1,
            "[gnn] need 0 < train_frac and train_frac + val_frac < 1 (the rest is test)",
        )
        require(0 <= self.name_mask_rate < 1, "[gnn] name_mask_rate must be in [0, 1)")


@dataclass
class NodeSplit:
    """Seeded train/val/test node rows (disjoint, covering every node)."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor

    @classmethod
    def make(cls, num_nodes: int, train_frac: float, val_frac: float, seed: int) -> NodeSplit:
        gen = torch.Generator().manual_seed(seed)
        perm = torch.randperm(num_nodes, generator=gen)
        n_train = int(round(train_frac * num_nodes))
        n_val = int(round(val_frac * num_nodes))
        return cls(
            train=perm[:n_train].sort().values,
            val=perm[n_train : n_train + n_val].sort().values,
            test=perm[n_train + n_val :].sort().values,
        )


def undirected_typed_edges(kg: KnowledgeGraph) -> tuple[torch.Tensor, torch.Tensor]:
    """Both directions of every edge; the reverse of relation r gets id ``r + R``."""
    ei = torch.from_numpy(kg.edge_index)
    et = torch.from_numpy(kg.edge_type)
    edge_index = torch.cat([ei, ei.flip(0)], dim=1)
    edge_rel = torch.cat([et, et + len(kg.relations)])
    return edge_index, edge_rel


def masked_input(z: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Z with masked rows zeroed and a trailing 0/1 "name masked" flag column."""
    flag = torch.zeros(z.shape[0], 1, dtype=z.dtype) if mask is None else mask.to(z.dtype).unsqueeze(1)
    return torch.cat([z * (1.0 - flag), flag], dim=1)


class GraphTransformer(nn.Module):
    """Input projection → K TransformerConv layers (typed edges) → kind classifier."""

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        num_classes: int,
        *,
        layers: int,
        heads: int,
        dropout: float,
        attention_dropout: float,
        num_edge_types: int,
        relation_dim: int,
    ) -> None:
        super().__init__()
        from torch_geometric.nn import TransformerConv

        self.input = nn.Linear(in_dim, hidden)
        self.relation = nn.Embedding(num_edge_types, relation_dim) if relation_dim > 0 else None
        self.convs = nn.ModuleList(
            TransformerConv(
                hidden,
                hidden // heads,
                heads=heads,
                concat=True,
                dropout=attention_dropout,
                edge_dim=relation_dim if relation_dim > 0 else None,
                root_weight=True,
            )
            for _ in range(layers)
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_classes)

    def embed(self, x: torch.Tensor, edge_index: torch.Tensor, edge_rel: torch.Tensor) -> torch.Tensor:
        """The last hidden layer: this is Z'."""
        h = self.dropout(torch.relu(self.input(x)))
        edge_attr = self.relation(edge_rel) if self.relation is not None else None
        for i, conv in enumerate(self.convs):
            h = torch.relu(conv(h, edge_index, edge_attr))
            if i < len(self.convs) - 1:
                h = self.dropout(h)
        return h

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_rel: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.embed(x, edge_index, edge_rel)))


class NameMLP(nn.Module):
    """The no-graph baseline: the same depth and width on Z alone."""

    def __init__(self, in_dim: int, hidden: int, num_classes: int, *, layers: int, dropout: float) -> None:
        super().__init__()
        blocks: list[nn.Module] = [nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout)]
        for _ in range(layers):
            blocks += [nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout)]
        blocks.append(nn.Linear(hidden, num_classes))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _accuracy(logits: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor) -> float:
    if rows.numel() == 0:
        return float("nan")
    return float((logits[rows].argmax(-1) == labels[rows]).float().mean())


def _fit(
    model: nn.Module,
    run: Any,
    labels: torch.Tensor,
    split: NodeSplit,
    cfg: GNNSettings,
    *,
    mask_gen: torch.Generator | None,
    num_nodes: int,
    desc: str,
    progress: bool,
    lr: float,
    max_epochs: int,
) -> dict[str, Any]:
    """Full-batch training with early stopping on validation accuracy; restores the best weights.

    ``run(mask)`` returns logits for all nodes given a name mask (or ``None``).
    """
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=float(cfg.weight_decay))
    loss_fn = nn.CrossEntropyLoss()
    rate = float(cfg.name_mask_rate)
    best = {"val_acc": -1.0, "epoch": -1}
    best_state = copy.deepcopy(model.state_dict())
    patience = int(cfg.patience)
    bar = tqdm(range(max_epochs), desc=desc, unit="epoch", disable=not progress)
    epochs_run = 0
    for epoch in bar:
        epochs_run = epoch + 1
        model.train()
        mask = torch.rand(num_nodes, generator=mask_gen) < rate if mask_gen is not None and rate > 0 else None
        optimiser.zero_grad()
        logits = run(mask)
        loss = loss_fn(logits[split.train], labels[split.train])
        loss.backward()
        optimiser.step()
        model.eval()
        with torch.no_grad():
            val_acc = _accuracy(run(None), labels, split.val)
        bar.set_postfix(loss=f"{loss.item():.3f}", val_acc=f"{val_acc:.4f}")
        if val_acc > best["val_acc"]:
            best = {"val_acc": val_acc, "epoch": epoch + 1}
            best_state = copy.deepcopy(model.state_dict())
        elif epoch + 1 - best["epoch"] >= patience:
            break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    return {"best_epoch": best["epoch"], "epochs_run": epochs_run, "val_acc": best["val_acc"]}


def pretrain_graph_transformer(
    kg: KnowledgeGraph, z: np.ndarray, cfg: GNNSettings, *, seed: int, progress: bool = True
) -> tuple[np.ndarray, dict[str, Any]]:
    """Pretrain the Graph Transformer and the baselines on one seeded split; return (Z', metrics)."""
    start = time.perf_counter()
    labels = torch.from_numpy(kg.kind_labels())
    num_classes = len(kg.kind_names)
    split = NodeSplit.make(kg.num_nodes, float(cfg.train_frac), float(cfg.val_frac), seed)
    zt = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))
    edge_index, edge_rel = undirected_typed_edges(kg)
    hidden, layers, dropout = int(cfg.hidden), int(cfg.layers), float(cfg.dropout)

    # Majority kind of the training nodes.
    majority = int(torch.bincount(labels[split.train], minlength=num_classes).argmax())
    majority_acc = float((labels[split.test] == majority).float().mean())

    # MLP on Z alone.
    torch.manual_seed(seed)
    mlp = NameMLP(zt.shape[1], hidden, num_classes, layers=layers, dropout=dropout)
    mlp_fit = _fit(
        mlp,
        lambda _mask: mlp(zt),
        labels,
        split,
        cfg,
        mask_gen=None,
        num_nodes=kg.num_nodes,
        desc="Z': MLP-on-Z baseline",
        progress=progress,
        lr=float(cfg.baseline_lr),
        max_epochs=int(cfg.baseline_max_epochs),
    )
    with torch.no_grad():
        mlp_logits = mlp(zt)
        mlp_masked_logits = mlp(torch.zeros_like(zt))

    # Graph Transformer.
    torch.manual_seed(seed)
    model = GraphTransformer(
        zt.shape[1] + 1,
        hidden,
        num_classes,
        layers=layers,
        heads=int(cfg.heads),
        dropout=dropout,
        attention_dropout=float(cfg.attention_dropout),
        num_edge_types=2 * len(kg.relations),
        relation_dim=int(cfg.relation_dim),
    )
    mask_gen = torch.Generator().manual_seed(seed + 1)
    gnn_fit = _fit(
        model,
        lambda mask: model(masked_input(zt, mask), edge_index, edge_rel),
        labels,
        split,
        cfg,
        mask_gen=mask_gen,
        num_nodes=kg.num_nodes,
        desc="Z': Graph Transformer",
        progress=progress,
        lr=float(cfg.lr),
        max_epochs=int(cfg.max_epochs),
    )
    test_mask = torch.zeros(kg.num_nodes, dtype=torch.bool)
    test_mask[split.test] = True
    with torch.no_grad():
        z_prime = model.embed(masked_input(zt, None), edge_index, edge_rel)
        gnn_logits = model.classifier(z_prime)
        gnn_masked_logits = model(masked_input(zt, test_mask), edge_index, edge_rel)

    connected = torch.from_numpy(kg.degree() > 0)
    test_connected = split.test[connected[split.test]]
    metrics = {
        "split": {"train": int(split.train.numel()), "val": int(split.val.numel()), "test": int(split.test.numel())},
        "num_classes": num_classes,
        "majority_kind": kg.kind_names[majority],
        "test_acc": {
            "graph_transformer": _accuracy(gnn_logits, labels, split.test),
            "majority": majority_acc,
            "mlp_on_z": _accuracy(mlp_logits, labels, split.test),
        },
        "test_acc_names_masked": {
            "graph_transformer": _accuracy(gnn_masked_logits, labels, split.test),
            "majority": majority_acc,
            "mlp_on_z": _accuracy(mlp_masked_logits, labels, split.test),
        },
        "test_acc_connected_nodes": {
            "n": int(test_connected.numel()),
            "graph_transformer": _accuracy(gnn_logits, labels, test_connected),
            "mlp_on_z": _accuracy(mlp_logits, labels, test_connected),
        },
        "graph_transformer_fit": gnn_fit,
        "mlp_fit": mlp_fit,
        "message_passing_edges": int(edge_index.shape[1]),
        "seconds": time.perf_counter() - start,
    }
    acc = metrics["test_acc"]
    metrics["beats_baselines"] = bool(acc["graph_transformer"] > max(acc["majority"], acc["mlp_on_z"]))
    return z_prime.numpy().astype(np.float32), metrics
