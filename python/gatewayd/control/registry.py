"""Registry operations: push, activate, rollback, history and point-in-time lookup.

Activation and rollback are the same operation, a compare-and-set of a pointer with a
change record (docs/ROLLBACK.md R2). A rollback is an event of its own: it never erases.
Every write is first checked against what this host remembers of the store (R17): one
that lost its data, or holds another's, is refused before a used number is given again.
"""

from __future__ import annotations

import re
from typing import Protocol

from gatewayd.config import Settings
from gatewayd.control import documents, store_identity
from gatewayd.control.history import InEffect, in_effect_at, previous_version
from gatewayd.control.keys import KEY_CHANGE, RuntimeKey, spend_counter
from gatewayd.control.model import (
    DEFAULT_SCOPE,
    Ack,
    Change,
    ChangeItem,
    ConflictError,
    NotFoundError,
    Pointer,
    RegistryError,
    Replica,
    StoreDump,
    StoredVersion,
    StoreHead,
    StoreLostError,
    VersionInfo,
)
from gatewayd.control.store_identity import StoreMemory
from gatewayd.control.stores import ControlStore, open_store

__all__ = [
    "FlipCheck",
    "InEffect",
    "Registry",
    "RegistryError",
    "check_scope",
    "in_effect_at",
    "open_registry",
    "previous_version",
    "require_reason",
]


class FlipCheck(Protocol):
    """Looks at a change about to move what a pointer serves to another version (a
    promotion, a rollback) after the pointer was read and before its compare-and-set: returns
    the reason to record (the caller's, maybe with what the check let through), or raises to
    refuse the change with nothing changed. A pointer that moved meanwhile loses the
    compare-and-set, so the change made is the change checked. The response-contract check
    (`gatewayd.control.contract`) is one."""

    def __call__(self, item: ChangeItem, kind: str, reason: str) -> str: ...


class Registry:
    """Every read and write of the control store by operators' tools goes through here
    (the replica agent reads its own handle); nothing else holds the store."""

    def __init__(self, store: ControlStore, providers: list[tuple[str, str]], memory: StoreMemory | None = None):
        self._store = store
        self.providers = providers  # (name, kind): routing documents compile against them
        # Without a control directory, the replicas' heartbeats are the only memory.
        self.memory = memory or StoreMemory(None)

    @property
    def where(self) -> str:
        return self._store.where

    def close(self) -> None:
        self._store.close()

    def head(self) -> StoreHead:
        return self._store.head()

    def durability_problems(self) -> tuple[list[str], list[str]]:
        return self._store.durability_problems()

    def store_topology(self) -> str:
        return self._store.topology()

    def pointers(self) -> list[Pointer]:
        return self._store.pointers()

    def last_change(self) -> Change | None:
        last_id = self._store.last_change_id()
        found = self._store.changes(since_id=last_id - 1) if last_id else []
        return found[-1] if found else None

    def replicas(self) -> list[Replica]:
        return self._store.replicas()

    def acks(self, change_id: int) -> list[Ack]:
        return self._store.acks(change_id)

    def store_problem(self) -> str | None:
        """What the store lost against what this host has seen of it, or None (R17)."""
        return store_identity.judge(self._store.head(), self.memory.recall(self._store.replicas()), self._store.where)

    def guard(self, action: str) -> str:
        """The store's epoch, after checking it is the store this host has seen; writes
        pass it on, and the store refuses them if its identity changed meanwhile."""
        head = self._store.head()
        problem = store_identity.judge(head, self.memory.recall(self._store.replicas()), self._store.where)
        if problem:
            raise StoreLostError(store_identity.lost_error_message(problem, action))
        if head.identity is None:
            raise StoreLostError(
                f"control store at {self._store.where} has no identity: it was never bootstrapped "
                f"(`gatewayd serve` does that) or it lost its data; refusing to {action}"
            )
        self.memory.note(head)
        return head.identity.epoch

    def push(self, domain: str, data: bytes, name: str, actor: str, reason: str) -> VersionInfo:
        """Validates by compiling, then stores a new immutable version (R1)."""
        _check_domain(domain)
        require_reason(reason)
        documents.compile_document(domain, data, name, self.providers)
        digest = documents.digest(data)
        epoch = self.guard("push")
        version_id = self._store.add_version(domain, digest, name, data, actor, reason, epoch=epoch)
        self.memory.note(self._store.head())
        stored = self._store.version(domain, version_id)
        assert stored is not None  # versions are never removed: the one just added is there
        return stored[0]

    def flip(self, items: list[ChangeItem], actor: str, reason: str, kind: str) -> Change:
        """One compare-and-set change of `items`, on the store this host has seen."""
        return self._flip(items, actor, reason, kind, self.guard("flip pointers"))

    def _flip(self, items: list[ChangeItem], actor: str, reason: str, kind: str, epoch: str) -> Change:
        change = self._store.flip(items, actor, reason, kind, epoch=epoch)
        self.memory.note(self._store.head())
        return change

    # -- run-time caller keys (gatewayd.control.keys) -----------------------------------
    def add_key(self, key: RuntimeKey) -> bool:
        self.guard("create a key")
        return self._store.add_key(key)

    def set_key(self, key: RuntimeKey) -> None:
        self.guard("revoke a key")
        self._store.set_key(key)

    def runtime_keys(self) -> list[RuntimeKey]:
        return self._store.runtime_keys()

    def key_spend(self, keys: list[RuntimeKey], now: float | None = None) -> dict[str, float]:
        """What each key spent in its budget's current period (a key without a budget: this
        month, in money), in its budget's unit."""
        counters = {k.name: spend_counter(f"key:{k.name}", k.budget, now) for k in keys}
        found = self._store.spend(list(counters.values()))
        out = {}
        for k in keys:
            cost, tokens = found.get(counters[k.name], (0.0, 0))
            out[k.name] = float(tokens) if k.budget is not None and k.budget.unit == "tokens" else round(cost, 9)
        return out

    def key_change(self, actor: str, reason: str) -> Change:
        """The change every replica reloads its keys at and acknowledges (no pointer moves)."""
        require_reason(reason)
        return self.flip([], actor, reason, KEY_CHANGE)

    def document(self, domain: str, version_id: int) -> tuple[VersionInfo, bytes]:
        _check_domain(domain)
        found = self._store.version(domain, version_id)
        if found is None:
            problem = self.store_problem()  # missing because the store lost it: say so
            if problem:
                raise StoreLostError(store_identity.lost_error_message(problem, f"look up {domain} versions"))
            raise NotFoundError(f"{domain} version {version_id} does not exist")
        return found

    def require(self, domain: str, version_id: int) -> None:
        """For a change naming a version: one that does not exist makes the change a bad
        request (400), where reading it is a missing resource (404)."""
        try:
            self.document(domain, version_id)
        except NotFoundError as exc:
            raise RegistryError(str(exc)) from None

    def versions(self, domain: str) -> list[VersionInfo]:
        _check_domain(domain)
        return self._store.versions(domain)

    def pointer(self, domain: str, scope: str = DEFAULT_SCOPE) -> Pointer | None:
        for p in self._store.pointers():
            if p.domain == domain and p.scope == scope:
                return p
        return None

    def active(self, domain: str, scope: str = DEFAULT_SCOPE) -> int | None:
        found = self.pointer(domain, scope)
        return found.version if found else None

    def activate(
        self,
        domain: str,
        version_id: int,
        actor: str,
        reason: str,
        scope: str = DEFAULT_SCOPE,
        expect: int | None = None,
    ) -> Change:
        """Points domain/scope at `version_id` for all of its traffic; a candidate there is
        dropped with it (the change record says so)."""
        check_scope(domain, scope)
        require_reason(reason)
        epoch = self.guard("flip pointers")
        self.require(domain, version_id)
        pointer = self._current(domain, scope, expect)
        current = pointer.version if pointer else None
        candidate = pointer.candidate if pointer else None
        if current == version_id and candidate is None:
            raise RegistryError(f"{domain}/{scope} is already at version {version_id}")
        item = ChangeItem(domain, scope, current, version_id, candidate, None)
        return self._flip([item], actor, reason, "activate", epoch)

    def rollback(
        self,
        domain: str,
        actor: str,
        reason: str,
        scope: str = DEFAULT_SCOPE,
        to: int | None = None,
        expect: int | None = None,
        check: FlipCheck | None = None,
    ) -> Change:
        """Undoes the last step: with a candidate, drops it (all traffic back on the current
        version); without one, returns the pointer to the version before the current
        activation, and a scope other than default with no version before its first one
        stops overriding (its requests go back to the next scope out). `to` names the
        version to return to instead (dropping any candidate). `check` sees a return to
        another version before it is made (dropping a candidate returns everyone to the
        version already serving, and is not checked)."""
        check_scope(domain, scope)
        require_reason(reason)
        epoch = self.guard("flip pointers")
        pointer = self._current(domain, scope, expect)
        if pointer is None:
            raise RegistryError(f"{domain}/{scope} has no active version to roll back")
        current, candidate = pointer.version, pointer.candidate
        if candidate is not None and to is None:
            item = ChangeItem(domain, scope, current, current, candidate, None)
            return self._flip([item], actor, reason, "rollback", epoch)
        target = to if to is not None else self.previous(domain, scope)
        if target is None and scope != DEFAULT_SCOPE:
            return self._flip([ChangeItem(domain, scope, current, None)], actor, reason, "rollback", epoch)
        if target is None:
            raise RegistryError(f"{domain}/{scope} has no previous version to roll back to")
        self.require(domain, target)
        if target == current and candidate is None:
            raise RegistryError(f"{domain}/{scope} is already at version {target}")
        item = ChangeItem(domain, scope, current, target, candidate, None)
        if check is not None and target != current:
            reason = check(item, "rollback", reason)
        return self._flip([item], actor, reason, "rollback", epoch)

    def _current(self, domain: str, scope: str, expect: int | None) -> Pointer | None:
        """The pointer. With `expect` (the version the caller decided from), a pointer that
        has moved since is a lost compare-and-set, not something to flip from blindly."""
        pointer = self.pointer(domain, scope)
        current = pointer.version if pointer else None
        if expect is not None and expect != current:
            raise ConflictError.moved(domain, scope, current, expect)
        return pointer

    def previous(self, domain: str, scope: str = DEFAULT_SCOPE) -> int | None:
        return previous_version(self._store.changes(domain=domain), domain, scope)

    def history(self, domain: str | None = None) -> list[Change]:
        if domain:
            _check_domain(domain)
        return self._store.changes(domain=domain)

    def in_effect_at(self, at: float) -> dict[tuple[str, str], InEffect]:
        """Which version of every domain+scope was in effect at `at` (R9), per the change log."""
        return in_effect_at(self._store.changes(), at)

    def export(self) -> StoreDump:
        """Everything the store keeps forever, for a backup. Pointers are read first, so every
        change and version they name is in the dump."""
        pointers = self._store.pointers()
        changes = self._store.changes()
        versions = []
        for domain in documents.DOMAINS:
            for info in self._store.versions(domain):
                found = self._store.version(domain, info.id)
                if found is not None:
                    versions.append(StoredVersion(*found))
        head = self._store.head()
        if head.identity is None:
            raise RegistryError(f"control store at {self.where} has no identity: nothing to export")
        keys = self._store.runtime_keys()
        return StoreDump(head.identity, versions, head.last_versions, changes, pointers, keys)

    def restore(self, dump: StoreDump) -> None:
        """Seeds a store that lost its data with a restored history (R17), if it is still empty."""
        if not self._store.seed(dump):
            raise RegistryError(
                f"control store at {self.where} is not empty; a restore only seeds an empty store "
                "(empty it, or point [control] at an empty one, first)"
            )
        self.memory.note(self._store.head())

    def bootstrap(self, docs: dict[str, tuple[bytes, str]], actor: str = "bootstrap") -> Change | None:
        """On an empty store, pushes and activates the configured documents as one change,
        written in one transaction with the store's identity. A store this host has seen
        history in is not empty but wiped: it is refused, never bootstrapped again (R17)."""
        head = self._store.head()
        if head.identity is None:
            problem = store_identity.judge(head, self.memory.recall(self._store.replicas()), self._store.where)
            if problem:
                raise StoreLostError(store_identity.lost_error_message(problem, "bootstrap it again"))
            if not (head.last_change or head.last_versions):
                return self._seed_bootstrap(docs, actor) if docs else None
            self._store.claim_identity(store_identity.new_identity())  # history from before identities
        self.guard("bootstrap")
        if self._store.pointers():
            return None
        items = []
        for domain, (data, name) in docs.items():
            info = self.push(domain, data, name, actor, "initial version from the config file")
            items.append(ChangeItem(domain, DEFAULT_SCOPE, None, info.id))
        return self.flip(items, actor, "initial activation", "bootstrap") if items else None

    def _seed_bootstrap(self, docs: dict[str, tuple[bytes, str]], actor: str) -> Change | None:
        """Identity, version 1 of each document and the bootstrap change, all at once. None
        when another process seeded the store first."""
        identity = store_identity.new_identity()
        at = identity.created_at
        versions, items = [], []
        for domain, (data, name) in docs.items():
            _check_domain(domain)
            documents.compile_document(domain, data, name, self.providers)
            info = VersionInfo(
                domain, 1, documents.digest(data), name, at, actor, "initial version from the config file"
            )
            versions.append(StoredVersion(info, data))
            items.append(ChangeItem(domain, DEFAULT_SCOPE, None, 1))
        change = Change(1, at, actor, "initial activation", "bootstrap", items)
        pointers = [Pointer(i.domain, i.scope, 1, 1) for i in items]
        dump = StoreDump(identity, versions, {v.info.domain: 1 for v in versions}, [change], pointers)
        if not self._store.seed(dump):
            return None
        self.memory.note(self._store.head())
        return change


def open_registry(settings: Settings) -> Registry:
    providers = [(name, p.kind) for name, p in settings.providers.items()]
    return Registry(open_store(settings), providers, StoreMemory(settings.path(settings.control.dir)))


def _check_domain(domain: str) -> None:
    if domain not in documents.DOMAINS:
        raise RegistryError(f"unknown domain {domain!r}: expected one of {', '.join(documents.DOMAINS)}")


# What a scope may be: the most specific wins for each request (tenant, then route, then default).
_SCOPE = re.compile(r"tenant:[A-Za-z0-9][A-Za-z0-9._@-]{0,127}|route:(?:chat|completions|embeddings|messages)")


def check_scope(domain: str, scope: str) -> None:
    """Refuses a domain or scope that no request would ever be served under: a change a
    replica would acknowledge without applying."""
    _check_domain(domain)
    if scope == DEFAULT_SCOPE or _SCOPE.fullmatch(scope):
        return
    raise RegistryError(
        f"unknown scope {scope!r}: expected default, tenant:NAME or route:API "
        "(API one of chat, completions, embeddings, messages)"
    )


def require_reason(reason: str) -> None:
    if not reason or not reason.strip():
        raise RegistryError("a reason is required (--reason): every change record says why")
