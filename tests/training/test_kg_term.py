"""The KG term's parts on a real (small) H store: standardised blocks, the node bank, the share."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from toy_distill import write_teacher

from spacy_kogner.config import ConfigError
from spacy_kogner.teacher.store import HStore
from spacy_kogner.training.kg_term import (
    ShareBalancer,
    TeacherBank,
    bank_infonce,
    bank_scores,
    retrieval_counts,
    standardised_blocks,
)


@pytest.fixture()
def store(tmp_path) -> HStore:
    return HStore.load(write_teacher(tmp_path / "teacher"))


def test_standardised_blocks_weigh_each_block_alike(store):
    h = standardised_blocks(store, [1.0, 1.0, 1.0])
    np.testing.assert_allclose(h.mean(0), 0, atol=1e-6)
    for name in ("Z", "Z_prime", "Z_double_prime"):
        start, stop = store.meta["blocks"][name]
        # z-scored columns scaled by 1/sqrt(width): each block's mean squared norm is 1, whatever its width
        assert (h[:, start:stop] ** 2).sum(1).mean() == pytest.approx(1.0, rel=1e-5)
    dropped = standardised_blocks(store, [0.0, 2.0, 0.0])
    z, zp = store.meta["blocks"]["Z"], store.meta["blocks"]["Z_prime"]
    assert not dropped[:, z[0] : z[1]].any()
    assert (dropped[:, zp[0] : zp[1]] ** 2).sum(1).mean() == pytest.approx(4.0, rel=1e-5)


@pytest.mark.parametrize("weights", [[1.0, 1.0], [0.0, 0.0, 0.0]])
def test_block_weights_must_fit_the_store(store, weights):
    with pytest.raises(ConfigError, match="block_weights"):
        standardised_blocks(store, weights)


def test_bank_contrasts_each_span_with_every_node_of_its_kind(store):
    bank = TeacherBank(store, standardise=True, block_weights=[1.0, 1.0, 1.0])
    identity = torch.nn.Identity()
    rows = [0, 1, 2, 3, 4]  # Disease, Compound, Disease, Compound, Compound
    own = torch.from_numpy(bank.rows(rows))
    scores = bank_scores(own, rows, bank, identity, temperature=1.0)
    assert sorted(logits.shape for logits, _ in scores) == [(2, 2), (3, 3)]  # 2 diseases, 3 compounds
    assert retrieval_counts(scores, (1, 2)) == {1: 5, 2: 5}
    wrong = torch.from_numpy(bank.rows([2, 3, 0, 4, 1]))  # each span reads another node of its kind
    assert retrieval_counts(bank_scores(wrong, rows, bank, identity, 1.0), (1,)) == {1: 0}
    assert bank_infonce(own, rows, bank, identity, 0.1) < bank_infonce(wrong, rows, bank, identity, 0.1)


def test_retrieval_rank_counts_only_strictly_better_nodes():
    logits = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.2, 0.7], [0.1, 0.3, 0.2]])
    target = torch.tensor([0, 1, 2])  # ranks 0, 1 (behind 0.7; the tie does not count), 1
    assert retrieval_counts([(logits, target)], (1, 2)) == {1: 1, 2: 3}


def test_share_balancer_makes_b_the_share_of_the_loss():
    balancer = ShareBalancer(momentum=0.9)
    assert balancer.scale() == 1.0  # nothing seen yet
    balancer.update(12.0, 3.0)
    assert balancer.scale() == pytest.approx(4.0)  # bias-corrected: exact from the first step
    for _ in range(200):
        balancer.update(10.0, None)  # steps without linked spans move only L_lang's average
    assert balancer.scale() == pytest.approx(10.0 / 3.0, rel=1e-3)
    for _ in range(200):
        balancer.update(10.0, 2.0)
    b, a = 0.1, 1.0
    assert b * balancer.scale() * 2.0 / (a * 10.0) == pytest.approx(b, rel=1e-3)
    state = balancer.state_dict()
    again = ShareBalancer(0.9)
    again.load_state_dict(state)
    assert again.scale() == balancer.scale()


def test_shuffled_rows_keep_kinds_but_not_the_node(store):
    kg = TeacherBank(store, standardise=True, block_weights=[1.0, 1.0, 1.0])
    shuffled = TeacherBank(store, standardise=True, block_weights=[1.0, 1.0, 1.0], rows="shuffled")
    rows = list(range(len(store.node_ids)))
    assert sorted(map(tuple, shuffled.rows(rows))) == sorted(map(tuple, kg.rows(rows)))  # the same rows ...
    for kind_rows in kg.kind_rows:  # ... each read by a node of the same kind
        assert set(shuffled.source[kind_rows]) == set(kind_rows)
    assert (shuffled.source != np.arange(len(rows))).any()
    with pytest.raises(ConfigError, match="teacher_rows"):
        TeacherBank(store, standardise=True, block_weights=[1.0, 1.0, 1.0], rows="random")


def test_bank_centres_each_kinds_projected_rows(store):
    """Nodes of one kind share a direction that tells none of them apart; the bank removes it."""
    centred = TeacherBank(store, standardise=True, block_weights=[1.0, 1.0, 1.0])
    plain = TeacherBank(store, standardise=True, block_weights=[1.0, 1.0, 1.0], center=False)
    shift = torch.nn.Linear(store.dim, store.dim)  # a projection that adds one offset to every row
    with torch.no_grad():
        shift.weight.copy_(torch.eye(store.dim))
        shift.bias.fill_(5.0)
    for kind, rows in enumerate(centred.kind_rows):
        raw = torch.from_numpy(centred.rows(rows)) + 5.0
        expect = raw - raw.mean(0, keepdim=True) if len(rows) > 1 else raw
        torch.testing.assert_close(centred.projected(kind, shift, torch.device("cpu")), F.normalize(expect, dim=-1))
        torch.testing.assert_close(plain.projected(kind, shift, torch.device("cpu")), F.normalize(raw, dim=-1))
    # the offset makes every pair of compounds near-parallel; centred, they are told apart again
    compounds = int(np.flatnonzero(centred.kind_names == "Compound")[0])
    cos_plain = plain.projected(compounds, shift, torch.device("cpu"))
    cos_centred = centred.projected(compounds, shift, torch.device("cpu"))
    assert (cos_plain @ cos_plain.T).min() > 0.9 and (cos_centred @ cos_centred.T).min() < 0.5
