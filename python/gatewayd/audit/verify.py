"""Whole-trail verification, as an auditor runs it: every chain of every replica (in Rust:
frames, links, segment headers, Merkle roots against every checkpoint note, retention
rules), every checkpoint signature against the keyring, and that every version a record
names can be fetched from the registry (ROLLBACK.md R8, R9)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from gatewayd import _core
from gatewayd.audit import note
from gatewayd.audit.keys import Verifier

DOMAINS = ("policy", "routing", "config")


class Broken(Exception):
    """The first broken place: `chain` and a one-line description naming file and seq."""

    def __init__(self, chain: str, what: str):
        super().__init__(f"chain {chain}: {what}")
        self.chain = chain


@dataclass
class ChainReport:
    chain: str
    records: int
    segments: int
    first_seq: int
    head_seq: int
    root: str
    checkpoints: int
    retired: int  # checkpoints over records removed by retention: signature checked only
    signers: set[str] = field(default_factory=set)


def verify_chain(root: str, chain: str, keyring: list[Verifier] | None) -> ChainReport:
    """Raises Broken at the first problem; `keyring` None means no key to check notes with."""
    try:
        r = _core.verify_chain(root, chain)
    except ValueError as exc:
        raise Broken(chain, str(exc)) from None
    report = ChainReport(chain, r["records"], r["segments"], r["first_seq"], r["head_seq"], r["root"], 0, 0)
    for path, size, retired in r["checkpoints"]:
        if keyring is None:
            raise Broken(chain, f"{path}: cannot check its signature without a keyring (--keyring)")
        try:
            signer = note.verify(Path(path).read_text(), keyring)
        except (OSError, UnicodeDecodeError, note.NoteError) as exc:
            raise Broken(chain, f"{path} (seq {size}): {exc}") from None
        report.checkpoints += 1
        report.retired += retired
        report.signers.add(f"{signer.name}+{signer.id.hex()}")
    return report


class _Versions(msgspec.Struct):
    """The fields of a record that name versions."""

    policy_version: int | None = None
    routing_version: int | None = None
    config_version: int | None = None
    shadow: dict | None = None
    versions: dict | None = None
    previous: dict | None = None
    items: list | None = None  # change records: [domain, scope, previous, new]


def referenced_versions(root: str, chain: str) -> set[tuple[str, int]]:
    """Every (domain, version) a record of the chain was served under, switched to or from."""
    decode = msgspec.json.Decoder(_Versions).decode
    found: set[tuple[str, int]] = set()
    for payload in _core.AuditReader(root, chain):
        r = decode(payload)
        served = (("policy", r.policy_version), ("routing", r.routing_version), ("config", r.config_version))
        for domain, version in served:
            if version is not None:
                found.add((domain, version))
        if r.shadow and isinstance(r.shadow.get("version"), int):
            found.add(("policy", r.shadow["version"]))
        for versions in (r.versions, r.previous):
            for key, version in (versions or {}).items():
                domain = key.split("/", 1)[0]
                if domain in DOMAINS and isinstance(version, int):
                    found.add((domain, version))
        for item in r.items or ():
            if isinstance(item, list) and len(item) == 4 and item[0] in DOMAINS:
                found.update((item[0], v) for v in item[2:] if isinstance(v, int))
    return found


def unresolved(referenced: set[tuple[str, int]], registry) -> list[tuple[str, int]]:
    """The referenced versions the registry does not hold (R9: all of them must resolve)."""
    held = {(domain, info.id) for domain in DOMAINS for info in registry.versions(domain)}
    return sorted(referenced - held)
