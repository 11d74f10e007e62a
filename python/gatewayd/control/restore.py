"""Backing up the control store and re-seeding one that lost its data (docs/ROLLBACK.md R17).

A restore writes, in one transaction into an empty store: the lost epoch, every version
found in a backup (`gatewayd store export`) and in the replicas' last-known-good archives,
id counters past every number ever given, the backup's change records, a `lost` record
for each change id that neither kept, and one `restore` change pointing every scope back
at what the replicas were serving. Replicas then apply that change and acknowledge it;
version numbers carry on past the old ones, and each names the document it always did.
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec

from gatewayd.control import documents, store_identity
from gatewayd.control.keys import RuntimeKey
from gatewayd.control.last_known_good import LastKnownGood, SavedState
from gatewayd.control.model import (
    Change,
    ChangeItem,
    Pointer,
    RegistryError,
    StoreDump,
    StoredVersion,
    StoreIdentity,
    VersionInfo,
    Watermark,
)
from gatewayd.control.registry import Registry

LOST_REASON = "lost with the control store's data (not in the backup)"


class RestorePlan(msgspec.Struct, frozen=True):
    """The history to seed, and what could not be recovered (named, never invented)."""

    dump: StoreDump
    missing_versions: dict[str, list[int]]  # given once, found in no backup or archive
    lost_changes: list[int]  # recorded as `lost`


def plan(registry: Registry, backup: StoreDump | None, extra_dirs: list[Path], actor: str, reason: str) -> RestorePlan:
    head = registry.head()
    mark = registry.memory.recall(registry.replicas())
    if head.identity is not None and store_identity.judge(head, mark, registry.where) is None:
        raise RegistryError(
            f"control store at {registry.where} is whole (epoch {head.identity.epoch}, change {head.last_change}); "
            "nothing to restore"
        )
    dirs = [d for d in (registry.memory.state_dir, *extra_dirs) if d is not None]
    identity = _identity(backup, mark, dirs)
    states = [s for d in dirs for s in LastKnownGood.all_in(d) if s.mark and s.mark.epoch == identity.epoch]
    mark = store_identity.merge([mark, *(s.mark for s in states)])
    versions = _versions(backup, dirs, states, identity.epoch)
    last_versions = _last_versions(backup, mark, versions)
    changes = list(backup.changes) if backup else []
    lost = list(range(len(changes) + 1, max(mark.last_change if mark else 0, len(changes)) + 1))
    for change_id in lost:
        at = changes[-1].at if changes else identity.created_at
        changes.append(Change(change_id, at, actor, LOST_REASON, "lost", []))
    newest = max(states, key=lambda s: s.change_id, default=None)
    serving = newest.pointers if newest else backup.pointers if backup else []
    if not serving:
        raise RegistryError("nothing to point at: no last-known-good state and no pointers in the backup")
    for p in serving:
        if (p.domain, p.version) not in versions:
            raise RegistryError(f"{p.domain} version {p.version} is served but in no backup or archive")
    restore_id = len(changes) + 1
    items = [ChangeItem(p.domain, p.scope, None, p.version) for p in serving]
    changes.append(Change(restore_id, time.time(), actor, reason, "restore", items))
    pointers = [Pointer(p.domain, p.scope, p.version, restore_id) for p in serving]
    missing = {
        domain: [i for i in range(1, last + 1) if (domain, i) not in versions] for domain, last in last_versions.items()
    }
    stored = sorted(versions.values(), key=lambda v: (v.info.domain, v.info.id))
    keys = _keys([*(backup.keys if backup else []), *(k for d in dirs for k in LastKnownGood.keys_in(d))])
    dump = StoreDump(identity, stored, last_versions, changes, pointers, keys)
    return RestorePlan(dump, {d: ids for d, ids in missing.items() if ids}, lost)


def _keys(found: list[RuntimeKey]) -> list[RuntimeKey]:
    """One record per key name from every copy found: a revocation wins over the key."""
    by_name: dict[str, RuntimeKey] = {}
    for key in found:
        kept = by_name.get(key.name)
        if kept is None or (key.revoked and not kept.revoked):
            by_name[key.name] = key
    return sorted(by_name.values(), key=lambda k: k.name)


def _identity(backup: StoreDump | None, mark: Watermark | None, dirs: list[Path]) -> StoreIdentity:
    """The epoch to restore: the backup's, which must be the one this deployment saw."""
    if mark is None:
        marks = [s.mark for d in dirs for s in LastKnownGood.all_in(d)]
        mark = store_identity.merge(marks)
    if backup is not None:
        if mark is not None and backup.identity.epoch != mark.epoch:
            raise RegistryError(
                f"the backup is of epoch {backup.identity.epoch}, but this deployment's store was epoch "
                f"{mark.epoch}; restore a backup of that store"
            )
        return backup.identity
    if mark is None:
        raise RegistryError(
            "nothing to restore from: no backup (--backup FILE) and no last-known-good state or watermark in "
            + ", ".join(str(d) for d in dirs)
        )
    return StoreIdentity(mark.epoch, mark.created_at)


def _versions(
    backup: StoreDump | None, dirs: list[Path], states: list[SavedState], epoch: str
) -> dict[tuple[str, int], StoredVersion]:
    """Every version found; two sources disagreeing on a number's document is refused."""
    found: dict[tuple[str, int], StoredVersion] = {}

    def add(stored: StoredVersion, source: str) -> None:
        key = (stored.info.domain, stored.info.id)
        if documents.digest(stored.document) != stored.info.digest:
            raise RegistryError(f"{key[0]} version {key[1]} in {source} does not match its digest")
        known = found.setdefault(key, stored)
        if known.info.digest != stored.info.digest:
            raise RegistryError(f"{key[0]} version {key[1]} differs between sources ({source}); refusing to restore")

    for stored in backup.versions if backup else []:
        add(stored, "the backup")
    for d in dirs:
        for stored in LastKnownGood.archived(d, epoch):
            add(stored, f"the archive in {d}")
    for state in states:  # files from before the archive existed: metadata is lost
        for doc in state.documents:
            digest = documents.digest(doc.data)
            reason = "restored from a last-known-good file; its push metadata was lost"
            info = VersionInfo(doc.domain, doc.version, digest, doc.name, time.time(), "restore", reason)
            if (doc.domain, doc.version) not in found:
                add(StoredVersion(info, doc.data), "a last-known-good file")
            elif found[(doc.domain, doc.version)].info.digest != digest:
                raise RegistryError(f"{doc.domain} version {doc.version} differs between sources; refusing to restore")
    return found


def _last_versions(
    backup: StoreDump | None, mark: Watermark | None, versions: dict[tuple[str, int], StoredVersion]
) -> dict[str, int]:
    """Counters past every number ever given, so none is given again."""
    last: dict[str, int] = {}
    given = [*(backup.last_versions.items() if backup else []), *(mark.last_versions.items() if mark else [])]
    for domain, version in [*given, *versions]:
        last[domain] = max(last.get(domain, 0), version)
    return last
