"""Registry operations: push, activate, rollback, history and point-in-time lookup.

Activation and rollback are the same operation, a compare-and-set of a pointer with a
change record (docs/ROLLBACK.md R2). A rollback is an event of its own: it never erases.
Every write is first checked against what this host remembers of the store (R17): one
that lost its data, or holds another's, is refused before a used number is given again.
"""

from __future__ import annotations

from gatewayd.config import Settings
from gatewayd.control import documents
from gatewayd.control import store_identity
from gatewayd.control.model import (
    DEFAULT_SCOPE,
    Change,
    ChangeItem,
    ConflictError,
    Pointer,
    RegistryError,
    StoreDump,
    StoredVersion,
    StoreLostError,
    VersionInfo,
)
from gatewayd.control.store_identity import StoreMemory
from gatewayd.control.stores import Store, open_store

__all__ = ["Registry", "RegistryError", "open_registry", "require_reason"]


class Registry:
    def __init__(self, store: Store, providers: list[tuple[str, str]], memory: StoreMemory | None = None):
        self.store = store
        self.providers = providers  # (name, kind): routing documents compile against them
        # Without a control directory, the replicas' heartbeats are the only memory.
        self.memory = memory or StoreMemory(None)

    def store_problem(self) -> str | None:
        """What the store lost against what this host has seen of it, or None (R17)."""
        return store_identity.judge(self.store.head(), self.memory.recall(self.store), self.store.where)

    def guard(self, action: str) -> str:
        """The store's epoch, after checking it is the store this host has seen; writes
        pass it on, and the store refuses them if its identity changed meanwhile."""
        head = self.store.head()
        problem = store_identity.judge(head, self.memory.recall(self.store), self.store.where)
        if problem:
            raise StoreLostError(store_identity.lost_error_message(problem, action))
        if head.identity is None:
            raise StoreLostError(
                f"control store at {self.store.where} has no identity: it was never bootstrapped "
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
        version_id = self.store.add_version(domain, digest, name, data, actor, reason, epoch=epoch)
        self.memory.note(self.store.head())
        info, _ = self.store.version(domain, version_id)
        return info

    def flip(self, items: list[ChangeItem], actor: str, reason: str, kind: str) -> Change:
        """One compare-and-set change of `items`, on the store this host has seen."""
        return self._flip(items, actor, reason, kind, self.guard("flip pointers"))

    def _flip(self, items: list[ChangeItem], actor: str, reason: str, kind: str, epoch: str) -> Change:
        change = self.store.flip(items, actor, reason, kind, epoch=epoch)
        self.memory.note(self.store.head())
        return change

    def document(self, domain: str, version_id: int) -> tuple[VersionInfo, bytes]:
        _check_domain(domain)
        found = self.store.version(domain, version_id)
        if found is None:
            problem = self.store_problem()  # missing because the store lost it: say so
            if problem:
                raise StoreLostError(store_identity.lost_error_message(problem, f"look up {domain} versions"))
            raise RegistryError(f"{domain} version {version_id} does not exist")
        return found

    def versions(self, domain: str) -> list[VersionInfo]:
        _check_domain(domain)
        return self.store.versions(domain)

    def active(self, domain: str, scope: str = DEFAULT_SCOPE) -> int | None:
        for p in self.store.pointers():
            if p.domain == domain and p.scope == scope:
                return p.version
        return None

    def activate(
        self,
        domain: str,
        version_id: int,
        actor: str,
        reason: str,
        scope: str = DEFAULT_SCOPE,
        expect: int | None = None,
    ) -> Change:
        _check_domain(domain)
        require_reason(reason)
        epoch = self.guard("flip pointers")
        self.document(domain, version_id)
        current = self._current(domain, scope, expect)
        if current == version_id:
            raise RegistryError(f"{domain}/{scope} is already at version {version_id}")
        return self._flip([ChangeItem(domain, scope, current, version_id)], actor, reason, "activate", epoch)

    def rollback(
        self,
        domain: str,
        actor: str,
        reason: str,
        scope: str = DEFAULT_SCOPE,
        to: int | None = None,
        expect: int | None = None,
    ) -> Change:
        """Returns the pointer to the version before the current activation (or `to`)."""
        _check_domain(domain)
        require_reason(reason)
        epoch = self.guard("flip pointers")
        current = self._current(domain, scope, expect)
        if current is None:
            raise RegistryError(f"{domain}/{scope} has no active version to roll back")
        target = to if to is not None else self.previous(domain, scope)
        if target is None:
            raise RegistryError(f"{domain}/{scope} has no previous version to roll back to")
        self.document(domain, target)
        if target == current:
            raise RegistryError(f"{domain}/{scope} is already at version {target}")
        return self._flip([ChangeItem(domain, scope, current, target)], actor, reason, "rollback", epoch)

    def _current(self, domain: str, scope: str, expect: int | None) -> int | None:
        """The pointer's version. With `expect` (the version the caller decided from), a pointer
        that has moved since is a lost compare-and-set, not something to flip from blindly."""
        current = self.active(domain, scope)
        if expect is not None and expect != current:
            raise ConflictError.moved(domain, scope, current, expect)
        return current

    def previous(self, domain: str, scope: str = DEFAULT_SCOPE) -> int | None:
        """The version a rollback returns to: activations push, rollbacks pop."""
        stack: list[int] = []
        for change in self.store.changes(domain=domain):
            for item in change.items:
                if item.domain != domain or item.scope != scope or item.new is None:
                    continue
                if change.kind == "rollback" and item.new in stack:
                    del stack[stack.index(item.new) + 1 :]
                else:
                    stack.append(item.new)
        return stack[-2] if len(stack) >= 2 else None

    def history(self, domain: str | None = None) -> list[Change]:
        if domain:
            _check_domain(domain)
        return self.store.changes(domain=domain)

    def in_effect_at(self, at: float) -> dict[tuple[str, str], tuple[int, Change]]:
        """Which version of every domain+scope was in effect at `at` (R9), per the change log."""
        state: dict[tuple[str, str], tuple[int, Change]] = {}
        for change in self.store.changes():
            if change.at > at:
                break
            for item in change.items:
                key = (item.domain, item.scope)
                if item.new is None:
                    state.pop(key, None)
                else:
                    state[key] = (item.new, change)
        return state

    def bootstrap(self, docs: dict[str, tuple[bytes, str]], actor: str = "bootstrap") -> Change | None:
        """On an empty store, pushes and activates the configured documents as one change,
        written in one transaction with the store's identity. A store this host has seen
        history in is not empty but wiped: it is refused, never bootstrapped again (R17)."""
        head = self.store.head()
        if head.identity is None:
            problem = store_identity.judge(head, self.memory.recall(self.store), self.store.where)
            if problem:
                raise StoreLostError(store_identity.lost_error_message(problem, "bootstrap it again"))
            if not (head.last_change or head.last_versions):
                return self._seed_bootstrap(docs, actor) if docs else None
            self.store.claim_identity(store_identity.new_identity())  # history from before identities
        self.guard("bootstrap")
        if self.store.pointers():
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
            info = VersionInfo(domain, 1, documents.digest(data), name, at, actor, "initial version from the config file")
            versions.append(StoredVersion(info, data))
            items.append(ChangeItem(domain, DEFAULT_SCOPE, None, 1))
        change = Change(1, at, actor, "initial activation", "bootstrap", items)
        pointers = [Pointer(i.domain, i.scope, 1, 1) for i in items]
        dump = StoreDump(identity, versions, {v.info.domain: 1 for v in versions}, [change], pointers)
        if not self.store.seed(dump):
            return None
        self.memory.note(self.store.head())
        return change


def open_registry(settings: Settings) -> Registry:
    providers = [(name, p.kind) for name, p in settings.providers.items()]
    return Registry(open_store(settings), providers, StoreMemory(settings.path(settings.control.dir)))


def _check_domain(domain: str) -> None:
    if domain not in documents.DOMAINS:
        raise RegistryError(f"unknown domain {domain!r}: expected one of {', '.join(documents.DOMAINS)}")


def require_reason(reason: str) -> None:
    if not reason or not reason.strip():
        raise RegistryError("a reason is required (--reason): every change record says why")
