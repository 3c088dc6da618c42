"""Inference benchmark: raw GLiNER vs the ``kogner`` pipe vs the encoder's forward pass alone.

All variants run in one process on the same model and the same sentences, so the *ratios* are
meaningful even on a shared, noisy machine. Peak RSS is the process peak after each stage (it
can only grow), which still shows what each stage adds.
"""

from __future__ import annotations

import json
import platform
import resource
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from ..pipeline import gliner_compat as compat
from ..pipeline.component import AUTO_BATCH_SIZE
from ..pipeline.precision import native_bf16
from ..run_summary import cpu_model


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _sentences(corpus: Path, limit: int) -> list[str]:
    from ..data.readers import read_corpus

    sents = read_corpus(corpus)
    texts = [" ".join(s.tokens) for s in sents if s.tokens]
    return texts[:limit] if limit else texts


def _pipeline(model: str, labels: list[str]) -> Any:
    import spacy

    path = Path(model)
    if (path / "config.cfg").is_file():
        nlp = spacy.load(path)
        nlp.get_pipe("kogner").set_labels(labels)
        return nlp
    nlp = spacy.blank("en")
    nlp.add_pipe("kogner", config={"model": model, "labels": labels})
    return nlp


def run_bench(
    out: Path,
    corpus: Path,
    model: str,
    labels: list[str],
    limit: int,
    batch_sizes: list[int],
    int8: bool = True,
    bf16: bool = True,
) -> dict:
    """Run every variant, print a table and write JSON to ``out``.

    The int8 pipe runs last because quantising changes the shared model in place."""
    texts = _sentences(corpus, limit)
    nlp = _pipeline(model, labels)
    pipe = nlp.get_pipe("kogner")
    model = pipe.ensure_model()
    threshold = pipe.cfg["threshold"]
    prompts = [s.prompt for s in pipe.label_specs]
    n = len(texts)
    rows: dict[str, dict[str, Any]] = {}

    nlp(texts[0])  # warm-up: lazy model load, first-call allocations
    by_len = sorted(texts, key=len)
    raw_best = None
    for bs in batch_sizes:
        secs, raw = _timed(lambda bs=bs: compat.raw_inference(model.gliner, by_len, prompts, threshold, bs))
        rows[f"gliner.inference bs={bs} (length-sorted)"] = {"sent_per_s": n / secs, "peak_rss_mb": _rss_mb()}
        if raw_best is None or n / secs > raw_best[0]:
            raw_best = (n / secs, bs, raw)
    bs_pipe = pipe.cfg["batch_size"] or AUTO_BATCH_SIZE.get(model.device.type, AUTO_BATCH_SIZE["cpu"])
    secs, docs = _timed(lambda: list(nlp.pipe(texts, batch_size=256)))
    rows[f"kogner nlp.pipe (window batch {bs_pipe})"] = {"sent_per_s": n / secs, "peak_rss_mb": _rss_mb()}
    secs, singles = _timed(lambda: [nlp(t) for t in texts])
    rows["kogner nlp(text) one at a time"] = {"sent_per_s": n / secs, "peak_rss_mb": _rss_mb()}
    secs, _ = _timed(lambda: _encoder_only(model, [[t.text for t in d if not t.is_space] for d in docs], bs_pipe))
    rows[f"encoder forward only (batch {bs_pipe}, length-sorted)"] = {"sent_per_s": n / secs, "peak_rss_mb": _rss_mb()}

    bf16_agree = None
    if bf16:
        model.set_precision("bf16")
        nlp(texts[0])
        secs, bf16_docs = _timed(lambda: list(nlp.pipe(texts, batch_size=256)))
        native = "native" if native_bf16(model.device) else "emulated: no AMX/AVX512-BF16 here"
        rows[f"kogner nlp.pipe bf16 autocast ({native})"] = {"sent_per_s": n / secs, "peak_rss_mb": _rss_mb()}
        bf16_agree = _span_agreement(docs, bf16_docs)
        model.set_precision("fp32")

    int8_agree = None
    if int8:
        model.quantize_encoder()
        nlp(texts[0])
        secs, int8_docs = _timed(lambda: list(nlp.pipe(texts, batch_size=256)))
        rows["kogner nlp.pipe int8 (opt-in)"] = {"sent_per_s": n / secs, "peak_rss_mb": _rss_mb()}
        int8_agree = _span_agreement(docs, int8_docs)

    assert raw_best is not None
    agree = _agreement(docs, by_len, raw_best[2], texts)
    same = all(
        [(s.start, s.end, s.label_) for s in a.spans[pipe.cfg["spans_key"]]]
        == [(s.start, s.end, s.label_) for s in b.spans[pipe.cfg["spans_key"]]]
        for a, b in zip(docs, singles, strict=True)
    )
    result = {
        "machine": {"threads": torch.get_num_threads(), "platform": platform.platform()},
        "sentences": n,
        "labels": labels,
        "threshold": threshold,
        "best_raw_batch_size": raw_best[1],
        "pipe_over_best_raw": rows[f"kogner nlp.pipe (window batch {bs_pipe})"]["sent_per_s"] / raw_best[0],
        "pipe_equals_one_at_a_time": same,
        "entity_agreement_with_raw_gliner": agree,
        "int8_entity_agreement_with_fp32_pipe": int8_agree,
        "bf16_entity_agreement_with_fp32_pipe": bf16_agree,
        "cpu": cpu_model(),
        "native_bf16": native_bf16(model.device),
        "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    width = max(len(k) for k in rows)
    print(f"{'variant':<{width}}  sent/s  peak RSS MB   ({n} sentences, threads={torch.get_num_threads()})")
    for name, row in rows.items():
        print(f"{name:<{width}}  {row['sent_per_s']:6.1f}  {row['peak_rss_mb']:8.0f}")
    print(f"pipe / best raw = {result['pipe_over_best_raw']:.2f}x; entity agreement with raw GLiNER = {agree:.3f}")
    if bf16_agree is not None:
        print(f"bf16 entity agreement with the float pipe = {bf16_agree:.3f}")
    if int8_agree is not None:
        print(f"int8 entity agreement with the float pipe = {int8_agree:.3f}")
    return result


@torch.inference_mode()
def _encoder_only(model: Any, windows: list[list[str]], batch_size: int) -> None:
    """The floor for any span model on this encoder: tokenizer + transformer forward, nothing else."""
    encoder = compat.encoder_wrapper(model.gliner)
    windows = sorted(windows, key=len)
    for i in range(0, len(windows), batch_size):
        chunk = [w or ["."] for w in windows[i : i + batch_size]]
        enc = model.tokenizer(chunk, is_split_into_words=True, return_tensors="pt", padding=True, truncation=True)
        encoder(enc["input_ids"], enc["attention_mask"])


def _shared_share(pairs: Iterable[tuple[set, set]]) -> float:
    """Entities found by both sides over entities found by either, pooled over all texts."""
    both = total = 0
    for ours, theirs in pairs:
        both += len(ours & theirs)
        total += len(ours | theirs)
    return both / total if total else 1.0


def _span_agreement(a: list[Any], b: list[Any]) -> float:
    """Share of entities (token offsets + label) that two runs of the pipe over the same texts share."""

    def ents(doc: Any) -> set:
        return {(e.start, e.end, e.label_) for e in doc.ents}

    return _shared_share((ents(x), ents(y)) for x, y in zip(a, b, strict=True))


def _agreement(docs: list[Any], by_len: list[str], raw: list[list[dict]], texts: list[str]) -> float:
    """Share of entities (char offsets + label) that raw GLiNER and the pipe both predict."""
    raw_by_text = {t: {(e["start"], e["end"], e["label"]) for e in ents} for t, ents in zip(by_len, raw, strict=True)}
    return _shared_share(
        ({(e.start_char, e.end_char, e.label_) for e in doc.ents}, raw_by_text[text])
        for text, doc in zip(texts, docs, strict=True)
    )
