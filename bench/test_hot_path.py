"""The Rust hot path against a straightforward Python reference doing the same work, in one
run (pytest-benchmark):

    python -m pytest bench/test_hot_path.py --benchmark-only --benchmark-columns=mean,ops

- admission: parse the body, evaluate the 50-rule policy of bench/gateway_bench.py (10
  regexes, 40 keywords, 20 context rules), and build the cache key;
- recording: build the canonical audit record, hash it and append it to a file.
The reference (bench/reference.py) uses the standard library (json, re, hashlib); a real
Python gateway would add more on top. Under plain `pytest` (benchmarks disabled) each case
runs once, as a test that both sides agree.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_bench import PROMPT, policy_50  # noqa: E402
from reference import REQUEST_RECORD, ReferencePolicy  # noqa: E402
from test_core import admit  # noqa: E402

from gatewayd import _core  # noqa: E402

BODY = json.dumps({"model": "mock-gpt", "temperature": 0, "messages": [{"role": "user", "content": PROMPT}]}).encode()
ROUTING = json.dumps({"routes": [{"match": "mock-*", "provider": "mock"}]}).encode()


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    return _core.Engine(1000, 1 << 24, str(root), "bench", 1 << 30)


@pytest.fixture(scope="module")
def compiled():
    return _core.Policy(policy_50().encode(), 1), _core.Routing(ROUTING, 1, [("mock", "openai")])


FRESH = itertools.count()


def rust_admit(engine, compiled):
    """A request the engine has not seen (its `vary` differs each time), so it is parsed,
    judged and keyed in full rather than recalled from the admission memo."""
    policy, routing = compiled
    return admit(engine, policy, routing, BODY, _core.CacheMode.DETERMINISTIC, vary=str(next(FRESH)))


def test_admission_rust(benchmark, engine, compiled):
    adm = benchmark(rust_admit, engine, compiled)
    assert adm.verdict == "allow" and adm.cache_key


def test_admission_python_reference(benchmark):
    reference = ReferencePolicy(json.loads(policy_50()))
    verdict, key = benchmark(reference.admit, "acme", BODY)
    assert verdict == "allow" and len(key) == 64


def test_recording_rust(benchmark, engine, compiled):
    adm = rust_admit(engine, compiled)
    seq, _ = benchmark(lambda: engine.record(adm, status=200, response=b'{"ok": true}'))
    assert seq > 0


def test_recording_python_reference(benchmark, tmp_path):
    out = open(tmp_path / "chain.jsonl", "ab", buffering=0)
    state = {"prev": "0" * 64, "seq": 0}

    def record() -> int:
        state["seq"] += 1
        fields = {
            **REQUEST_RECORD,
            "seq": state["seq"],
            "prev": state["prev"],
            "prompt_sha256": hashlib.sha256(BODY).hexdigest(),
            "response_sha256": hashlib.sha256(b'{"ok": true}').hexdigest(),
        }
        payload = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
        state["prev"] = hashlib.sha256(payload).hexdigest()
        out.write(len(payload).to_bytes(4, "little") + payload)
        return state["seq"]

    assert benchmark(record) > 0
    out.close()
