"""The compiled state a replica serves from.

A request reads the replica's current snapshot once, when it starts, and uses it to the
end (docs/ROLLBACK.md R6): swapping in a new snapshot is one attribute assignment, so no request
can mix versions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

import msgspec

from gatewayd import _core
from gatewayd.control import documents
from gatewayd.control.documents import RuntimeConfig
from gatewayd.control.model import DEFAULT_SCOPE, SHADOW_SCOPE, Pointer

# Declared as an alias: _core.pyi imports this module back, and in that cycle mypy takes a
# bare union assignment for a variable.
Compiled: TypeAlias = _core.Policy | _core.Routing | RuntimeConfig


class Snapshot(msgspec.Struct, frozen=True):
    change_id: int
    # scope -> compiled policy (each knows its version); "default" is always present
    policies: dict[str, _core.Policy]
    routing: _core.Routing
    config: RuntimeConfig
    config_version: int
    # A candidate policy evaluated beside the active one, recorded, never enforced (R15).
    shadow: _core.Policy | None = None

    @property
    def routing_version(self) -> int:
        return self.routing.version

    def policy_for(self, tenant: str, api: str) -> _core.Policy:
        """The most specific scope wins: `tenant:<name>`, then `route:<api>` (chat,
        completions, embeddings, messages), then `default`."""
        policies = self.policies
        return policies.get("tenant:" + tenant) or policies.get("route:" + api) or policies[DEFAULT_SCOPE]

    def versions(self) -> dict[str, int]:
        out = {f"policy/{scope}": p.version for scope, p in self.policies.items()}
        if self.shadow:
            out[f"policy/{SHADOW_SCOPE}"] = self.shadow.version
        out["routing/default"] = self.routing.version
        out["config/default"] = self.config_version
        return out

    def active_version_sets(self) -> list[_core.Versions]:
        """Every version set a request can be served under: the cache keeps entries of
        these and purges the rest (R5)."""
        return [_core.Versions(p.version, self.routing.version, self.config_version) for p in self.policies.values()]


class CompiledVersions:
    """Compiled documents by (domain, version): previous versions stay warm, so a rollback
    is a swap, not a load (R7)."""

    def __init__(self, providers: list[tuple[str, str]], keep_per_domain: int = 8):
        self.providers = providers
        self.keep = keep_per_domain
        self._compiled: dict[tuple[str, int], Compiled] = {}

    def get(self, domain: str, version: int, load: Callable[[str, int], tuple[str, bytes]]) -> Compiled:
        key = (domain, version)
        if key not in self._compiled:
            name, data = load(domain, version)
            self._compiled[key] = documents.compile_document(domain, data, name, self.providers, version)
            self._evict(domain)
        return self._compiled[key]

    def _evict(self, domain: str) -> None:
        ids = sorted(v for d, v in self._compiled if d == domain)
        for old in ids[: max(0, len(ids) - self.keep)]:
            del self._compiled[(domain, old)]


class IncompleteState(Exception):
    """The store has no active version for a required domain yet."""


def build(
    change_id: int, pointers: list[Pointer], compiled: CompiledVersions, load: Callable[[str, int], tuple[str, bytes]]
) -> Snapshot:
    """Compiles (or reuses) every pointed-to version; raises DocumentError on a bad one."""
    policies: dict[str, _core.Policy] = {}
    routing: tuple[int, _core.Routing] | None = None
    config: tuple[int, RuntimeConfig] | None = None
    shadow: _core.Policy | None = None
    for p in pointers:
        obj = compiled.get(p.domain, p.version, load)
        # compile_document gives each domain its own type: a policy a Policy, and so on.
        if p.domain == "policy" and p.scope == SHADOW_SCOPE:
            assert isinstance(obj, _core.Policy)
            shadow = obj
        elif p.domain == "policy":
            assert isinstance(obj, _core.Policy)
            policies[p.scope] = obj
        elif p.domain == "routing" and p.scope == DEFAULT_SCOPE:
            assert isinstance(obj, _core.Routing)
            routing = (p.version, obj)
        elif p.domain == "config" and p.scope == DEFAULT_SCOPE:
            assert isinstance(obj, RuntimeConfig)
            config = (p.version, obj)
    missing = [
        d
        for d, present in (("policy", DEFAULT_SCOPE in policies), ("routing", routing), ("config", config))
        if not present
    ]
    if missing:
        raise IncompleteState(f"no active version for {', '.join(missing)}")
    assert routing is not None and config is not None  # each would be in `missing`
    return Snapshot(change_id, policies, routing[1], config[1], config[0], shadow)
