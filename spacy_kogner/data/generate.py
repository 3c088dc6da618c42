"""The LLM route to a KG-derived corpus (paper App. B), for users who have a chat endpoint.

Sample KG edges (seeded), ask an OpenAI-compatible ``/chat/completions`` endpoint to write one
sentence containing both entities (the paper's Fig. 2 prompt, in ``configs/generate.cfg``), parse
the JSON it returns, keep the entry only if both entity strings are found in the tokenised text
(the paper's sanity check), and write GLiNER JSON whose spans carry the entities' node ids.

Operational rules, each because a long paid run must not be wasted:

* **Resumable.** Every finished edge is appended as one line to ``OUT.parts.jsonl`` (written with
  one ``write`` and flushed); a rerun skips edges already there, drops a torn last line, and
  refuses to mix runs with another seed/sample. Nothing is written twice. ``OUT`` itself is
  rebuilt from the parts file at the end of every run.
* **Bounded concurrency** (``concurrency`` threads) and **retries with exponential back-off** on
  timeouts, connection errors, 429 and 5xx.
* **Clear failures.** 401/403 stop the run with "bad API key"; an endpoint that cannot be
  reached after the retries stops the run with its URL. Malformed model output is counted,
  recorded (so it is not paid for again) and skipped.
* **The key never travels on a command line** (other users of the machine see it in the process
  list): it is read only from the environment variable named by ``[generate] api_key_env``, and a
  run stops before it starts when that variable is unset. ``api_key_env = ""`` sends no key (a
  local endpoint without authentication).
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..config import Section
from ..pipeline.gliner_compat import split_words
from .labels import KindInfo

DEFAULT_GENERATE_CFG = "configs/generate.cfg"
_RETRY_STATUS = {429, 500, 502, 503, 504}


class GenerateError(RuntimeError):
    """A run that cannot go on (bad key, unreachable endpoint, a parts file of another run)."""


class TransientFailure(RuntimeError):
    """One request that still fails after the retries (e.g. repeated 503): skipped, retried on resume."""


class MalformedOutput(ValueError):
    """The model's answer is not the JSON structure the prompt asks for."""


@dataclass
class GenerateSettings(Section):
    """The ``[generate]`` section of ``configs/generate.cfg``."""

    SECTION: ClassVar[str] = "generate"
    DEFAULT_CONFIG: ClassVar[str] = DEFAULT_GENERATE_CFG

    base_url: str
    model: str
    api_key_env: str
    n: int
    seed: int
    concurrency: int
    max_retries: int
    backoff_base: float
    backoff_max: float
    timeout: float
    temperature: float
    system_prompt: str
    user_template: str


def tokenize(text: str) -> list[str]:
    """Split text into words the way GLiNER reads raw text (its own whitespace splitter)."""
    return split_words(text)


def find_tokens(tokens: list[str], needle: list[str]) -> int | None:
    """First index where ``needle`` occurs in ``tokens`` (case-insensitive), or None."""
    low = [t.lower() for t in tokens]
    ned = [t.lower() for t in needle]
    n = len(ned)
    for i in range(len(low) - n + 1):
        if n and low[i : i + n] == ned:
            return i
    return None


def parse_answer(content: str) -> dict[str, Any]:
    """The JSON object in a model answer (code fences and chatter around it tolerated)."""
    text = content.strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fence:
        text = fence.group(1).strip()
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise MalformedOutput("no JSON object in the answer")
    try:
        obj = json.loads(text[start : end + 1])
    except json.JSONDecodeError as err:
        raise MalformedOutput(f"invalid JSON ({err.msg})") from err
    if not isinstance(obj, dict) or "tokenized_text" not in obj:
        raise MalformedOutput("JSON object without 'tokenized_text'")
    tt = obj["tokenized_text"]
    if isinstance(tt, list) and all(isinstance(t, str) for t in tt):
        obj["tokenized_text"] = " ".join(tt)
    elif not isinstance(tt, str):
        raise MalformedOutput("'tokenized_text' is neither a string nor a list of strings")
    return obj


def build_record(answer: dict[str, Any], entities: list[tuple[str, str, str]]) -> dict[str, Any] | None:
    """A GLiNER record with one span per KG entity, or None if an entity string is not in the text.

    ``entities`` are (node id, name, label). The model's own indices are not trusted (the paper
    re-locates the entity strings too); its ``ner`` list only counts as an answer-shape check.
    """
    tokens = tokenize(answer["tokenized_text"])
    ner, kge = [], []
    for node_id, name, label in entities:
        needle = tokenize(name)
        start = find_tokens(tokens, needle)
        if start is None:
            return None
        ner.append([start, start + len(needle) - 1, label])
        kge.append(node_id)
    order = sorted(range(len(ner)), key=lambda k: (ner[k][0], ner[k][1]))
    return {
        "tokenized_text": tokens,
        "ner": [ner[k] for k in order],
        "kge": [kge[k] for k in order],
        "corpus": "kg-llm",
        "labels": sorted({e[2] for e in entities}),
    }


class ChatClient:
    """Minimal OpenAI-compatible chat client on the standard library (no extra dependency)."""

    def __init__(self, settings: GenerateSettings, api_key: str | None) -> None:
        self.settings = settings
        self.api_key = api_key
        self.url = settings.base_url.rstrip("/") + "/chat/completions"
        self._rng = random.Random(settings.seed)

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, json.dumps(payload).encode(), headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.settings.timeout) as resp:
            return json.loads(resp.read().decode("utf8"))

    def complete(self, system: str, user: str) -> str:
        """The assistant message text; retries transient failures, raises ``GenerateError`` on fatal ones."""
        s = self.settings
        payload = {
            "model": s.model,
            "temperature": s.temperature,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        }
        last: Exception | None = None
        for attempt in range(s.max_retries + 1):
            try:
                data = self._post(payload)
                return str(data["choices"][0]["message"]["content"])
            except urllib.error.HTTPError as err:
                if err.code in (401, 403):
                    raise GenerateError(f"bad API key: {self.url} answered HTTP {err.code}") from err
                if err.code not in _RETRY_STATUS:
                    raise GenerateError(f"{self.url} answered HTTP {err.code}: {err.reason}") from err
                last = err
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
                last = err
            except (KeyError, IndexError, TypeError, json.JSONDecodeError) as err:
                raise MalformedOutput(f"not a chat completion response ({err})") from err
            if attempt < s.max_retries:
                delay = min(s.backoff_max, s.backoff_base * 2**attempt)
                time.sleep(delay * (0.5 + self._rng.random() / 2))
        if isinstance(last, urllib.error.HTTPError):
            raise TransientFailure(f"{self.url} kept answering HTTP {last.code}") from last
        raise GenerateError(f"cannot reach endpoint {self.url}: {last}") from last


def sample_edges(kg: Any, n: int, seed: int) -> list[int]:
    """Seeded sample of edge columns (without replacement), the run's fixed work list."""
    rng = random.Random(seed)
    n = min(n, kg.num_edges)
    return sorted(rng.sample(range(kg.num_edges), n))


def edge_entities(kg: Any, j: int, kind_table: dict[str, KindInfo]) -> list[tuple[str, str, str]]:
    """(node id, name, label prompt) of both ends of edge column ``j``."""
    out = []
    for row in (int(kg.edge_index[0, j]), int(kg.edge_index[1, j])):
        kind = kg.kinds[row]
        label = kind_table[kind].prompt if kind in kind_table else kind
        out.append((kg.node_ids[row], kg.names[row], label))
    return out


def _read_parts(parts: Path) -> tuple[dict[str, Any] | None, dict[int, dict[str, Any]]]:
    """Header and finished items of a parts file; a torn last line (killed mid-write) is cut off."""
    if not parts.exists():
        return None, {}
    raw = parts.read_bytes()
    good = raw[: raw.rfind(b"\n") + 1]
    if len(good) != len(raw):
        with parts.open("r+b") as fh:
            fh.truncate(len(good))
    header, done = None, {}
    for line in good.decode("utf8").splitlines():
        if not line.strip():
            continue
        obj = json.loads(line)
        if "header" in obj:
            header = obj["header"]
        else:
            done[int(obj["edge"])] = obj
    return header, done


def api_key(settings: GenerateSettings) -> str | None:
    """The key from the environment variable ``api_key_env`` names (None when it names none)."""
    name = settings.api_key_env
    if not name:
        return None
    key = os.environ.get(name, "")
    if not key:
        raise GenerateError(
            f"the API key is read from the environment variable {name}, which is not set: export {name}=... "
            '(or set [generate] api_key_env = "" for an endpoint without a key)'
        )
    return key


def generate(
    kg: Any,
    out: str | Path,
    settings: GenerateSettings,
    kind_table: dict[str, KindInfo],
    log: Any = print,
) -> dict[str, Any]:
    """Run (or resume) a generation job; returns the counts also written to ``OUT.stats.json``.

    The API key comes from the environment variable named by ``settings.api_key_env`` only."""
    key = api_key(settings)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    parts = out.with_name(out.name + ".parts.jsonl")
    edges = sample_edges(kg, settings.n, settings.seed)
    header = {"seed": settings.seed, "n": len(edges), "kg": kg.fingerprint(), "model": settings.model}
    old_header, done = _read_parts(parts)
    if old_header is not None and old_header != header:
        raise GenerateError(f"{parts} belongs to another run ({old_header}); use another output path or delete it")
    client = ChatClient(settings, key)
    todo = [j for j in edges if j not in done]
    log(f"{len(done)} of {len(edges)} edges done already; {len(todo)} to go")
    counts: Counter = Counter(obj["status"] for obj in done.values())
    lock = threading.Lock()
    with parts.open("a", encoding="utf8") as fh:
        if old_header is None:
            fh.write(json.dumps({"header": header}) + "\n")
            fh.flush()

        def work(j: int) -> dict[str, Any]:
            ents = edge_entities(kg, j, kind_table)
            user = settings.user_template.format(
                name1=ents[0][1], type1=ents[0][2], name2=ents[1][1], type2=ents[1][2],
                relation=kg.relations[int(kg.edge_type[j])],
            )  # fmt: skip
            try:
                answer = parse_answer(client.complete(settings.system_prompt, user))
            except MalformedOutput as err:
                return {"edge": j, "status": "malformed", "error": str(err)}
            record = build_record(answer, ents)
            if record is None:
                return {"edge": j, "status": "filtered"}
            return {"edge": j, "status": "ok", "record": record}

        def record_result(result: dict[str, Any]) -> None:
            with lock:
                fh.write(json.dumps(result, ensure_ascii=False) + "\n")
                fh.flush()
                counts[result["status"]] += 1

        with ThreadPoolExecutor(max_workers=settings.concurrency) as pool:
            pending: set[Future] = set()
            it = iter(todo)
            fatal: BaseException | None = None
            while True:
                while fatal is None and len(pending) < settings.concurrency:
                    j = next(it, None)
                    if j is None:
                        break
                    pending.add(pool.submit(work, j))
                if not pending:
                    break
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    try:
                        record_result(fut.result())
                    except TransientFailure as err:
                        counts["failed"] += 1
                        log(f"skipped after retries: {err}")
                    except GenerateError as err:
                        fatal = fatal or err
            if fatal is not None:
                raise fatal
    _, done = _read_parts(parts)
    records = [done[j]["record"] for j in edges if j in done and done[j]["status"] == "ok"]
    with out.open("w", encoding="utf8") as fh:
        json.dump(records, fh, ensure_ascii=False)
        fh.write("\n")
    stats = {"edges": len(edges), **{k: counts[k] for k in ("ok", "filtered", "malformed", "failed")}}
    out.with_name(out.name + ".stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf8")
    return stats
