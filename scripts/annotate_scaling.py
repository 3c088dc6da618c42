#!/usr/bin/env python
"""Measure ``annotate`` engines on one machine and extrapolate to PubMed.

What it does, in one session so that the ratios are comparable:

1. builds a sample of abstracts from the mirrored corpora (JNLPBA test/dev documents as they are,
   NCBI-disease, BC5CDR and, to fill up, BC2GM test/dev sentences grouped 10 to an abstract);
2. writes an untrained pipeline with ``python -m spacy_kogner init-model`` (speed does not depend
   on the weights) and sets its threshold so that about 3% of the flat candidate spans pass;
3. runs ``python -m spacy_kogner annotate`` with ``--engine local`` (1 thread),
   ``--engine processes --workers 2``, ``--engine ray --actors 2`` and, with ``--threads-row``,
   local with ``--threads 2`` for speed only (its scores differ in the last float bit, so its
   table is not compared);
4. runs Ray again, SIGKILLs it midway, resumes it, and checks all tables are byte-identical;
5. prints and writes (JSON + Markdown) docs/s per engine and the PubMed arithmetic.

Everything goes under ``--work`` (default /tmp/kogner-annotate-scaling), nothing into the repo.
Run from the repository root: ``python scripts/annotate_scaling.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SOURCES = [  # (corpus, split, group size; 0 = the file's own -DOCSTART- documents)
    ("JNLPBA", "test", 0),
    ("JNLPBA", "dev", 0),
    ("BC5CDR", "test", 10),
    ("BC5CDR", "dev", 10),
    ("NCBI-disease", "test", 10),
    ("NCBI-disease", "dev", 10),
    ("BC2GM", "test", 10),
    ("BC2GM", "dev", 10),
]


def build_sample(data: Path, n_docs: int, out: Path) -> dict[str, Any]:
    from spacy_kogner.data.readers import iter_documents, read_corpus

    docs: list[tuple[str, str, int]] = []  # id, text, sentences
    for corpus, split, group in SOURCES:
        sentences = read_corpus(data / "ner" / corpus / f"{split}.tsv", corpus=corpus)
        if group:
            groups = [sentences[i : i + group] for i in range(0, len(sentences), group)]
        else:
            groups = list(iter_documents(sentences))
        for k, sents in enumerate(groups):
            text = " ".join(" ".join(s.tokens) for s in sents)
            docs.append((f"{corpus}-{split}-{k}", text, len(sents)))
        if len(docs) >= n_docs:
            break
    docs = docs[:n_docs]
    if len(docs) < n_docs:
        raise SystemExit(f"only {len(docs)} abstracts in the mirror")
    with out.open("w", encoding="utf8") as handle:
        for doc_id, text, _ in docs:
            handle.write(json.dumps({"id": doc_id, "text": text}) + "\n")
    return {
        "docs": len(docs),
        "sentences": sum(n for *_, n in docs),
        "sentences_per_doc": round(sum(n for *_, n in docs) / len(docs), 2),
        "chars_per_doc": round(sum(len(t) for _, t, _ in docs) / len(docs), 1),
        "by_corpus": {c: sum(1 for d in docs if d[0].startswith(c + "-")) for c, *_ in dict.fromkeys(SOURCES)},
    }


def make_pipeline(path: Path, sample: Path, env: dict[str, str]) -> float:
    subprocess.run(
        [sys.executable, "-m", "spacy_kogner", "init-model", str(path), "--labels", "Disease,Chemical,Gene"],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    import numpy as np
    import spacy

    nlp = spacy.load(path)
    pipe = nlp.get_pipe("kogner")
    pipe.configure(threshold=0.0)
    texts = [json.loads(x)["text"] for x in sample.read_text(encoding="utf8").splitlines()[:16]]
    scores = [s for doc in nlp.pipe(texts) for s in doc.spans["kogner"].attrs["scores"]]
    threshold = float(np.quantile(scores, 0.97))
    pipe.configure(threshold=threshold)
    nlp.to_disk(path)
    return threshold


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def table_digest(out: Path) -> str:
    manifest = json.loads((out / "manifest.json").read_text())
    digest = hashlib.sha256()
    for key in sorted(manifest["shards"], key=int):
        digest.update((out / manifest["shards"][key]["file"]).read_bytes())
    return digest.hexdigest()


def steady_rate(run: dict[str, Any], shard_size: int) -> float | None:
    """docs/s between the first and the last shard written (start-up left out; in the JSON only:
    Ray returns results in bursts, which makes it unreliable for few shards)."""
    times = run.get("shard_times") or []
    if len(times) < 3:
        return None
    return (len(times) - 1) * shard_size / (times[-1][1] - times[0][1])


def annotate(
    pipeline: Path, sample: Path, out: Path, extra: list[str], env: dict[str, str], kill_at: float = 0.0
) -> dict[str, Any]:
    """One CLI run in its own session; with ``kill_at``, SIGKILL it once that share of documents is done."""
    args = [sys.executable, "-m", "spacy_kogner", "annotate", str(pipeline), str(sample), str(out), "--no-progress"]
    before = loadavg()
    start = time.perf_counter()
    proc = subprocess.Popen(args + extra, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    killed = False
    try:
        if kill_at:
            manifest = out / "manifest.json"
            while proc.poll() is None:
                if manifest.is_file():
                    try:
                        m = json.loads(manifest.read_text())
                    except ValueError:
                        m = None
                    total = m and m.get("input", {}).get("records")
                    if m and total and m["totals"]["docs"] >= kill_at * total:
                        proc.send_signal(signal.SIGKILL)
                        killed = True
                        break
                time.sleep(0.2)
        stdout, stderr = proc.communicate()
    finally:
        try:  # a SIGKILLed driver can leave Ray agents behind: end this run's session
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    wall = time.perf_counter() - start
    if not killed and proc.returncode != 0:
        raise SystemExit(f"annotate failed ({proc.returncode}):\n{stderr[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    return {"wall_s": wall, "killed": killed, "manifest": manifest, "load_before": before, "load_after": loadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/kogner-annotate-scaling"))
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--shard-size", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="processes workers = Ray actors")
    parser.add_argument("--threads-row", action="store_true", help="also time local --threads 2 (speed only)")
    parser.add_argument("--kill-at", type=float, default=0.5, help="share of documents done when Ray is killed")
    parser.add_argument("--pubmed-docs", type=float, default=36e6)
    parser.add_argument("--note", default="", help="what else ran on the machine (loadavg is recorded per run)")
    parser.add_argument("--gpu-sent-per-s", type=str, default="1300,2000", help="assumed H100 pipe speed range")
    args = parser.parse_args()

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    sample = work / "abstracts.jsonl"
    info = build_sample(args.data, args.docs, sample)
    pipeline = work / "pipeline"
    threshold = make_pipeline(pipeline, sample, env)
    common = ["--shard-size", str(args.shard_size), "--batch-size", str(args.batch_size), "--overwrite"]
    n = args.workers
    ray_tmp = work / "ray"
    ray_tmp.mkdir(exist_ok=True)
    plan = [
        ("local", ["--engine", "local"]),
        (f"processes x{n}", ["--engine", "processes", "--workers", str(n)]),
        (f"ray x{n}", ["--engine", "ray", "--actors", str(n), "--ray-temp-dir", str(ray_tmp)]),
    ]
    if args.threads_row:
        plan.append(("local --threads 2 (speed only)", ["--engine", "local", "--threads", "2"]))
    results: dict[str, Any] = {}
    for name, extra in plan:
        out = work / ("out-" + name.split()[0] + ("-t2" if "threads" in name else ""))
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
        r = annotate(pipeline, sample, out, common + extra, env)
        run = r["manifest"]["runs"][-1]
        results[name] = {
            "wall_s": round(r["wall_s"], 1),
            "docs_per_s_wall": round(args.docs / r["wall_s"], 3),
            "docs_per_s_loop": run["docs_per_s"],
            "docs_per_s_steady": round(steady_rate(run, args.shard_size) or 0, 3),
            "load_s": run["load_seconds"],
            "first_shard_s": round(run["load_seconds"] + run["shard_times"][0][1], 1),
            "entities": r["manifest"]["totals"]["rows"],
            "table_sha256": table_digest(out),
            "loadavg_before": r["load_before"],
            "loadavg_after": r["load_after"],
        }
        print(f"    {results[name]}", flush=True)

    print(f"[{time.strftime('%H:%M:%S')}] ray killed at {args.kill_at:.0%} and resumed ...", flush=True)
    out = work / "out-ray-killed"
    # a folder left by an earlier invocation holds a finished manifest: the kill below would fire
    # at once on it, before this run had rewritten anything
    shutil.rmtree(out, ignore_errors=True)
    ray_extra = common + plan[2][1]
    first = annotate(pipeline, sample, out, ray_extra, env, kill_at=args.kill_at)
    done_at_kill = first["manifest"]["totals"]["docs"]
    second = annotate(pipeline, sample, out, [a for a in ray_extra if a != "--overwrite"], env)  # the same command
    resumed = {
        "killed": first["killed"],
        "docs_done_when_killed": done_at_kill,
        "docs_in_resumed_run": second["manifest"]["runs"][-1]["docs"],
        "complete": second["manifest"]["complete"],
        "table_sha256": table_digest(out),
    }
    results["ray killed + resumed"] = resumed
    print(f"    {resumed}", flush=True)

    compared = [k for k in results if "speed only" not in k]
    digests = {results[k]["table_sha256"] for k in compared}
    report = {
        "machine": {
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "note": args.note,
        },
        "sample": info,
        "threshold": threshold,
        "settings": {"shard_size": args.shard_size, "batch_size": args.batch_size, "threads_per_copy": 1},
        "results": results,
        "identical_tables": len(digests) == 1,
    }
    report["pubmed"] = pubmed_arithmetic(report, args, n)
    (work / "scaling.json").write_text(json.dumps(report, indent=2))
    (work / "scaling.md").write_text(markdown(report, n))
    print(markdown(report, n))


def pubmed_arithmetic(report: dict[str, Any], args: argparse.Namespace, n: int) -> dict[str, Any]:
    """Per-document cost here, and what one day of PubMed takes (CPU measured, GPU assumed)."""
    results = report["results"]
    per_core = results["local"]["docs_per_s_loop"]  # one pipeline copy on one core, model loaded
    best = max(results[f"processes x{n}"]["docs_per_s_wall"], results[f"ray x{n}"]["docs_per_s_wall"])
    day = 86400.0
    docs = args.pubmed_docs
    spd = report["sample"]["sentences_per_doc"]
    lo, hi = (float(x) for x in args.gpu_sent_per_s.split(","))
    return {
        "docs": docs,
        "cpu_seconds_per_doc": round(1 / per_core, 3),
        "cpu_core_days": round(docs / per_core / day, 1),
        "cpu_actors_for_one_day": int(-(-docs // (per_core * day))),
        "this_box_days_at_best_engine": round(docs / best / day, 1),
        "gpu_assumed_sent_per_s": [lo, hi],
        "sentences_per_abstract": spd,
        "gpu_docs_per_s": [round(lo / spd, 1), round(hi / spd, 1)],
        "gpu_days": [round(docs / (hi / spd) / day, 2), round(docs / (lo / spd) / day, 2)],
        "gpus_for_one_day": [int(-(-docs // (hi / spd * day))), int(-(-docs // (lo / spd * day)))],
    }


def markdown(report: dict[str, Any], n: int) -> str:
    r = report["results"]
    rows = [
        "| engine | docs/s, whole command | vs local | docs/s, annotation loop | first shard | load avg | table |",
        "|---|---|---|---|---|---|---|",
    ]
    base = r["local"]["docs_per_s_wall"]
    for name, row in r.items():
        if "wall_s" not in row:
            continue
        same = "speed only" if "speed only" in name else ("identical" if report["identical_tables"] else "DIFFERS")
        load = f"{row['loadavg_before'][0]:.1f} -> {row['loadavg_after'][0]:.1f}"
        rows.append(
            f"| {name} | {row['docs_per_s_wall']:.2f} | {row['docs_per_s_wall'] / base:.2f}x "
            f"| {row['docs_per_s_loop']:.2f} | {row['first_shard_s']:.0f} s | {load} | {same} |"
        )
    k = r["ray killed + resumed"]
    p = report["pubmed"]
    m = report["machine"]
    s = report["sample"]
    return "\n".join(
        [
            f"Machine: {m['cpu']}, {m['cpus']} CPUs, no GPU; {m['note']}.",
            f"Sample: {s['docs']} abstracts ({s['sentences_per_doc']} sentences, {s['chars_per_doc']:.0f} characters "
            f"each on average) from {s['by_corpus']}; untrained pipeline (init-model), "
            f"threshold {report['threshold']:.4f}.",
            "",
            *rows,
            "",
            f"Ray killed at {k['docs_done_when_killed']} documents done, resumed with {k['docs_in_resumed_run']} "
            f"documents left: complete = {k['complete']}, "
            f"same table = {k['table_sha256'] == r['local']['table_sha256']}.",
            f"All compared tables byte-identical: {report['identical_tables']}.",
            "",
            f"PubMed ({p['docs']:.0f} abstracts): {p['cpu_seconds_per_doc']} CPU-seconds per abstract here "
            f"= {p['cpu_core_days']} core-days = {p['cpu_actors_for_one_day']} one-core actors for one day; "
            f"this box at its best engine: {p['this_box_days_at_best_engine']} days.",
            f"GPU (extrapolation, not measured here): {p['gpu_assumed_sent_per_s'][0]:.0f}-"
            f"{p['gpu_assumed_sent_per_s'][1]:.0f} sentences/s per H100 / {p['sentences_per_abstract']} sentences "
            f"per abstract = {p['gpu_docs_per_s'][0]}-{p['gpu_docs_per_s'][1]} abstracts/s per GPU actor "
            f"-> {p['gpu_days'][0]}-{p['gpu_days'][1]} GPU-days, {p['gpus_for_one_day'][0]}-"
            f"{p['gpus_for_one_day'][1]} GPUs for one day.",
        ]
    )


if __name__ == "__main__":
    main()
