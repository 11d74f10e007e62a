"""The whole trail verified at once, as data: every chain, every checkpoint signature, every
chain the registry says should exist and every version the records name. `gatewayd audit
verify` prints it; the admin API's "verify now" returns it and remembers when it last ran."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from gatewayd import _core
from gatewayd.audit.keys import Signer, Verifier, load_keyring
from gatewayd.audit.replicas import known_to_store, missing_chains
from gatewayd.audit.verify import ChainReport, references, unresolved, verify_chain
from gatewayd.config import Settings
from gatewayd.control.model import StoreUnavailableError

LAST_VERIFIED_FILE = "audit-verified.json"


@dataclass
class Trail:
    root: str
    reports: list[ChainReport]
    problems: list[str]  # one line each: BROKEN or MISSING
    notes: list[str]
    affected: set[str]  # chains with a problem, or missing
    known: dict[str, str]  # replica -> why it is known to have served
    referenced: int  # distinct (domain, version) pairs the records name
    registry_checked: bool  # versions and replicas checked against the registry
    verified_at: float = field(default_factory=time.time)

    @property
    def intact(self) -> bool:
        return bool(self.reports) and not self.problems


class LastVerification(msgspec.Struct, frozen=True):
    """What the last verification found: the alert on an unverified trail reads it."""

    at: float
    intact: bool
    chains: int
    records: int
    problems: list[str]


def verify_trail(root: str, keyring: list[Verifier] | None, open_registry: Callable[[], object] | None) -> Trail:
    """Every problem of every chain; `open_registry` None: not checked against the registry."""
    chains = _core.list_chains(root)
    reports = [verify_chain(root, chain, keyring) for chain in chains]
    found = [references(root, chain) for chain in chains]
    known: dict[str, str] = {}
    for refs in found:
        for chain, why in refs.refused.items():
            known.setdefault(chain, why)
    referenced = set().union(*(refs.versions for refs in found))
    problems = [f"BROKEN: chain {r.chain}: {problem}" for r in reports for problem in r.problems]
    notes = [f"note: chain {chain}: {why}" for chain, why in sorted(known.items()) if chain in chains]
    missing_versions: list[tuple[str, int]] | None = None
    if open_registry is None:
        notes.append("versions and replicas not checked against the registry (no config given)")
    else:
        try:
            registry = open_registry()
            for name, why in known_to_store(registry).items():  # type: ignore[arg-type]
                known.setdefault(name, why)
            missing_versions = unresolved(referenced, registry)
        except (StoreUnavailableError, sqlite3.Error) as exc:
            notes.append(f"versions and replicas not checked against the registry: {exc}")
    missing = missing_chains(chains, known)
    problems += [f"MISSING: chain {name}: no chain directory under {root}, but {why}" for name, why in missing]
    if missing_versions:
        names = ", ".join(f"{domain} v{version}" for domain, version in missing_versions)
        problems.append(f"BROKEN: records name versions the registry does not hold: {names}")
    affected = {r.chain for r in reports if r.problems} | {name for name, _ in missing}
    return Trail(root, reports, problems, notes, affected, known, len(referenced), missing_versions is not None)


def remember(control_dir: Path, trail: Trail) -> LastVerification:
    last = LastVerification(
        trail.verified_at, trail.intact, len(trail.reports), sum(r.records for r in trail.reports), trail.problems
    )
    control_dir.mkdir(parents=True, exist_ok=True)
    tmp = control_dir / f".{LAST_VERIFIED_FILE}.tmp"
    tmp.write_bytes(msgspec.json.encode(last))
    tmp.replace(control_dir / LAST_VERIFIED_FILE)
    return last


def last_verification(control_dir: Path) -> LastVerification | None:
    try:
        return msgspec.json.decode((control_dir / LAST_VERIFIED_FILE).read_bytes(), type=LastVerification)
    except (OSError, msgspec.DecodeError):
        return None


def configured_keyring(settings: Settings) -> list[Verifier] | None:
    """audit.keyring, else the signing key's own verifier, else None. Raises AuditKeyError."""
    a = settings.audit
    if a.keyring:
        return load_keyring(settings.path(a.keyring))
    if a.signing_key:
        return [Signer.load(settings.path(a.signing_key)).verifier]
    return None
