"""Whole-trail verification, as an auditor runs it: every chain of every replica (in Rust:
frames, links, segment headers, Merkle roots against every checkpoint note, retention
rules, a partial record ending a chain), every checkpoint signature against the keyring,
and that every version a record names can be fetched from the registry (docs/ROLLBACK.md R8,
R9). Every problem is reported, not only the first; replicas.py finds missing chains."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from gatewayd import _core
from gatewayd.audit import note
from gatewayd.audit.keys import Verifier
from gatewayd.errors import ChainCorruptError

DOMAINS = ("policy", "routing", "config")
# The `event` of the replica record a worker writes into its own chain when it refused to
# open another replica's chain (server/replica.py), so the refusal outlives the log line.
REFUSED_CHAIN = "refused_chain"


@dataclass
class ChainReport:
    chain: str
    records: int
    segments: int
    first_seq: int
    head_seq: int
    root: str
    checkpoints: int  # notes whose signature verified
    retired: int  # checkpoints over records removed by retention: signature checked only
    signers: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)  # one line each; none if intact


def verify_chain(root: str, chain: str, keyring: list[Verifier] | None) -> ChainReport:
    """Every problem of the chain, its records, links, notes and signatures alike: an
    auditor needs the whole damage, not the first break. `keyring` None means no key to
    check notes with, which is itself reported."""
    r = _core.verify_chain(root, chain)
    report = ChainReport(chain, r["records"], r["segments"], r["first_seq"], r["head_seq"], r["root"], 0, 0)
    report.problems.extend(r["problems"])
    if keyring is None:
        if r["checkpoints"]:
            report.problems.append(f"{len(r['checkpoints'])} checkpoint note(s) not checked: no keyring (--keyring)")
        return report
    for path, size, root_check in r["checkpoints"]:
        try:
            signer = note.verify(Path(path).read_text(), keyring)
        except (OSError, UnicodeDecodeError, note.NoteError) as exc:
            report.problems.append(f"{path} (seq {size}): {exc}")
            continue
        report.checkpoints += 1
        report.retired += root_check == "retired"
        report.signers.add(f"{signer.name}+{signer.id.hex()}")
    return report


class _Fields(msgspec.Struct):
    """The fields of a record that name versions or other replicas."""

    kind: str | None = None
    event: str | None = None
    seq: int = 0
    policy_version: int | None = None
    routing_version: int | None = None
    config_version: int | None = None
    shadow: dict | None = None
    versions: dict | None = None
    previous: dict | None = None
    items: list | None = None  # change records: [domain, scope, previous, new]
    refused: str | None = None  # a replica event naming a chain a worker refused to open
    error: str | None = None


@dataclass
class References:
    """What a chain's records point at outside themselves."""

    versions: set[tuple[str, int]] = field(default_factory=set)  # (domain, version) served or switched
    refused: dict[str, str] = field(default_factory=dict)  # refused chain -> what the record says
    unread: str = ""  # why the records could not all be read (the chain is broken)


def references(root: str, chain: str) -> References:
    """Every (domain, version) a record of the chain was served under, switched to or from,
    and every chain one of its workers refused to open (REFUSED_CHAIN records)."""
    decode = msgspec.json.Decoder(_Fields).decode
    found = References()
    try:
        for payload in _core.AuditReader(root, chain):
            r = decode(payload)
            _add_versions(found.versions, r)
            if r.kind == "replica" and r.event == REFUSED_CHAIN and r.refused:
                found.refused[r.refused] = f"chain {chain} (seq {r.seq}) records a worker refused it: {r.error}"
    except ChainCorruptError as exc:  # a broken chain: its problems are reported by verify_chain
        found.unread = str(exc)
    return found


def _add_versions(found: set[tuple[str, int]], r: _Fields) -> None:
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


def unresolved(referenced: set[tuple[str, int]], registry) -> list[tuple[str, int]]:
    """The referenced versions the registry does not hold (R9: all of them must resolve)."""
    held = {(domain, info.id) for domain in DOMAINS for info in registry.versions(domain)}
    return sorted(referenced - held)
