"""The LLM route against a canned OpenAI-compatible server on 127.0.0.1 (no network).

The server answers by entity pair: valid JSON, fenced JSON, malformed text, a sentence missing
one entity (the paper's filter drops it), or a 503 on the first try (retried with back-off).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from spacy_kogner.data.generate import (
    GenerateError,
    GenerateSettings,
    build_record,
    generate,
    parse_answer,
    tokenize,
)
from spacy_kogner.data.labels import load_kind_table
from spacy_kogner.kg.graph import KnowledgeGraph

REPO = Path(__file__).resolve().parents[2]
KEY_ENV = "KOGNER_TEST_API_KEY"  # the tests' own variable: a real OPENAI_API_KEY is never read or sent
N_NODES = 12
NAMES = [f"entity-{i} alpha" if i % 3 == 0 else f"Compound{i}" for i in range(N_NODES)]
KINDS = ["Gene" if i % 2 else "Compound" for i in range(N_NODES)]
EDGES = [(i, j) for i in range(N_NODES) for j in range(i + 1, N_NODES) if (i + j) % 3 == 0]


def behaviour(user: str) -> str:
    """Deterministic answer type per prompt, so tests know what to expect."""
    return ["ok", "ok", "fenced", "malformed", "missing", "flaky", "ok"][sum(map(ord, user)) % 7]


class Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv = self.server
        if self.headers.get("Authorization") != "Bearer good":
            return self._send(401, {"error": {"message": "invalid api key"}})
        user = body["messages"][1]["content"]
        with srv.lock:  # type: ignore[attr-defined]
            srv.seen[user] += 1  # type: ignore[attr-defined]
            tries = srv.seen[user]  # type: ignore[attr-defined]
        time.sleep(srv.delay)  # type: ignore[attr-defined]
        kind = behaviour(user)
        (n1, _), (n2, _) = (part.rsplit(" (", 1) for part in user.split("-----"))
        if kind == "flaky" and tries == 1:
            return self._send(503, {"error": "busy"})
        if kind == "malformed":
            content = "Sorry, here is your sentence: {tokenized_text: oops"
        elif kind == "missing":
            content = json.dumps({"tokenized_text": f"Only {n1} appears here .", "ner": []})
        else:
            content = json.dumps(
                {"tokenized_text": f"We found that {n1} regulates {n2} in cells .", "ner": [[3, 3, "x"]]}
            )
            if kind == "fenced":
                content = f"```json\n{content}\n```"
        self._send(200, {"choices": [{"message": {"role": "assistant", "content": content}}]})

    def _send(self, code: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.lock, srv.seen, srv.delay = threading.Lock(), Counter(), 0.0  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def url(srv: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/v1"


@pytest.fixture()
def kg_files(tmp_path: Path) -> tuple[Path, Path]:
    nodes = tmp_path / "nodes.tsv"
    rows = [f"{k}::{i}\t{n}\t{k}\n" for i, (n, k) in enumerate(zip(NAMES, KINDS, strict=True))]
    nodes.write_text("id\tname\tkind\n" + "".join(rows))
    edges = tmp_path / "edges.sif"
    edges.write_text(
        "source\tmetaedge\ttarget\n" + "".join(f"{KINDS[i]}::{i}\tXrY\t{KINDS[j]}::{j}\n" for i, j in EDGES)
    )
    return nodes, edges


@pytest.fixture()
def kg(kg_files: tuple[Path, Path]) -> KnowledgeGraph:
    return KnowledgeGraph.from_hetionet(kg_files[0], [kg_files[1]])


@pytest.fixture(autouse=True)
def good_key(monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, "good")


def settings_for(srv: ThreadingHTTPServer, **kw) -> GenerateSettings:
    base = GenerateSettings.from_config()
    return replace(base, base_url=url(srv), api_key_env=KEY_ENV, backoff_base=0.01, backoff_max=0.05, timeout=5.0, **kw)


def expected(kg: KnowledgeGraph, settings: GenerateSettings, edges: list[int]) -> Counter:
    kinds = load_kind_table()
    out = Counter()
    for j in edges:
        a, b = int(kg.edge_index[0, j]), int(kg.edge_index[1, j])
        user = settings.user_template.format(
            name1=kg.names[a],
            type1=kinds[kg.kinds[a]].prompt,
            name2=kg.names[b],
            type2=kinds[kg.kinds[b]].prompt,
        )
        kind = behaviour(user)
        out[{"ok": "ok", "fenced": "ok", "flaky": "ok", "malformed": "malformed", "missing": "filtered"}[kind]] += 1
    return out


def test_parse_and_filter() -> None:
    assert parse_answer('```json\n{"tokenized_text": ["A", "b"], "ner": []}\n```')["tokenized_text"] == "A b"
    with pytest.raises(ValueError, match="no JSON"):
        parse_answer("no json here")
    rec = build_record(
        {"tokenized_text": "IL-2 binds alpha-synuclein ."},
        [("G::1", "IL-2", "gene"), ("G::2", "alpha-synuclein", "gene")],
    )
    assert rec["tokenized_text"] == tokenize("IL-2 binds alpha-synuclein .")
    assert rec["ner"] == [[0, 0, "gene"], [2, 2, "gene"]] and rec["kge"] == ["G::1", "G::2"]
    assert build_record({"tokenized_text": "IL-2 alone ."}, [("G::1", "IL-2", "g"), ("G::2", "TP53", "g")]) is None


def test_generate_end_to_end(server, kg: KnowledgeGraph, tmp_path: Path) -> None:
    settings = settings_for(server, n=15, concurrency=3)
    out = tmp_path / "llm.json"
    stats = generate(kg, out, settings, load_kind_table(), log=lambda *_: None)
    from spacy_kogner.data.generate import sample_edges

    edges = sample_edges(kg, 15, settings.seed)
    want = expected(kg, settings, edges)
    assert stats == {
        "edges": 15,
        "ok": want["ok"],
        "filtered": want["filtered"],
        "malformed": want["malformed"],
        "failed": 0,
    }
    assert want["ok"] and want["malformed"] and want["filtered"]
    records = json.loads(out.read_text())
    assert len(records) == want["ok"]
    for rec in records:
        assert len(rec["ner"]) == len(rec["kge"]) == 2
        for (s, e, _), node in zip(rec["ner"], rec["kge"], strict=True):
            assert rec["tokenized_text"][s : e + 1] == tokenize(kg.names[kg.index[node]])
    assert max(server.seen.values()) == 2  # flaky prompts were retried once, nothing else twice
    # a second run has nothing left to do and asks nothing
    before = sum(server.seen.values())
    generate(kg, out, settings, load_kind_table(), log=lambda *_: None)
    assert sum(server.seen.values()) == before
    with pytest.raises(GenerateError, match="another run"):
        generate(kg, out, replace(settings, seed=5), load_kind_table(), log=lambda *_: None)


def test_bad_key_and_unreachable(server, kg: KnowledgeGraph, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, "wrong")
    with pytest.raises(GenerateError, match="bad API key"):
        generate(kg, tmp_path / "a.json", settings_for(server, n=3), load_kind_table(), log=print)
    monkeypatch.setenv(KEY_ENV, "good")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    dead = replace(settings_for(server, n=3, max_retries=1), base_url=f"http://127.0.0.1:{port}/v1")
    with pytest.raises(GenerateError, match="cannot reach endpoint"):
        generate(kg, tmp_path / "b.json", dead, load_kind_table(), log=print)


def test_resume_after_kill(server, kg_files: tuple[Path, Path], kg: KnowledgeGraph, tmp_path: Path) -> None:
    server.delay = 0.1
    out = tmp_path / "llm.json"
    parts = tmp_path / "llm.json.parts.jsonl"
    n = len(EDGES)
    cmd = [
        sys.executable, "-m", "spacy_kogner", "generate", str(out), "--n", str(n), "--generate.api_key_env", KEY_ENV,
        "--base-url", url(server), "--concurrency", "2", "--kg-nodes", str(kg_files[0]),
        "--kg-edges", str(kg_files[1]), "--generate.backoff_base", "0.01", "--generate.timeout", "5",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy())
    deadline = time.time() + 60
    while time.time() < deadline and (not parts.exists() or parts.read_text().count("\n") < 5):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = parts.read_text().count("\n") - 1
    assert 0 < done_before < n, "the run should have been killed part-way"
    with parts.open("a") as fh:
        fh.write('{"edge": 99999, "status": "ok", "rec')  # a torn line, as if killed mid-write
    server.delay = 0.0
    settings = settings_for(server, n=n, concurrency=2)
    logs: list[str] = []
    stats = generate(kg, out, settings, load_kind_table(), log=logs.append)
    assert logs[0].startswith(f"{done_before} of {n} edges done already")
    lines = [json.loads(x) for x in parts.read_text().splitlines()]
    edges = [x["edge"] for x in lines if "edge" in x]
    assert sorted(edges) == sorted(set(edges)) and len(edges) == n  # every edge once, torn line gone
    assert stats["ok"] + stats["filtered"] + stats["malformed"] == n
    records = json.loads(out.read_text())
    assert len(records) == stats["ok"]
    texts = [" ".join(r["tokenized_text"]) for r in records]
    assert len(texts) == len(set(texts))
    assert np.all(np.array([len(r["kge"]) for r in records]) == 2)


def test_the_key_comes_only_from_the_named_environment_variable(
    server, kg_files: tuple[Path, Path], kg: KnowledgeGraph, tmp_path: Path, monkeypatch
) -> None:
    """No --api-key option (a command line is visible in the process list); an unset variable is a
    clear error naming it, before anything is written or sent; api_key_env = "" sends no key."""
    help_text = subprocess.run(
        [sys.executable, "-m", "spacy_kogner", "generate", "--help"], cwd=REPO, capture_output=True, text=True
    ).stdout
    assert "--base-url" in help_text and "--api-key" not in help_text
    monkeypatch.delenv(KEY_ENV)
    cmd = [
        sys.executable, "-m", "spacy_kogner", "generate", str(tmp_path / "cli" / "llm.json"), "--n", "3",
        "--base-url", url(server), "--kg-nodes", str(kg_files[0]), "--kg-edges", str(kg_files[1]),
        "--generate.api_key_env", KEY_ENV,
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=os.environ.copy())
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: the API key is read from the environment variable {KEY_ENV}, which is not set: export "
        f'{KEY_ENV}=... (or set [generate] api_key_env = "" for an endpoint without a key)'
    ]
    assert not (tmp_path / "cli").exists() and not server.seen
    with pytest.raises(GenerateError, match="bad API key"):  # no key sent: the server says 401
        generate(kg, tmp_path / "b.json", replace(settings_for(server, n=3), api_key_env=""), load_kind_table())
