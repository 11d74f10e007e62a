"""The Rust core through its Python API, each case beside a plain-Python reference doing the
same work (bench/reference.py), in one run (pytest-benchmark), so that each figure can be
read as a ratio: what `make bench-ci` (bench/ci.py) gates on.

    python -m pytest bench/test_core.py --benchmark-only --benchmark-columns=min,median,rounds

- policy/<N>rules-<size>: `Engine.admit` with the cache off (parse, N-rule policy,
  routing) against json + `re`/keyword search over the same rules, by rule count (10, 50,
  200 on a 4 KiB prompt) and by prompt size (200 B, 4 KiB, 64 KiB under 50 rules);
- cache/get: `Engine.admit` with CacheMode.FORCED answering from an entry (a policy
  without rules, so the cache is the work) against a dict under a hashlib key;
- cache/put: `Engine.record` filling the entry. The extension fills the cache only in
  `record`, which also appends the request's audit record, so the reference does both too:
  a dict put and a hashlib-chained append of the same fields;
- audit/append: `Engine.event` (parse, canonical JSON, leaf hash, CRC, write) against
  bench/reference.py's ReferenceChain;
- audit/verify: `verify_chain` over a chain of VERIFY_RECORDS records against a Python walk
  of the same segment files (links, leaf hashes, Merkle root; no CRC-32C, no notes).

Each case is parametrized by `side` (ours | reference) and tags its benchmark with
extra_info `pair` and `side`, which is how bench/ci.py pairs them. Under plain `pytest`
(benchmarks disabled) each case runs once, as a test that both sides agree.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audit_bench import RECORD  # noqa: E402
from gateway_bench import PROMPT  # noqa: E402
from reference import (  # noqa: E402
    REQUEST_RECORD,
    ReferenceCache,
    ReferenceChain,
    ReferencePolicy,
    policy_doc,
    verify_rust_chain,
)

from gatewayd import _core  # noqa: E402
from gatewayd.control.documents import RuntimeConfig  # noqa: E402
from gatewayd.control.snapshot import Served  # noqa: E402

SIDES = ("ours", "reference")
ROUTING = json.dumps({"routes": [{"match": "mock-*", "provider": "mock"}]}).encode()
VERSIONS = _core.Versions(1, 1, 1)
PROMPT_SIZES = {"200B": 200, "4KiB": 4 << 10, "64KiB": 64 << 10}
POLICY_CASES = [(10, "4KiB"), (50, "4KiB"), (200, "4KiB"), (50, "200B"), (50, "64KiB")]
CACHED = json.dumps({"model": "mock-gpt", "temperature": 0, "messages": [{"role": "user", "content": PROMPT}]}).encode()
RESPONSE = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "model": "mock-gpt",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": PROMPT}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 120, "total_tokens": 240},
    }
).encode()
EVENT = json.dumps(RECORD).encode()  # bench/audit_bench.py's request record
VERIFY_RECORDS = 20_000
# Appends grow a file for as long as they are measured: a fixed number of them instead.
APPEND_ROUNDS, APPEND_ITERATIONS = 15, 2000


def request_body(size: int) -> bytes:
    text = (PROMPT * (size // len(PROMPT) + 1))[:size]
    return json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": text}]}).encode()


def pair(benchmark, name: str, side: str) -> None:
    benchmark.group = name
    benchmark.extra_info.update(pair=name, side=side)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = _core.Engine(1000, 1 << 24, str(tmp_path_factory.mktemp("core")), "core", 1 << 30)
    engine.fence([VERSIONS])  # the versions the cache may be filled with and served under
    return engine


@pytest.fixture(scope="module")
def routing():
    return _core.Routing(ROUTING, 1, [("mock", "openai")])


@functools.cache
def served_by(policy, routing) -> Served:
    """What a request is served under, as a replica's snapshot hands it to admission."""
    return Served(policy, None, routing, RuntimeConfig(), VERSIONS, 0)


def admit(engine, policy, routing, body: bytes, cache, vary: str = ""):
    """`Engine.admit` as the pipeline calls it. A request differing in `vary` (part of the
    cache key) is judged in full; an exact repeat is recalled from the admission memo."""
    return engine.admit(
        served=served_by(policy, routing),
        api="chat",
        tenant="acme",
        request_id="req",
        headers=[],
        body=body,
        cache=cache,
        vary=vary,
    )


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("rules,size", POLICY_CASES, ids=[f"{r}rules-{s}" for r, s in POLICY_CASES])
def test_policy(benchmark, engine, routing, rules, size, side):
    pair(benchmark, f"policy/{rules}rules-{size}", side)
    body, doc = request_body(PROMPT_SIZES[size]), policy_doc(rules)
    if side == "ours":
        policy = _core.Policy(doc.encode(), 1)
        assert policy.rule_count == rules
        verdict = benchmark(admit, engine, policy, routing, body, _core.CacheMode.OFF).verdict
    else:
        verdict = benchmark(ReferencePolicy(json.loads(doc)).evaluate, "acme", body)
    assert verdict == "allow"


@pytest.fixture(scope="module")
def no_rules():
    return _core.Policy(json.dumps({"default": "allow", "rules": []}).encode(), 1)


@pytest.mark.parametrize("side", SIDES)
def test_cache_get(benchmark, engine, routing, no_rules, side):
    pair(benchmark, "cache/get", side)
    if side == "ours":
        miss = admit(engine, no_rules, routing, CACHED, _core.CacheMode.FORCED)
        engine.record(miss, status=200, response=RESPONSE, cache_ttl_s=3600)
        hit = benchmark(admit, engine, no_rules, routing, CACHED, _core.CacheMode.FORCED)
        assert hit.cache == "hit"
        assert hit.cached_body == RESPONSE
    else:
        cache = ReferenceCache()
        cache.put(cache.key("acme", CACHED), 200, RESPONSE, 3600)
        assert benchmark(cache.get, "acme", CACHED) == RESPONSE


@pytest.mark.parametrize("side", SIDES)
def test_cache_put(benchmark, routing, no_rules, side, tmp_path):
    pair(benchmark, "cache/put", side)
    if side == "ours":
        engine = _core.Engine(1000, 1 << 24, str(tmp_path), "put", 1 << 30)  # an empty cache
        engine.fence([VERSIONS])
        miss = admit(engine, no_rules, routing, CACHED, _core.CacheMode.FORCED)
        assert miss.cache == "miss" and miss.cache_key
        assert benchmark(engine.record, miss, status=200, response=RESPONSE, cache_ttl_s=3600)[0] > 0
        assert admit(engine, no_rules, routing, CACHED, _core.CacheMode.FORCED).cache == "hit"
        return
    cache, chain = ReferenceCache(), ReferenceChain(tmp_path / "put.chain")
    key = cache.key("acme", CACHED)
    prompt_sha256 = hashlib.sha256(CACHED).hexdigest()

    def record() -> int:
        cache.put(key, 200, RESPONSE, 3600)
        fields = {
            **REQUEST_RECORD,
            "cache": "miss",
            "cache_key": key,
            "prompt_sha256": prompt_sha256,
            "response_sha256": hashlib.sha256(RESPONSE).hexdigest(),
        }
        return chain.append_fields(fields)

    assert benchmark(record) > 0
    chain.close()
    assert cache.get("acme", CACHED) == RESPONSE


@pytest.mark.parametrize("side", SIDES)
def test_audit_append(benchmark, side, tmp_path):
    pair(benchmark, "audit/append", side)
    if side == "ours":
        engine = _core.Engine(16, 1 << 20, str(tmp_path), "append", 1 << 30)
        append = engine.event
    else:
        chain = ReferenceChain(tmp_path / "append.chain")
        append = chain.append
    benchmark.pedantic(append, (EVENT,), rounds=APPEND_ROUNDS, iterations=APPEND_ITERATIONS, warmup_rounds=1)
    calls = 1 if benchmark.disabled else (APPEND_ROUNDS + 1) * APPEND_ITERATIONS
    assert append(EVENT) > calls  # every call appended one record


@pytest.fixture(scope="module")
def written_chain(tmp_path_factory):
    """A chain of VERIFY_RECORDS records as the Rust writer writes them, and its report."""
    root = str(tmp_path_factory.mktemp("verify"))
    engine = _core.Engine(16, 1 << 20, root, "verify", 1 << 30)
    for _ in range(VERIFY_RECORDS):
        engine.event(EVENT)
    del engine  # closes the writer
    report = _core.verify_chain(root, "verify")
    assert report["records"] == VERIFY_RECORDS and not report["problems"]
    return root, report


@pytest.mark.parametrize("side", SIDES)
def test_audit_verify(benchmark, written_chain, side):
    pair(benchmark, "audit/verify", side)
    root, expected = written_chain
    if side == "ours":
        report = benchmark(_core.verify_chain, root, "verify")
        assert (report["records"], report["head_hash"], report["root"]) == (
            expected["records"],
            expected["head_hash"],
            expected["root"],
        )
        assert not report["problems"]
    else:
        found = benchmark(verify_rust_chain, root, "verify")
        assert found == (expected["records"], expected["head_hash"], expected["root"])
