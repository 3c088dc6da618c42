"""Z: every KG node's name encoded as text, Z ∈ R^{M×d'} (paper §2.2).

The teacher encodes node names with the *same encoder family as the student* (the offline
MiniLM backbone by default), so Z lives in a space the student's span vectors can be compared
with. Names are mean-pooled over their word pieces (padding masked out). Batches are formed from
length-sorted names (much less padding) and written back in node-row order, so the result does
not depend on the batch size beyond float rounding.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import require
from ..kg.graph import KnowledgeGraph
from ..pipeline.hub import resolve_encoder

POOLINGS = ("mean", "cls")


@dataclass
class TextSettings:
    """The ``[text]`` section: how node names become Z."""

    encoder: str
    template: str
    batch_size: int
    max_length: int
    pooling: str
    normalize: bool

    def __post_init__(self) -> None:
        require(self.pooling in POOLINGS, f"[text] pooling must be one of {POOLINGS}, got {self.pooling!r}")
        require(self.batch_size >= 1 and self.max_length >= 2, "[text] batch_size must be ≥ 1 and max_length ≥ 2")


def node_texts(kg: KnowledgeGraph, template: str) -> list[str]:
    """Render each node as text: ``{name}`` by default, or e.g. ``{kind}: {name}``.

    A node with an empty name falls back to its id so that no row of Z is the encoding of "".
    """
    texts = []
    for node_id, name, kind in zip(kg.node_ids, kg.names, kg.kinds, strict=True):
        texts.append(template.format(name=name or node_id, kind=kind, id=node_id))
    return texts


def text_cache_key(kg: KnowledgeGraph, cfg: TextSettings) -> str:
    """Cache key of Z: the encoder (resolved path or hub id), the node table and the text settings.

    The batch size is left out on purpose: it changes speed, not the result.
    """
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "batch_size"}
    settings["encoder"] = resolve_encoder(cfg.encoder)
    payload = json.dumps({"text": settings, "nodes": kg.node_fingerprint()}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@torch.inference_mode()
def encode_texts(
    texts: Sequence[str],
    encoder: str,
    *,
    batch_size: int,
    max_length: int,
    pooling: str = "mean",
    normalize: bool = False,
    progress: bool = True,
) -> np.ndarray:
    """Encode texts with a Hugging Face encoder, pooled to one float32 vector per text."""
    from transformers import AutoModel, AutoTokenizer

    path = resolve_encoder(encoder)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path)
    model.eval()
    dim = int(model.config.hidden_size)
    out = np.zeros((len(texts), dim), dtype=np.float32)
    # Sorting by length keeps padding (and CPU time) low; rows are written back by position.
    order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))
    bar = tqdm(total=len(texts), desc="Z: encoding node names", unit="node", disable=not progress)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = tokenizer(
            [texts[i] for i in rows],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        hidden = model(**batch).last_hidden_state
        if pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        if normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        out[rows] = pooled.float().numpy()
        bar.update(len(rows))
    bar.close()
    return out


def build_text_features(kg: KnowledgeGraph, cfg: TextSettings, *, progress: bool = True) -> np.ndarray:
    """Z for a KG under the ``[text]`` config section."""
    return encode_texts(
        node_texts(kg, cfg.template),
        cfg.encoder,
        batch_size=int(cfg.batch_size),
        max_length=int(cfg.max_length),
        pooling=cfg.pooling,
        normalize=bool(cfg.normalize),
        progress=progress,
    )
