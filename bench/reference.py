"""Plain-Python references for the Rust core's benches (bench/test_hot_path.py,
bench/test_core.py): the same work done the obvious way with the standard library (json,
re, hashlib), so a figure of the Rust core can be read as a ratio to one measured in the
same run.

- ReferencePolicy: the policy's rules evaluated rule by rule, regex by regex;
- ReferenceCache: a dict under a hashlib key of the normalized request;
- ReferenceChain: a hash-chained, framed append, and verify_rust_chain: links, leaf
  hashes and Merkle root of a chain the Rust writer wrote (bench/test_core.py checks the
  root it finds against verify_chain's).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path

from gateway_bench import policy_50


def policy_doc(rules: int) -> str:
    """A policy of `rules` rules in the proportions of gateway_bench.policy_50 (a fifth
    regex, two fifths keyword, two fifths on tenant/model/headers), none of which matches
    the bench prompts. Past policy_50's ten regexes each comes back with an alternative of
    its own, so no two rules are the same."""
    base = json.loads(policy_50())["rules"]
    regexes = [r["when"]["prompt"]["regex"][0] for r in base if "regex" in r["when"].get("prompt", {})]
    out = []
    for i in range(rules):
        kind = i % 5
        if kind == 0:
            n = i // 5
            rx = regexes[n % len(regexes)]
            if n >= len(regexes):
                rx += rf"|\bnever-seen-{n}\b"
            out.append({"id": f"regex-{n}", "when": {"prompt": {"regex": [rx]}}, "action": "deny"})
        elif kind in (1, 2):
            words = [f"forbidden-term-{i}-a", f"forbidden-term-{i}-b"]
            prompt = {"keywords": words, "case_insensitive": True}
            out.append({"id": f"kw-{i}", "when": {"prompt": prompt}, "action": "deny"})
        else:
            when = [
                {"tenants": [f"tenant-{i}"]},
                {"models": [f"legacy-model-{i}*"]},
                {"headers": {"x-team": [f"t{i}"]}},
            ]
            out.append({"id": f"ctx-{i}", "when": when[i % 3], "action": "deny"})
    return json.dumps({"default": "allow", "rules": out})


def request_key(tenant: str, request: dict) -> str:
    """The cache key of a parsed chat request: tenant, API, the request normalized (keys
    sorted, `stream` dropped) and the versions, under SHA-256."""
    normalized = json.dumps({k: v for k, v in request.items() if k != "stream"}, sort_keys=True).encode()
    return hashlib.sha256(tenant.encode() + b"chat/whole" + normalized + b"1,1,1").hexdigest()


class ReferencePolicy:
    """The same rules evaluated the obvious way in Python: rule by rule, regex by regex."""

    def __init__(self, doc: dict):
        self.rules = []
        for rule in doc["rules"]:
            when = rule.get("when", {})
            prompt = when.get("prompt", {})
            flags = re.IGNORECASE if prompt.get("case_insensitive") else 0
            regexes = [re.compile(r, flags) for r in prompt.get("regex", [])]
            keywords = [k.lower() if flags else k for k in prompt.get("keywords", [])]
            self.rules.append((rule["id"], rule["action"], when, regexes, keywords, bool(flags)))

    def decide(self, tenant: str, request: dict) -> str:
        """allow or deny for a parsed request."""
        text = "\n".join(m["content"] for m in request["messages"] if isinstance(m.get("content"), str))
        lowered = text.lower()
        for _rule_id, action, when, regexes, keywords, folded in self.rules:
            if "tenants" in when and tenant not in when["tenants"]:
                continue
            if "models" in when and not any(
                re.fullmatch(g.replace("*", ".*"), request["model"]) for g in when["models"]
            ):
                continue
            if "headers" in when:
                continue  # the benches send none of the headers the rules look at
            if regexes or keywords:
                haystack = lowered if folded else text
                if not (any(r.search(text) for r in regexes) or any(k in haystack for k in keywords)):
                    continue
            if action == "deny":
                return "deny"
        return "allow"

    def evaluate(self, tenant: str, body: bytes) -> str:
        """Parse and decide: the policy evaluation alone."""
        return self.decide(tenant, json.loads(body))

    def admit(self, tenant: str, body: bytes) -> tuple[str, str]:
        """Parse, decide and build the cache key (bench/test_hot_path.py's admission)."""
        request = json.loads(body)
        return self.decide(tenant, request), request_key(tenant, request)


class ReferenceCache:
    """A response cache as a dict under the request's hashlib key, with an expiry."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[int, str, bytes, float]] = {}

    def key(self, tenant: str, body: bytes) -> str:
        return request_key(tenant, json.loads(body))

    def get(self, tenant: str, body: bytes) -> bytes | None:
        entry = self.entries.get(self.key(tenant, body))
        if entry is None or entry[3] < time.monotonic():
            return None
        return entry[2]

    def put(self, key: str, status: int, body: bytes, ttl_s: float) -> None:
        self.entries[key] = (status, "application/json", bytes(body), time.monotonic() + ttl_s)


WRITER_FIELDS = frozenset({"chain", "prev", "seq", "ts", "v"})


def _leaf(payload: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + payload).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class ReferenceChain:
    """A hash-chained append in Python: the record's fields parsed, the writer's own fields
    added (v, chain, seq, prev, ts), canonical JSON, its leaf hash, a frame (length,
    CRC-32 from zlib: the standard library has no CRC-32C), one write(2)."""

    def __init__(self, path: Path, chain: str = "reference") -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.chain = chain
        self.seq = 0
        self.prev = bytes(32)

    def append(self, fields_json: bytes) -> int:
        """Engine.event's work: the fields come as JSON."""
        fields = json.loads(fields_json)
        if not isinstance(fields, dict):
            raise ValueError("an event is a JSON object")
        return self.append_fields(fields)

    def append_fields(self, fields: dict) -> int:
        """Engine.record's append: the fields are built by the caller."""
        if WRITER_FIELDS & fields.keys():
            raise ValueError("the writer's fields cannot be supplied")
        self.seq += 1
        ts = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        record = {**fields, "v": 2, "chain": self.chain, "seq": self.seq, "prev": self.prev.hex(), "ts": ts}
        payload = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        self.prev = _leaf(payload)
        os.write(self.fd, len(payload).to_bytes(4, "little") + zlib.crc32(payload).to_bytes(4, "little") + payload)
        return self.seq

    def close(self) -> None:
        os.close(self.fd)


def verify_rust_chain(root: str, chain: str) -> tuple[int, str, str]:
    """Walks the segments of a chain the Rust writer wrote (rust/core/src/audit/FORMAT.md):
    every record parsed, its `seq` and `prev` checked against the one before, its leaf hash
    taken, and the Merkle root built from them. Frame CRCs (CRC-32C) and checkpoint notes
    are not checked. Returns (records, head hash as hex, Merkle root as base64)."""
    directory = Path(root) / chain
    seq, prev = 0, bytes(32)
    frontier: list[tuple[int, bytes]] = []  # (height, root) of the perfect subtrees, largest first
    for segment in sorted(directory.glob("[0-9]" * 8 + ".seg")):
        data = segment.read_bytes()
        if data[:8] != b"GWDAUDIT" or int.from_bytes(data[8:10], "little") != 2:
            raise ValueError(f"{segment}: not a version 2 segment")
        at = 10 + 8 + int.from_bytes(data[10:14], "little")  # past the segment header's frame
        while at < len(data):
            n = int.from_bytes(data[at : at + 4], "little")
            payload = data[at + 8 : at + 8 + n]
            if len(payload) < n:
                raise ValueError(f"{segment}: a frame cut short at byte {at}")
            record = json.loads(payload)
            if record["seq"] != seq + 1 or record["prev"] != prev.hex() or record["chain"] != chain:
                raise ValueError(f"{segment}: the chain breaks at seq {seq + 1}")
            seq, prev = seq + 1, _leaf(payload)
            frontier.append((0, prev))
            while len(frontier) > 1 and frontier[-1][0] == frontier[-2][0]:
                (height, left), (_, right) = frontier[-2], frontier.pop()
                frontier[-1] = (height + 1, _node(left, right))
            at += 8 + n
    if not frontier:
        return 0, prev.hex(), base64.b64encode(hashlib.sha256(b"").digest()).decode()
    tree = frontier[-1][1]
    for _, left in reversed(frontier[:-1]):
        tree = _node(left, tree)
    return seq, prev.hex(), base64.b64encode(tree).decode()


# The fields of a request's audit record as the references write it (beside per-request ones).
REQUEST_RECORD = {
    "kind": "request",
    "request_id": "req",
    "tenant": "acme",
    "api": "chat",
    "model": "mock-gpt",
    "decision": "allow",
    "rules": [],
    "policy_version": 1,
    "routing_version": 1,
    "config_version": 1,
    "status": 200,
}
