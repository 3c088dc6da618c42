"""Threshold calibration: the model's threshold on dev, per-prompt thresholds where dev can tell."""

from __future__ import annotations

import pytest

from spacy_kogner.training.batches import Record
from spacy_kogner.training.calibrate import calibrate, decode

GRID = [0.3, 0.4, 0.5, 0.6, 0.7]


def _records(label: str, n: int, hit: float, miss: float) -> tuple[list[Record], list[dict]]:
    """``n`` sentences, each with one gold ``label`` span scored ``hit`` and one wrong span scored ``miss``."""
    records, scored = [], []
    for _ in range(n):
        records.append(Record(["a", "b", "c", "d"], [(0, 0, label)], [None], [label], "x"))
        scored.append({(0, 1, label): hit, (2, 4, label): miss})
    return records, scored


def test_decode_applies_each_labels_threshold_and_keeps_entities_flat() -> None:
    rec = [Record(["a", "b", "c"], [(0, 1, "D"), (2, 2, "C")], [None, None], ["C", "D"], "x")]
    scored = [{(0, 2, "D"): 0.6, (0, 1, "C"): 0.7, (2, 3, "C"): 0.35}]
    # one threshold 0.5: "a" as C (0.7) wins over the overlapping "a b" as D (0.6); C 0.35 is cut
    assert decode(rec, scored, lambda _: 0.5).total.as_dict()["tp"] == 0
    # C needs 0.8: "a b" as D comes back; C's own 0.3 would keep "c" but 0.8 drops it
    by = decode(rec, scored, lambda lbl: 0.8 if lbl == "C" else 0.5)
    assert (by.total.tp, by.total.fp, by.total.fn) == (1, 0, 1)
    by = decode(rec, scored, {"C": 0.3, "D": 0.5}.__getitem__)
    assert (by.per_label["D"].tp, by.per_label["C"].tp, by.per_label["C"].fp) == (0, 1, 1)


def test_a_silver_only_prompt_is_calibrated_on_its_own_spans_and_dev_labels_on_dev() -> None:
    dev, dev_scored = _records("Disease", 60, hit=0.62, miss=0.45)
    few, few_scored = _records("Gene", 10, hit=0.9, miss=0.65)
    silver, silver_scored = _records("chemical", 60, hit=0.35, miss=0.25)
    found = calibrate(dev + few, dev_scored + few_scored, GRID, 0.5, str.lower, 50, silver, silver_scored, "dev")
    # the model threshold: Disease's real spans at 0.62 and Gene's at 0.9 over their misses
    assert found.threshold == 0.5
    # chemical's real mentions score 0.35 (under the model threshold): its own threshold finds them;
    # Gene has 10 dev spans (< 50): reported, not tuned, even though 0.7 would score it better
    assert found.prompt_thresholds == {"chemical": 0.3}
    assert found.by_prompt["chemical"]["source"] == "calibration" and found.by_prompt["chemical"]["f"] == 100.0
    assert found.by_prompt["chemical"]["f_at_base"] == 0.0
    assert "threshold" not in found.by_prompt["gene"] and found.by_prompt["gene"]["spans"] == 10
    # dev F1 with the prompts' own thresholds: Disease and Gene have none, so it is the model's
    # (Gene's wrong spans at 0.65 pass the model threshold: 70 right, 10 wrong)
    assert found.dev_f_calibrated == found.dev_f == pytest.approx(2 * 70 / (2 * 70 + 10))
    # min_spans 0: one threshold for every prompt
    assert calibrate(dev, dev_scored, GRID, 0.5, str.lower, 0, silver, silver_scored).prompt_thresholds == {}


def test_a_dev_label_is_never_recalibrated_on_silver() -> None:
    dev, dev_scored = _records("chemical", 60, hit=0.75, miss=0.55)
    silver, silver_scored = _records("chemical", 60, hit=0.35, miss=0.25)
    found = calibrate(dev, dev_scored, GRID, 0.5, str.lower, 50, silver, silver_scored)
    assert found.threshold == 0.6 and found.prompt_thresholds == {}
    assert found.by_prompt["chemical"]["source"] == "dev"


def test_prompts_without_evidence_fall_back_to_the_silver_prompts_joint_threshold() -> None:
    dev, dev_scored = _records("Disease", 60, hit=0.62, miss=0.45)
    chem, chem_scored = _records("chemical", 60, hit=0.35, miss=0.25)
    anat, anat_scored = _records("anatomy", 60, hit=0.45, miss=0.25)
    silver, silver_scored = chem + anat, chem_scored + anat_scored
    few, few_scored = _records("Gene", 10, hit=0.9, miss=0.2)
    found = calibrate(dev + few, dev_scored + few_scored, GRID, 0.5, str.lower, 50, silver, silver_scored)
    # jointly, the two silver-only prompts are best at 0.3 (0.4 loses every chemical): that becomes
    # the threshold of any prompt without its own; "disease" keeps its dev-tuned 0.5, "gene" too
    # (a gold dev prompt with 10 spans, too few to tune), "anatomy" its own 0.4 (0.3 and 0.4 tie on
    # its spans; ties go to the dev threshold's side)
    assert (found.threshold, found.dev_threshold, found.silver_threshold) == (0.3, 0.5, 0.3)
    assert found.prompt_thresholds == {"anatomy": 0.4, "disease": 0.5, "gene": 0.5}
    assert "threshold" not in found.by_prompt["gene"]
    # the gold dev prompts decode exactly as before: Disease at 0.5
    assert found.dev_f_calibrated == found.dev_f == 1.0
    # "dev": the dev-tuned threshold stays the fallback, the silver prompts keep their own
    kept = calibrate(dev, dev_scored, GRID, 0.5, str.lower, 50, silver, silver_scored, "dev")
    assert (kept.threshold, kept.silver_threshold, kept.prompt_thresholds) == (
        0.5,
        None,
        {"anatomy": 0.4, "chemical": 0.3},
    )
    # no calibration split: nothing to fall back on but dev
    alone = calibrate(dev, dev_scored, GRID, 0.5, str.lower, 50)
    assert (alone.threshold, alone.silver_threshold, alone.prompt_thresholds) == (0.5, None, {})
    with pytest.raises(ValueError, match="fallback"):
        calibrate(dev, dev_scored, GRID, 0.5, str.lower, 50, silver, silver_scored, "silver")
