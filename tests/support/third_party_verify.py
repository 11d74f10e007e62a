"""An auditor's re-verification of a gatewayd audit trail, written from the documents alone
(rust/core/src/audit/FORMAT.md, docs/AUDIT.md, RFC 9162, C2SP signed-note): standard
library and PyNaCl, no gatewayd code.

    third_party_verify.py chain ROOT CHAIN VKEY        frames, links, headers, the Merkle
                                                       tree, and every checkpoint note
    third_party_verify.py inclusion PROOF.json VKEY    output of `gatewayd audit prove`
    third_party_verify.py consistency PROOF.json VKEY  output of `gatewayd audit consistency`

Prints `ok: ...` and exits 0, or prints what failed and exits 1.
"""

import base64
import hashlib
import json
import os
import re
import struct
import sys

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

_CRC_TABLE = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ (0x82F63B78 if _c & 1 else 0)
    _CRC_TABLE.append(_c)


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def leaf(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def tree_root(stack):
    """Root of a tree given its perfect subtrees, largest first."""
    if not stack:
        return hashlib.sha256(b"").digest()
    root = stack[-1]
    for left in reversed(stack[:-1]):
        root = node(left, root)
    return root


def push(stack, size, hash_):
    while size & 1:
        hash_ = node(stack.pop(), hash_)
        size >>= 1
    stack.append(hash_)


def check_note(text, vkey):
    """(origin, size, root) of a checkpoint whose signature by `vkey` verifies."""
    name, key_id, blob = vkey.split("+", 2)
    public = base64.b64decode(blob)[1:]
    assert hashlib.sha256(name.encode() + b"\n\x01" + public).digest()[:4].hex() == key_id, "vkey id"
    body, _, signatures = text.rpartition("\n\n")
    body += "\n"
    for line in signatures.splitlines():
        signer, _, sig = line.removeprefix("\u2014 ").partition(" ")
        raw = base64.b64decode(sig)
        if signer == name and raw[:4].hex() == key_id:
            try:
                VerifyKey(public).verify(body.encode(), raw[4:])
            except BadSignatureError:
                raise AssertionError("bad checkpoint signature") from None
            origin, size, root = body.splitlines()[:3]
            return origin, int(size), base64.b64decode(root)
    raise AssertionError("no signature by the given key")


def verify_chain(root, chain, vkey):
    folder = os.path.join(root, chain)
    numbers = sorted(int(f[:8]) for f in os.listdir(folder) if re.fullmatch(r"[0-9]{8}\.seg", f))
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), "a segment is missing"
    notes = {}
    names = (
        os.listdir(os.path.join(folder, "checkpoints")) if os.path.isdir(os.path.join(folder, "checkpoints")) else []
    )
    for name in (n for n in names if n.endswith(".note")):
        origin, size, note_root = check_note(open(os.path.join(folder, "checkpoints", name)).read(), vkey)
        assert origin.endswith("/" + chain) and name == f"{size}.note", f"{name}: not this chain's"
        notes[size] = note_root
    seq = head = stack = None
    retention = 0
    checked = 0
    for i, number in enumerate(numbers):
        data = open(os.path.join(folder, f"{number:08}.seg"), "rb").read()
        assert data[:10] == b"GWDAUDIT\x02\x00", f"{number:08}.seg: magic or version"
        at, last = 10, i == len(numbers) - 1
        header, at = read_frame(data, at)
        h = json.loads(header)
        prev, tree = bytes.fromhex(h["prev"]), [bytes.fromhex(t) for t in h["tree"]]
        if seq is None:  # the first segment kept: its header is where the chain stands
            seq, head, stack, first_seq = h["first_seq"] - 1, prev, tree, h["first_seq"]
            assert number > 1 or (seq, head, stack) == (0, bytes(32), []), "genesis header"
        assert (h["chain"], h["first_seq"], prev, tree) == (chain, seq + 1, head, stack), f"{number:08}.seg header"
        while at < len(data):
            if data[at : at + 8] == bytes(8) and last and not data[at:].strip(b"\0"):
                break  # the space a live writer reserved after its last record
            try:
                payload, at = read_frame(data, at)
            except EOFError:
                assert last, f"{number:08}.seg: truncated frame"
                break
            r = json.loads(payload)
            where = f"{number:08}.seg seq {seq + 1}"
            assert (r["v"], r["chain"], r["seq"], r["prev"]) == (2, chain, seq + 1, head.hex()), where
            seq, head = seq + 1, leaf(payload)
            push(stack, seq - 1, head)
            if r.get("kind") == "retention":
                retention = max(retention, r["first_segment"])
            if seq in notes:
                assert tree_root(stack) == notes[seq], f"checkpoint {seq} does not match the chain"
                checked += 1
    assert max(notes, default=0) <= seq, "a checkpoint covers records that are gone"
    if numbers[0] > 1:
        assert retention >= numbers[0], "early segments removed without a retention record"
        assert any(size >= first_seq for size in notes), "retention not pinned by a checkpoint"
    return f"ok: {chain} has {seq} records, root {tree_root(stack).hex()}, {checked} checkpoint(s) match"


def read_frame(data, at):
    if at + 8 > len(data):
        raise EOFError
    n, crc = struct.unpack_from("<II", data, at)
    payload = data[at + 8 : at + 8 + n]
    if len(payload) < n:
        raise EOFError
    assert crc32c(payload) == crc, f"CRC mismatch at byte {at}"
    return payload, at + 8 + n


def inclusion_root(leaf_hash, index, size, proof):
    """RFC 9162 section 2.1.3.2."""
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        assert sn > 0, "proof too long"
        if fn & 1 or fn == sn:
            r = node(p, r)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node(r, p)
        fn, sn = fn >> 1, sn >> 1
    assert sn == 0, "proof too short"
    return r


def consistency_roots(first, second, first_root, proof):
    """RFC 9162 section 2.1.4.2: the (first, second) roots the proof leads to."""
    if first & (first - 1) == 0:
        proof = [first_root] + proof
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = proof[0]
    for c in proof[1:]:
        assert sn > 0, "proof too long"
        if fn & 1 or fn == sn:
            fr, sr = node(c, fr), node(c, sr)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node(sr, c)
        fn, sn = fn >> 1, sn >> 1
    assert sn == 0, "proof too short"
    return fr, sr


def verify_inclusion(path, vkey):
    doc = json.load(open(path))
    for p in doc["proofs"]:
        _, size, root = check_note(p["checkpoint"], vkey)
        record = p["record"].encode()
        assert json.loads(record)["request_id"] == doc["request_id"], "another request's record"
        hashes = [base64.b64decode(h) for h in p["proof"]]
        assert inclusion_root(leaf(record), p["index"], size, hashes) == root, "inclusion proof fails"
    return f"ok: {len(doc['proofs'])} record(s) of request {doc['request_id']} are in signed trees"


def verify_consistency(path, vkey):
    doc = json.load(open(path))
    old_origin, old_size, old_root = check_note(doc["old"]["checkpoint"], vkey)
    new_origin, new_size, new_root = check_note(doc["new"]["checkpoint"], vkey)
    assert old_origin == new_origin and 0 < old_size <= new_size, "not two checkpoints of one log"
    proof = [base64.b64decode(h) for h in doc["proof"]]
    if old_size == new_size:
        assert not proof and old_root == new_root, "same size, different roots"
    else:
        assert consistency_roots(old_size, new_size, old_root, proof) == (old_root, new_root), "not consistent"
    return f"ok: {new_origin} at size {new_size} extends size {old_size}"


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    verify = {"chain": verify_chain, "inclusion": verify_inclusion, "consistency": verify_consistency}[mode]
    try:
        print(verify(*rest))
    except (AssertionError, KeyError, ValueError) as exc:
        print(f"FAILED: {exc}")
        sys.exit(1)
