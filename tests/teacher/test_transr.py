"""The fast TransR interaction must score exactly like PyKEEN's own TransR."""

from __future__ import annotations

import torch

from spacy_kogner.teacher.transr import fast_transr_class, set_pystow_home


def test_fast_transr_matches_pykeen(tmp_path):
    set_pystow_home(tmp_path)
    from pykeen.models import TransR
    from pykeen.triples import TriplesFactory

    n, r = 60, 3
    gen = torch.Generator().manual_seed(0)
    triples = torch.stack(
        [
            torch.randint(n, (300,), generator=gen),
            torch.randint(r, (300,), generator=gen),
            torch.randint(n, (300,), generator=gen),
        ],
        dim=1,
    )
    factory = TriplesFactory(
        triples,
        entity_to_id={str(i): i for i in range(n)},
        relation_to_id={str(i): i for i in range(r)},
        num_entities=n,
        num_relations=r,
    )
    reference = TransR(triples_factory=factory, embedding_dim=10, relation_dim=4, random_seed=1)
    fast = fast_transr_class()(triples_factory=factory, embedding_dim=10, relation_dim=4, random_seed=1)
    fast.load_state_dict(reference.state_dict())
    with torch.no_grad():
        for method, batch in (
            ("score_hrt", triples[:40]),
            ("score_t", triples[:40, :2]),
            ("score_h", triples[:40, 1:]),
        ):
            torch.testing.assert_close(getattr(fast, method)(batch), getattr(reference, method)(batch))
