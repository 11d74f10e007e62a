"""Registry operations: push, activate, rollback, history and point-in-time lookup.

Activation and rollback are the same operation, a compare-and-set of a pointer with a
change record (ROLLBACK.md R2). A rollback is an event of its own: it never erases.
"""

from __future__ import annotations

from gatewayd.config import Settings
from gatewayd.control import documents
from gatewayd.control.model import DEFAULT_SCOPE, Change, ChangeItem, ConflictError, VersionInfo
from gatewayd.control.stores import Store, open_store


class RegistryError(Exception):
    """An operation refused with a one-line reason; nothing was changed."""


class Registry:
    def __init__(self, store: Store, providers: list[tuple[str, str]]):
        self.store = store
        self.providers = providers  # (name, kind): routing documents compile against them

    def push(self, domain: str, data: bytes, name: str, actor: str, reason: str) -> VersionInfo:
        """Validates by compiling, then stores a new immutable version (R1)."""
        _check_domain(domain)
        require_reason(reason)
        documents.compile_document(domain, data, name, self.providers)
        digest = documents.digest(data)
        version_id = self.store.add_version(domain, digest, name, data, actor, reason)
        info, _ = self.store.version(domain, version_id)
        return info

    def document(self, domain: str, version_id: int) -> tuple[VersionInfo, bytes]:
        _check_domain(domain)
        found = self.store.version(domain, version_id)
        if found is None:
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
        self.document(domain, version_id)
        current = self._current(domain, scope, expect)
        if current == version_id:
            raise RegistryError(f"{domain}/{scope} is already at version {version_id}")
        return self.store.flip([ChangeItem(domain, scope, current, version_id)], actor, reason, "activate")

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
        current = self._current(domain, scope, expect)
        if current is None:
            raise RegistryError(f"{domain}/{scope} has no active version to roll back")
        target = to if to is not None else self.previous(domain, scope)
        if target is None:
            raise RegistryError(f"{domain}/{scope} has no previous version to roll back to")
        self.document(domain, target)
        if target == current:
            raise RegistryError(f"{domain}/{scope} is already at version {target}")
        return self.store.flip([ChangeItem(domain, scope, current, target)], actor, reason, "rollback")

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
        """On an empty store, pushes and activates the configured documents as one change."""
        if self.store.pointers():
            return None
        items = []
        for domain, (data, name) in docs.items():
            info = self.push(domain, data, name, actor, "initial version from the config file")
            items.append(ChangeItem(domain, DEFAULT_SCOPE, None, info.id))
        return self.store.flip(items, actor, "initial activation", "bootstrap") if items else None


def open_registry(settings: Settings) -> Registry:
    providers = [(name, p.kind) for name, p in settings.providers.items()]
    return Registry(open_store(settings), providers)


def _check_domain(domain: str) -> None:
    if domain not in documents.DOMAINS:
        raise RegistryError(f"unknown domain {domain!r}: expected one of {', '.join(documents.DOMAINS)}")


def require_reason(reason: str) -> None:
    if not reason or not reason.strip():
        raise RegistryError("a reason is required (--reason): every change record says why")
