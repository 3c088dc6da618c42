"""Distillation trainer: loss parts, a short real run, resume equivalence, config errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from toy_distill import CFG, overrides, write_corpus, write_teacher
from typer.testing import CliRunner

from spacy_kogner.cli import app
from spacy_kogner.config import ConfigError, load_config
from spacy_kogner.training.distill import Distiller, check_config, distill
from spacy_kogner.training.heads import DistillHeads, dist_loss


def test_dist_loss_forms():
    torch.manual_seed(0)
    s = torch.randn(4, 8, requires_grad=True)
    t = torch.randn(4, 8)
    for kind in ("mse", "mse_frozen", "infonce"):
        loss = dist_loss(kind, s, t, [0, 1, 2, 0], 0.1)
        assert loss.item() > 0
        (grad,) = torch.autograd.grad(loss, s)
        assert grad.abs().sum() > 0
    # collapse: identical vectors give zero MSE but a high contrastive loss (log N with distinct nodes)
    same = torch.ones(3, 8)
    assert dist_loss("mse", same, same, [0, 1, 2], 0.1).item() == 0
    assert dist_loss("infonce", same, same, [0, 1, 2], 0.1).item() == pytest.approx(3 * np.log(3), rel=1e-4)


def test_frozen_teacher_head_does_not_train():
    heads = DistillHeads(16, 10, 32, 8, 0.4, freeze_teacher=True).train()
    assert not any(p.requires_grad for p in heads.mlp_dist.parameters())
    x = torch.randn(2, 10)
    _, a = heads(torch.randn(2, 16), x)
    _, b = heads(torch.randn(2, 16), x)
    assert torch.equal(a, b)  # no dropout on the fixed projection


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"training.b": -0.1}, "must be >= 0"),
        ({"training.dist_loss": "cosine"}, "dist_loss"),
        ({"training.b": 0.2, "paths.teacher": ""}, "needs paths.teacher"),
        ({"training.b": 0.2, "paths.teacher": "/no/such/store"}, "not found"),
        ({"training.no_such_key": 1}, "Unknown config key"),
        ({"training.eval_docs_per_call": 0}, "eval batch sizes"),
    ],
)
def test_config_errors_are_clear(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        distill(CFG, tmp_path / "out", overrides(tmp_path, **override))


def test_unknown_key_in_file_is_refused(tmp_path):
    text = CFG.read_text().replace("[heads]", "[heads]\nhiden = 3")
    (tmp_path / "bad.cfg").write_text(text)
    with pytest.raises(ConfigError, match="hiden"):
        check_config(load_config(tmp_path / "bad.cfg"), "bad.cfg")


def test_short_run_lowers_loss_and_writes_a_pipeline(tmp_path):
    import spacy

    out = tmp_path / "run"
    metrics = distill(CFG, out, overrides(tmp_path, **{"training.steps": 20, "training.eval_every": 10}))
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 20
    first = np.mean([r["l_lang"] for r in log[:4]])
    last = np.mean([r["l_lang"] for r in log[-4:]])
    assert last < first
    assert "dev_f" in log[9] and "dev_f" in log[19]
    assert metrics["steps"] == 20 and (out / "curves.png").exists()
    assert all(r["step_s"] > 0 for r in log) and metrics["details"]["median_step_s"] > 0
    assert metrics["wall_s"] >= metrics["details"]["wall_s_this_run"] > 0
    assert metrics["schema"] == "kogner.run.v1" and metrics["cpu"]
    nlp = spacy.load(out / "model-best")
    doc = nlp("Aspirin reduces fever .")
    assert "kogner" in nlp.pipe_names and doc.spans["kogner"] is not None


def test_resume_gives_the_same_result(tmp_path):
    full = tmp_path / "full"
    distill(CFG, full, overrides(tmp_path))
    broken = tmp_path / "broken"
    first = distill(CFG, broken, overrides(tmp_path, **{"training.stop_after": 3}))
    assert first == {"stopped_at": 3}
    resumed = distill(CFG, broken, overrides(tmp_path))
    # the reported training time counts both pieces of the broken run
    assert resumed["wall_s"] > resumed["details"]["wall_s_this_run"]
    a = torch.load(full / "checkpoint.pt", weights_only=False)["student"]
    b = torch.load(broken / "checkpoint.pt", weights_only=False)["student"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    la = [json.loads(x)["loss"] for x in (full / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in (broken / "log.jsonl").read_text().splitlines()]
    assert la == pytest.approx(lb, rel=1e-5)


def test_resume_after_a_kill_logs_each_step_once(tmp_path):
    """kill -9 after step 3 was logged but before its checkpoint, and mid-way through writing
    step 4: the resumed run trains steps 3 and 4 again and the log holds each step once, so the
    median step time is over unique steps."""
    out = tmp_path / "run"
    ov = overrides(tmp_path, **{"training.steps": 4, "training.eval_every": 4, "training.checkpoint_every": 2})
    assert distill(CFG, out, {**ov, "training.stop_after": 2}) == {"stopped_at": 2}
    log = out / "log.jsonl"
    with log.open("a") as fh:
        fh.write(json.dumps({"step": 3, "loss": 9.9, "l_lang": 9.9, "l_dist": 0.0, "step_s": 1000.0}) + "\n")
        fh.write('{"step": 4, "loss": 9.')  # torn by the kill
    summary = distill(CFG, out, ov)
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["step"] for e in entries] == [1, 2, 3, 4]
    assert all(e["step_s"] < 1000 for e in entries)  # step 3 is the retrained one
    assert summary["details"]["median_step_s"] == pytest.approx(float(np.median([e["step_s"] for e in entries])))


def test_no_linked_span_gives_zero_dist_loss_without_breaking_the_graph(tmp_path):
    """b > 0 with a real teacher, but a batch without a single linked span: L_dist is zero, the
    step still trains (L_lang moves the model) and nothing is indexed with an empty span list."""
    store = write_teacher(tmp_path / "teacher")
    unlinked = write_corpus(tmp_path / "unlinked.json", link=False)
    cfg = load_config(
        CFG, overrides(tmp_path, **{"paths.teacher": str(store), "paths.train": str(unlinked), "training.b": 1.0})
    )
    check_config(cfg, CFG)
    trainer = Distiller(cfg, tmp_path / "o")
    assert trainer.linked_share == 0.0
    head = trainer.student.gliner.model.span_rep_layer
    before = [p.detach().clone() for p in head.parameters()]
    parts = trainer.step(0)
    assert parts["l_dist"] == 0.0 and parts["linked_spans"] == 0
    assert np.isfinite(parts["loss"]) and parts["loss"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, head.parameters(), strict=True))


@pytest.mark.parametrize("kind", ["mse", "mse_frozen", "infonce", "kg_infonce"])
def test_linked_spans_give_a_positive_dist_loss_that_reaches_the_encoder(tmp_path, kind):
    store = write_teacher(tmp_path / "teacher")
    cfg = load_config(
        CFG, overrides(tmp_path, **{"paths.teacher": str(store), "training.b": 1.0, "training.a": 0.0,
                                    "training.dist_loss": kind, "training.batch_size": 6})
    )  # fmt: skip
    check_config(cfg, CFG)
    trainer = Distiller(cfg, tmp_path / "o")
    assert trainer.linked_share == pytest.approx(6 / 8)
    encoder = trainer.student.gliner.model.token_rep_layer.bert_layer
    before = [p.detach().clone() for p in encoder.parameters()]
    parts = trainer.step(0)
    assert parts["linked_spans"] == 6 and parts["l_dist"] > 0
    if kind != "kg_infonce":  # the bank's projected rows are a constant: no collapse to watch
        assert parts["teacher_var"] > 0
    changed = sum(not torch.equal(a, b) for a, b in zip(before, encoder.parameters(), strict=True))
    assert changed > 0  # with a = 0 only L_dist moves the encoder


def test_saved_student_pipeline_is_device_auto(tmp_path):
    """A student trained on a GPU must load on a CPU-only machine: the saved config says "auto"."""
    import spacy

    cfg = load_config(CFG, overrides(tmp_path, **{"training.device": "cuda"}))  # falls back to CPU here
    trainer = Distiller(cfg, tmp_path / "o")
    trainer.pipeline().to_disk(tmp_path / "p")
    assert spacy.load(tmp_path / "p").config["components"]["kogner"]["device"] == "auto"


def test_rerun_with_changed_config_or_data_trains_again(tmp_path, capfd):
    """A finished run is not 'resumed' when the config or the data changed (a workflow re-run)."""
    out = tmp_path / "run"
    first = distill(CFG, out, overrides(tmp_path))
    same = distill(CFG, out, overrides(tmp_path, **{"training.stop_after": 0, "training.num_threads": 1}))
    assert (
        same["details"]["wall_s_this_run"] < first["details"]["wall_s_this_run"]
    )  # nothing left to train: resumed at the end
    before = torch.load(out / "checkpoint.pt", weights_only=False)["student"]
    capfd.readouterr()
    changed = distill(CFG, out, overrides(tmp_path, **{"training.lr_others": 0.002}))
    assert "starting a new run" in capfd.readouterr().err
    assert len((out / "log.jsonl").read_text().splitlines()) == changed["steps"]
    after = torch.load(out / "checkpoint.pt", weights_only=False)["student"]
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # new data, same config: trains again as well
    train = tmp_path / "train_reversed.json"
    records = json.loads((tmp_path / "train.json").read_text())
    train.write_text(json.dumps(records[::-1]))
    capfd.readouterr()
    distill(CFG, out, {**overrides(tmp_path, **{"training.lr_others": 0.002}), "paths.train": str(train)})
    assert "starting a new run" in capfd.readouterr().err


def test_one_pass_threshold_sweep_equals_separate_pipeline_runs(tmp_path):
    """evaluate() scores several thresholds from one pass; each must equal the pipe run at it."""
    from spacy.tokens import Doc

    from spacy_kogner.evaluation.metrics import exact_scores

    trainer = Distiller(load_config(CFG, overrides(tmp_path)), tmp_path / "o")
    for step in range(3):
        trainer.step(step)
    grid = [0.3, 0.45, 0.5, 0.6]
    swept = trainer.evaluate(trainer.dev, grid)
    for t in grid:
        nlp = trainer.pipeline(sorted({lbl for r in trainer.dev for lbl in r.labels}), threshold=t)
        docs = list(nlp.pipe([Doc(nlp.vocab, words=r.tokens) for r in trainer.dev]))
        gold = [(i, s, e + 1, lbl) for i, r in enumerate(trainer.dev) for s, e, lbl in r.ner]
        pred = [(i, e.start, e.end, e.label_) for i, d in enumerate(docs) for e in d.ents]
        total = exact_scores(gold, pred).total.as_dict()
        assert swept[t]["f"] == pytest.approx(total["f"] / 100, abs=1e-9), t


def test_per_prompt_thresholds_in_the_pipe_equal_the_one_pass_decode(tmp_path):
    """The calibration's one-pass decode with a threshold per label must be what the component
    outputs with those ``prompt_thresholds``: the tuned values are chosen by the first and used by
    the second."""
    from spacy.tokens import Doc

    from spacy_kogner.evaluation.metrics import exact_scores
    from spacy_kogner.training.calibrate import decode

    trainer = Distiller(load_config(CFG, overrides(tmp_path)), tmp_path / "o")
    for step in range(3):
        trainer.step(step)
    scored = trainer._predict(trainer.dev, 0.2)
    cuts = {"Disease": 0.3, "Chemical": 0.6}
    swept = decode(trainer.dev, scored, cuts.__getitem__).total.as_dict()
    nlp = trainer.pipeline(["Chemical", "Disease"], threshold=0.6, prompt_thresholds={"Disease": 0.3})
    docs = list(nlp.pipe([Doc(nlp.vocab, words=r.tokens) for r in trainer.dev]))
    gold = [(i, s, e + 1, lbl) for i, r in enumerate(trainer.dev) for s, e, lbl in r.ner]
    pred = [(i, e.start, e.end, e.label_) for i, d in enumerate(docs) for e in d.ents]
    assert exact_scores(gold, pred).total.as_dict() == swept


def test_prompt_thresholds_are_tuned_on_dev_and_calibration_spans_and_saved(tmp_path):
    """Each dev label's prompt is calibrated on dev, a prompt no dev label has on the calibration
    split; what differs from the model threshold is saved in model-best, and `calibrate` on the same
    data gives the same thresholds."""
    import spacy

    calibration = tmp_path / "dev_silver.json"
    calibration.write_text(json.dumps([
        {"tokenized_text": ["Pain", "in", "the", "liver", "."], "ner": [[3, 3, "anatomy"]], "corpus": "toy",
         "labels": ["anatomy"]},
        {"tokenized_text": ["The", "heart", "and", "the", "brain", "."], "ner": [[1, 1, "anatomy"], [4, 4, "anatomy"]],
         "corpus": "toy", "labels": ["anatomy"]},
    ]))  # fmt: skip
    out = tmp_path / "run"
    extra = {"training.tune_threshold": [0.1, 0.3, 0.6, 0.9], "training.calibrate_min_spans": 1,
             "paths.calibration": str(calibration)}  # fmt: skip
    details = distill(CFG, out, overrides(tmp_path, **extra))["details"]
    by_prompt = details["calibration"]
    assert {p: e["source"] for p, e in by_prompt.items()} == {
        "chemical": "dev",
        "disease": "dev",
        "anatomy": "calibration",
    }
    assert by_prompt["anatomy"]["spans"] == 3 and by_prompt["disease"]["spans"] == 5
    expected = {p: e["threshold"] for p, e in by_prompt.items() if e["threshold"] != details["threshold"]}
    assert details["prompt_thresholds"] == expected
    assert spacy.load(out / "model-best").get_pipe("kogner").cfg["prompt_thresholds"] == expected
    args = ["calibrate", str(out / "model-best"), str(tmp_path / "dev.json"), "--calibration", str(calibration),
            "--output", str(tmp_path / "again"), "--training.tune_threshold", "[0.1, 0.3, 0.6, 0.9]",
            "--training.calibrate_min_spans", "1"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    again = json.loads(result.output)
    assert again["threshold"] == details["threshold"] and again["prompt_thresholds"] == expected
    loaded = spacy.load(tmp_path / "again")
    assert loaded.get_pipe("kogner").cfg["prompt_thresholds"] == expected
    assert loaded.config["components"]["kogner"]["prompt_thresholds"] == expected  # config.cfg agrees
    missing = CliRunner().invoke(app, ["calibrate", str(tmp_path / "nope"), str(tmp_path / "dev.json")])
    assert missing.exit_code != 0 and "not a saved spaCy pipeline" in missing.output


def test_budgets_early_stopping_curves_and_tuned_threshold(tmp_path):
    import spacy

    out = tmp_path / "run"
    extra = {
        "training.epochs": 3,  # 8 sentences / batch 3 = 2 steps an epoch -> 6 scheduled steps
        "training.evals_per_epoch": 1,
        "training.patience": 1,
        "training.tune_threshold": [0.3, 0.4, 0.6],
        "paths.test": str(write_corpus(tmp_path / "test.json", link=False)),
        "training.bucket": 2,
    }
    summary = distill(CFG, out, overrides(tmp_path, **extra))
    assert summary["details"]["scheduled_steps"] == 6
    assert summary["details"]["ended_by"] in ("schedule", "patience")
    curve = json.loads((out / "curves.json").read_text())
    assert [p["step"] for p in curve] == list(range(2, summary["steps"] + 1, 2))
    assert all(p["test_f"] is not None and p["dev_f"] is not None for p in curve)
    tuned = summary["details"]["threshold"]
    assert str(tuned) in summary["details"]["dev_f_by_threshold"] and tuned in (0.3, 0.4, 0.5, 0.6)
    best = spacy.load(out / "model-best")
    assert best.get_pipe("kogner").cfg["threshold"] == tuned
    assert best.config["components"]["kogner"]["threshold"] == tuned
    assert (out / "curves.png").is_file()


def test_wall_time_budget_stops_training_at_an_evaluation(tmp_path):
    summary = distill(CFG, tmp_path / "run", overrides(tmp_path, **{"training.max_minutes": 1e-6}))
    assert summary["steps"] == 1 and summary["details"]["ended_by"] == "max_minutes"
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and "dev_f" in log[0]  # the budget ends training at an evaluation
    assert (tmp_path / "run" / "model-best").is_dir()


def test_prefetching_batches_changes_no_result(tmp_path):
    """Batches built ahead in a background thread (the GPU setting) give the same run as batches
    built in line: the same losses step by step and the same weights."""
    runs = {}
    for mode in ("off", "on"):
        out = tmp_path / mode
        distill(CFG, out, overrides(tmp_path, **{"training.prefetch": mode}))
        runs[mode] = (
            [json.loads(x)["loss"] for x in (out / "log.jsonl").read_text().splitlines()],
            torch.load(out / "checkpoint.pt", weights_only=False)["student"],
        )
    assert runs["on"][0] == runs["off"][0]
    for key, value in runs["off"][1].items():
        assert torch.equal(value, runs["on"][1][key]), key


def test_an_unknown_prefetch_mode_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="training.prefetch must be one of"):
        distill(CFG, tmp_path / "run", overrides(tmp_path, **{"training.prefetch": "yes"}))


@pytest.mark.parametrize("key", ["model.dropout", "heads.dropout"])
@pytest.mark.parametrize("rate", [1.0, -0.1])
def test_a_dropout_rate_outside_0_1_is_refused(tmp_path, key, rate):
    """The dropout masks scale kept units by 1/(1 - p): p = 1 gave a ZeroDivisionError (packed)
    or NaN (torch's mask) mid-training instead of a config error."""
    with pytest.raises(ConfigError, match=rf"{key} must be in \[0, 1\)"):
        distill(CFG, tmp_path / "run", overrides(tmp_path, **{key: rate}))


def test_paired_step_cost_trains_each_batch_with_and_without_the_kg_term(tmp_path):
    """Every batch twice, b = 0 and b > 0 (order alternating): positive times, the ratios they
    give, b restored afterwards; b = 0 has nothing to compare and is refused."""
    store = write_teacher(tmp_path / "teacher")
    ov = overrides(tmp_path, **{"paths.teacher": str(store), "training.b": 0.5, "training.dist_loss": "kg_infonce",
                                "training.batch_size": 6})  # fmt: skip
    trainer = Distiller(load_config(CFG, ov), tmp_path / "o")
    cost = trainer.paired_step_cost(steps=3, warmup=1)
    assert cost["steps"] == 3 and cost["b"] == 0.5 and trainer.t.b == 0.5
    assert cost["median_step_s"] > 0 and cost["median_step_s_b0"] > 0 and cost["mean_linked_spans"] > 0
    assert cost["sum_ratio"] > 0 and cost["median_ratio"] > 0
    plain = Distiller(load_config(CFG, {**ov, "training.b": 0.0}), tmp_path / "p")
    with pytest.raises(ConfigError, match="needs training.b > 0"):
        plain.paired_step_cost(steps=1, warmup=0)
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        trainer.paired_step_cost(steps=0, warmup=0)


def test_share_balance_makes_b_the_kg_share_and_retrieval_is_logged(tmp_path):
    """b = 0.3 with share balancing: the first step's KG term is exactly 30 % of a·L_lang; the run
    logs the realised share per step and writes top-1/top-10 retrieval before and after."""
    store = write_teacher(tmp_path / "teacher")
    ov = overrides(tmp_path, **{
        "paths.teacher": str(store), "training.a": 1.0, "training.b": 0.3, "training.dist_loss": "kg_infonce",
        "training.loss_norm": "per_span", "training.share_balance": True,
        "paths.dev": str(write_corpus(tmp_path / "dev_linked.json", link=True)),
    })  # fmt: skip
    cfg = load_config(CFG, ov)
    check_config(cfg, CFG)
    parts = Distiller(cfg, tmp_path / "probe").step(0)
    assert parts["linked_spans"] > 0 and parts["dist_share"] == pytest.approx(0.3, rel=1e-4)
    summary = distill(CFG, tmp_path / "run", ov)
    details = summary["details"]
    assert 0.05 < details["median_dist_share"] < 1.0 and details["mean_linked_spans"] > 0
    retrieval = json.loads((tmp_path / "run" / "retrieval.json").read_text())
    assert retrieval == details["kg_retrieval"]
    for when in ("before", "after"):
        r = retrieval[when]
        assert r["spans"] == 6 and 0 <= r["top1"] <= r["top10"] <= 100
        # per kind: the toy corpus links 2 diseases, 3 compounds, 1 symptom; the kinds add up
        assert {k: v["spans"] for k, v in r["by_kind"].items()} == {"Compound": 3, "Disease": 2, "Symptom": 1}
        assert sum(v["top1"] * v["spans"] for v in r["by_kind"].values()) == pytest.approx(r["top1"] * r["spans"])
        assert r["chance_top10"] == pytest.approx(100.0)  # every kind of the toy store has <= 10 nodes
        assert {k: v["spans"] for k, v in r["by_seen"].items()} == {"seen": 6}  # training links every dev node
    # a node linked nowhere in the training data counts as unseen
    unlinked = load_config(CFG, {**ov, "paths.train": str(write_corpus(tmp_path / "plain.json", link=False))})
    probe = Distiller(unlinked, tmp_path / "probe_unseen")
    assert {k: v["spans"] for k, v in probe.kg_retrieval(probe.dev)["by_seen"].items()} == {"unseen": 6}
    # a run that predates the per-kind breakdown gets it from its last checkpoint, same totals
    older = {**retrieval, "after": {k: v for k, v in retrieval["after"].items() if k != "by_kind"}}
    (tmp_path / "run" / "retrieval.json").write_text(json.dumps(older))
    result = CliRunner().invoke(app, ["kg-retrieval", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "retrieval.json").read_text()) == retrieval
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["details"]["kg_retrieval"] == retrieval
    result = CliRunner().invoke(app, ["kg-retrieval", str(tmp_path / "probe")])  # never finished
    assert result.exit_code != 0 and "not a finished distill run" in result.output


def test_train_fraction_is_one_subset_per_seed_whatever_b(tmp_path):
    store = write_teacher(tmp_path / "teacher")

    def subset(seed: int, b: float) -> list[list[str]]:
        ov = overrides(tmp_path, **{"paths.teacher": str(store), "training.train_fraction": 0.5,
                                    "training.seed": seed, "training.b": b})  # fmt: skip
        return [r.tokens for r in Distiller(load_config(CFG, ov), tmp_path / f"o{seed}{b}").train]

    first = subset(1, 0.0)
    assert len(first) == 3 and first == subset(1, 0.5)
    assert any(subset(seed, 0.0) != first for seed in (2, 3, 4))

    # extra_train (the KG name sentences of a study regime) is appended whole, after the subset
    extra = tmp_path / "names.json"
    names = {"tokenized_text": ["asthma", ",", "gout", "."], "ner": [[0, 0, "Disease"], [2, 2, "Disease"]],
             "kge": ["Disease::1", "Disease::2"], "corpus": "kg-names", "labels": ["Disease"]}  # fmt: skip
    extra.write_text(json.dumps([names]))
    ov = overrides(tmp_path, **{"paths.teacher": str(store), "training.train_fraction": 0.5,
                                "training.seed": 1, "paths.extra_train": str(extra)})  # fmt: skip
    train = Distiller(load_config(CFG, ov), tmp_path / "extra").train
    assert [r.tokens for r in train[:3]] == first and train[3].tokens == ["asthma", ",", "gout", "."]
    assert len(train) == 4 and train[3].kge == ["Disease::1", "Disease::2"]


def test_prompt_variation_draws_label_wordings_consistently_per_sentence(tmp_path):
    """With prompt_variation, a sentence's label is sometimes worded by a synonym or capitalised
    (configs/labels.cfg), the same wording for its gold spans and its label list; 0 = the prompt."""
    import random

    from spacy_kogner.data.labels import load_label_table, prompt_variants

    table = load_label_table()
    assert prompt_variants("Disease", table)[:2] == ["disease", "Disease"]
    assert "disorder" in prompt_variants("Disease", table)
    assert prompt_variants("anatomy", table) == ["anatomy", "Anatomy"]  # a silver prompt: casing only

    seen: dict[float, set[str]] = {}
    for p in (0.0, 1.0):
        d = Distiller(load_config(CFG, overrides(tmp_path, **{"training.prompt_variation": p})), tmp_path / f"p{p}")
        d.collator = lambda items: items  # look at the records the GLiNER collator would get
        words: set[str] = set()
        for step in range(20):
            for item in d._collate(d.train, random.Random(step)):
                assert {lbl for *_, lbl in item["ner"]} <= set(item["ner_labels"])
                words.update(item["ner_labels"])
        seen[p] = words
    assert seen[0.0] == {"chemical", "disease"}
    assert {"disorder", "Disease", "drug"} <= seen[1.0] and len(seen[1.0]) > 4
    with pytest.raises(ConfigError, match="prompt_variation"):
        check_config(load_config(CFG, {"training.prompt_variation": 1.5}), "cfg")


def test_cross_negatives_prompt_other_corpora_labels_with_a_loss_only_where_it_is_known(tmp_path):
    """A pooled corpus: corpus "chem" annotates Chemical, corpus "dis" Disease. With
    cross_negatives each sentence is also prompted with the other corpus's label; that label's
    loss is kept only on the sentence's annotated spans of another family (a chemical is not a
    disease), and the student trains through the masked loss."""
    import random

    from toy_distill import SENTENCES

    records = []
    for i, (tokens, ner) in enumerate(SENTENCES):
        corpus, label = ("chem", "Chemical") if i % 2 else ("dis", "Disease")
        records.append({"tokenized_text": tokens, "ner": [list(x) for x in ner if x[2] == label],
                        "kge": [None for x in ner if x[2] == label], "corpus": corpus, "labels": [label]})  # fmt: skip
    (tmp_path / "pool.json").write_text(json.dumps(records))
    ov = overrides(tmp_path, **{"paths.train": str(tmp_path / "pool.json"), "training.cross_negatives": True})
    d = Distiller(load_config(CFG, ov), tmp_path / "out")
    assert d.universe == ["Chemical", "Disease"]
    batch = d._collate(d.train, random.Random(0))
    labels, mask = batch["labels"], batch["pair_mask"]  # [B, words x widths, labels]
    assert mask.shape == labels.shape and labels.shape[-1] == 2
    k = d.student.max_width
    for b, r in enumerate(d.train):
        own = "Chemical" if r.corpus == "chem" else "Disease"
        for s, e, lbl in r.ner:
            assert lbl == own
            at = s * k + e - s
            assert labels[b, at].sum() == 1  # positive in exactly one channel: its own label's
            c = int(labels[b, at].argmax())
            assert mask[b, :, c].min() == 1  # own label: every span in the loss
            assert mask[b, at, 1 - c] == 1  # the annotated chemical is a known non-disease
        if r.ner:  # the other label's channel: in the loss on the sentence's own spans only
            c = int(labels[b, r.ner[0][0] * k + r.ner[0][1] - r.ner[0][0]].argmax())
            assert mask[b, :, 1 - c].sum() == len(r.ner)
    # the masked path is GLiNER's own loss where the mask keeps everything
    from spacy_kogner.pipeline import gliner_compat as compat

    logits = torch.randn(labels.shape[0], labels.shape[1] // k, k, labels.shape[-1])
    prompts_mask, span_mask = torch.ones(labels.shape[0], labels.shape[-1]), batch["span_mask"]
    four_d = labels.view(logits.shape)
    kw = {"alpha": 0.75, "gamma": 2.0, "reduction": "sum"}
    plain = compat.span_loss(d.student.gliner, logits, four_d, prompts_mask, span_mask, **kw)
    ones = compat.span_loss(
        d.student.gliner, logits, four_d, prompts_mask, span_mask, pair_mask=torch.ones_like(mask), **kw
    )
    masked = compat.span_loss(d.student.gliner, logits, four_d, prompts_mask, span_mask, pair_mask=mask, **kw)
    assert torch.allclose(plain, ones) and masked < plain
    without = Distiller(load_config(CFG, overrides(tmp_path, **{"paths.train": str(tmp_path / "pool.json")})),
                        tmp_path / "plain")  # fmt: skip
    assert without.universe == [] and "pair_mask" not in without._collate(without.train, random.Random(0))

    distill(CFG, tmp_path / "run", ov)
    losses = [json.loads(x)["l_lang"] for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_cross_negatives_follow_per_sentence_label_sets(tmp_path):
    """Silver offered only where it matched (pooled.cfg silver_negatives = "matched"): a sentence of
    the same corpus without an anatomy match gets "anatomy" as a cross negative (loss on its gold
    spans only); the one with a match keeps the full anatomy loss."""
    import random

    from toy_distill import SENTENCES

    (t0, n0), (t1, n1) = SENTENCES[0], SENTENCES[1]
    gold = sorted({x[2] for x in n0} | {x[2] for x in n1})
    records = [
        {"tokenized_text": t0, "ner": [list(x) for x in n0] + [[0, 0, "anatomy"]],
         "kge": [None] * (len(n0) + 1), "corpus": "c", "labels": gold + ["anatomy"]},
        {"tokenized_text": t1, "ner": [list(x) for x in n1], "kge": [None] * len(n1), "corpus": "c", "labels": gold},
    ]  # fmt: skip
    (tmp_path / "pool.json").write_text(json.dumps(records))
    ov = overrides(tmp_path, **{"paths.train": str(tmp_path / "pool.json"), "training.cross_negatives": True})
    d = Distiller(load_config(CFG, ov), tmp_path / "out")
    assert d.universe == gold + ["anatomy"]
    full, masked = (d._collate([r], random.Random(0))["pair_mask"] for r in d.train)  # [1, spans, labels]
    assert full.min() == 1  # the matched sentence: every (span, label) pair is in the loss
    assert full.shape[-1] == masked.shape[-1] == len(gold) + 1
    assert masked.sum(dim=1).min() == len(n1) > 0  # its anatomy channel: only its gold spans
