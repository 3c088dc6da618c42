"""Training records: a bad training file fails like any corpus, naming file, line and record."""

from __future__ import annotations

import json

import pytest
from toy_distill import CFG, SENTENCES, overrides

from spacy_kogner.data.readers import CorpusFormatError
from spacy_kogner.training.batches import read_records
from spacy_kogner.training.distill import distill


def records() -> list[dict]:
    return [{"tokenized_text": t, "ner": [list(x) for x in n], "corpus": "toy"} for t, n in SENTENCES]


def test_distill_on_invalid_json_names_the_file_and_line(tmp_path):
    bad = tmp_path / "torn.json"
    bad.write_text(json.dumps(records(), indent=1)[:-2] + ",\n}")  # a torn copy
    lines = bad.read_text().count("\n") + 1
    with pytest.raises(CorpusFormatError, match=rf"^{bad}:{lines}: invalid JSON"):
        distill(CFG, tmp_path / "out", {**overrides(tmp_path), "paths.train": str(bad)})


def test_a_bad_span_reports_record_index_and_its_real_line(tmp_path):
    recs = records()
    recs[3]["ner"] = [[0, 9, "Chemical"]]  # past the end of the sentence
    path = tmp_path / "train.json"
    path.write_text("[\n" + ",\n".join(json.dumps(r, indent=1) for r in recs) + "\n]\n")
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "Ibuprofen" in text) - 2
    with pytest.raises(CorpusFormatError, match=rf"^{path}:{line}: record 3: span \[0, 10\)"):
        read_records(path)


def test_a_training_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "train.json"
    path.write_bytes(json.dumps(records()).encode("utf-16"))
    with pytest.raises(CorpusFormatError, match=rf"^{path}:1: not valid UTF-8 \(byte 0xff at offset 0"):
        read_records(path)


def test_length_buckets_cover_each_epoch_once_with_similar_lengths():
    import numpy as np

    from spacy_kogner.training.batches import BatchPlan

    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 120, size=1000).tolist()
    plan = BatchPlan(lengths, batch_size=16, seed=7, bucket=10)
    epoch = [plan(step) for step in range(plan.per_epoch)]
    flat = [i for batch in epoch for i in batch]
    assert len(flat) == len(set(flat)) == plan.per_epoch * 16  # every record at most once an epoch
    assert all(len(b) == 16 for b in epoch)
    spread = np.mean([np.ptp([lengths[i] for i in b]) for b in epoch])
    shuffled = BatchPlan(lengths, batch_size=16, seed=7, bucket=0)
    plain = np.mean([np.ptp([lengths[i] for i in shuffled(s)]) for s in range(plan.per_epoch)])
    assert spread < plain / 3  # batches of similar lengths: little padding
    assert plan(5) == BatchPlan(lengths, batch_size=16, seed=7, bucket=10)(5)  # a pure function of (seed, step)
    assert plan(plan.per_epoch) != plan(0)  # the next epoch is shuffled anew


def test_source_balance_gives_small_sources_their_share_and_alpha_one_changes_nothing():
    from collections import Counter

    import numpy as np

    from spacy_kogner.config import ConfigError
    from spacy_kogner.training.batches import BatchPlan

    sources = ["small"] * 100 + ["large"] * 900
    lengths = np.random.default_rng(1).integers(3, 60, size=1000).tolist()
    as_pooled = BatchPlan(lengths, batch_size=10, seed=3, bucket=5, sources=sources, balance=1.0)
    plain = BatchPlan(lengths, batch_size=10, seed=3, bucket=5)
    assert [as_pooled(s) for s in range(120)] == [plain(s) for s in range(120)]  # alpha 1: the same batches
    assert as_pooled.shares() == {"large": 900, "small": 100}

    for alpha, small in ((0.5, 250), (0.0, 500)):  # sqrt: 10 / (10 + 30); uniform: half each
        plan = BatchPlan(lengths, batch_size=10, seed=3, bucket=5, sources=sources, balance=alpha)
        assert plan.shares() == {"large": 1000 - small, "small": small}
        epoch = [i for step in range(plan.per_epoch) for i in plan(step)]
        assert len(epoch) == 1000  # the epoch keeps its length
        drawn = Counter(epoch)
        assert sum(n for i, n in drawn.items() if i < 100) == small
        assert all(i < 100 or n == 1 for i, n in drawn.items())  # a large source's sentences at most once
        assert {drawn[i] for i in range(100)} <= {small // 100, -(-small // 100)}  # each once before any twice
        next_epoch = {i for step in range(plan.per_epoch, 2 * plan.per_epoch) for i in plan(step) if i >= 100}
        assert next_epoch != {i for i in epoch if i >= 100}  # another subset of the large source
    with pytest.raises(ConfigError, match="source balance must be in"):
        BatchPlan(lengths, batch_size=10, seed=3, sources=sources, balance=1.5)


def test_prefetcher_builds_the_next_batch_in_the_background_and_in_order():
    import threading

    from spacy_kogner.training.batches import Prefetcher

    built: list[int] = []

    def make(step: int) -> tuple[int, str]:
        built.append(step)
        return step, threading.current_thread().name

    ahead = Prefetcher(make, stop=4, enabled=True)
    assert ahead.get(0) == (0, "MainThread")  # nothing built ahead yet
    ahead.wait()
    assert built == [0, 1]  # step 1 was built while step 0 "ran"
    step, thread = ahead.get(1)
    assert step == 1 and thread.startswith("kogner-batches")
    assert ahead.get(3)[0] == 3  # a jump (a resumed run) builds in line
    ahead.wait()
    assert built[-1] == 3  # and nothing past the end of the schedule
    ahead.close()
    inline = Prefetcher(make, stop=4, enabled=False)
    assert [inline.get(s) for s in range(2)] == [(0, "MainThread"), (1, "MainThread")]
