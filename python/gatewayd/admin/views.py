"""Read-only views the console needs beyond the CLI's: a version's diff against the one
before it, the audit chains' latest signed checkpoints, and a verification run as data."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path

import msgspec

from gatewayd import _core
from gatewayd.audit import note, trail
from gatewayd.audit.keys import AuditKeyError, Verifier
from gatewayd.config import Settings
from gatewayd.control.registry import Registry

MAX_DIFF_LINES = 5000  # a diff past this is cut, and says so


class VersionDiff(msgspec.Struct, frozen=True):
    domain: str
    version: int
    against: int | None  # the version numbered before it; None for the first
    diff: str  # unified diff; the whole document as additions for the first version
    truncated: bool


class CheckpointState(msgspec.Struct, frozen=True):
    chain: str
    size: int  # records the latest checkpoint covers; 0 without one
    root: str
    signed_at: float  # the note file's time
    signed_by: str  # key name+id, when the signature verified against the keyring
    problem: str  # why the latest checkpoint is not trusted; empty when it verified


class AuditState(msgspec.Struct, frozen=True):
    chains: list[CheckpointState]
    last_verification: trail.LastVerification | None
    keyring: bool  # whether signatures can be checked at all


class ChainResult(msgspec.Struct, frozen=True):
    chain: str
    records: int
    head_seq: int
    checkpoints: int
    signers: list[str]
    problems: list[str]


class Verification(msgspec.Struct, frozen=True):
    intact: bool
    at: float
    chains: list[ChainResult]
    problems: list[str]
    notes: list[str]


def diff(registry: Registry, domain: str, version_id: int) -> VersionDiff:
    info, data = registry.document(domain, version_id)  # NotFoundError: 404
    before = [v for v in registry.versions(domain) if v.id < version_id]
    old_name, old_text, against = "/dev/null", "", None
    if before:
        prior = max(before, key=lambda v: v.id)
        _, old = registry.document(domain, prior.id)
        old_name, old_text, against = f"v{prior.id} {prior.name}", old.decode(errors="replace"), prior.id
    lines = list(
        difflib.unified_diff(
            old_text.splitlines(),
            data.decode(errors="replace").splitlines(),
            old_name,
            f"v{info.id} {info.name}",
            lineterm="",
        )
    )
    return VersionDiff(domain, version_id, against, "\n".join(lines[:MAX_DIFF_LINES]), len(lines) > MAX_DIFF_LINES)


def audit_state(settings: Settings) -> AuditState:
    root = str(settings.path(settings.audit.dir))
    try:
        keyring, keyring_problem = trail.configured_keyring(settings), ""
    except AuditKeyError as exc:
        keyring, keyring_problem = None, f"keyring: {exc}"
    chains = [_latest_checkpoint(root, chain, keyring, keyring_problem) for chain in _core.list_chains(root)]
    last = trail.last_verification(settings.path(settings.control.dir))
    return AuditState(chains, last, keyring is not None)


def _latest_checkpoint(root: str, chain: str, keyring: list[Verifier] | None, keyring_problem: str) -> CheckpointState:
    notes = [p for p in Path(root, chain, "checkpoints").glob("*.note") if p.stem.isdigit()]
    if not notes:
        return CheckpointState(chain, 0, "", 0.0, "", "no signed checkpoint yet")
    latest = max(notes, key=lambda p: int(p.stem))
    try:
        text = latest.read_text()
        _, size, checkpoint_root = _core.parse_checkpoint(text)
        signed_at = latest.stat().st_mtime
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return CheckpointState(chain, int(latest.stem), "", 0.0, "", f"{latest.name}: {exc}")
    if keyring is None:
        return CheckpointState(chain, size, checkpoint_root, signed_at, "", keyring_problem or "no keyring configured")
    try:
        signer = note.verify(text, keyring)
    except note.NoteError as exc:
        return CheckpointState(chain, size, checkpoint_root, signed_at, "", f"{latest.name}: {exc}")
    return CheckpointState(chain, size, checkpoint_root, signed_at, f"{signer.name}+{signer.id.hex()}", "")


def verify_now(settings: Settings, in_thread: Callable[[Callable[[Registry], Registry]], Registry]) -> Verification:
    """The whole trail, as `gatewayd audit verify` checks it; remembered for the alert rules."""
    root = str(settings.path(settings.audit.dir))
    try:
        keyring, problems = trail.configured_keyring(settings), []
    except AuditKeyError as exc:
        keyring, problems = None, [f"keyring: {exc}"]
    result = trail.verify_trail(root, keyring, lambda: in_thread(lambda registry: registry))
    if problems:
        result.problems.extend(problems)
    trail.remember(settings.path(settings.control.dir), result)
    chains = [
        ChainResult(r.chain, r.records, r.head_seq, r.checkpoints, sorted(r.signers), r.problems)
        for r in result.reports
    ]
    return Verification(result.intact, result.verified_at, chains, result.problems, result.notes)
