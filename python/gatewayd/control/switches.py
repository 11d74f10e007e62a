"""Operations built from pointer flips: the kill switch and shadow mode (docs/ROLLBACK.md R15)
and bundles, which move all three domains in one change.

They add no mechanism of their own: each is one compare-and-set change through the store,
so it is recorded, acknowledged by every replica and visible to `at` like any flip.
"""

from __future__ import annotations

import msgspec

from gatewayd.control import documents
from gatewayd.control.model import DEFAULT_SCOPE, SHADOW_SCOPE, Change, ChangeItem
from gatewayd.control.registry import Registry, RegistryError, require_reason

KILL_SWITCH_NAME = "kill-switch.yaml"
KILL_SWITCH_POLICY = b"""\
# Built in: engaged by `gatewayd killswitch on`. Denies every request of its scope.
default: deny
rules:
  - id: kill-switch
    action: deny
    status: 403
    message: "requests on this scope are switched off by an operator (kill switch)"
"""


class Bundle(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A system version: one version of each domain, flipped together."""

    policy: int
    routing: int
    config: int


def kill(registry: Registry, scope: str, actor: str, reason: str) -> Change:
    """Points the scope's policy at the built-in deny-all version (pushed once, then reused)."""
    version = _kill_switch_version(registry, actor)
    if registry.active("policy", scope) == version:
        raise RegistryError(f"the kill switch is already engaged for policy/{scope}")
    return registry.activate("policy", version, actor, reason, scope)


def unkill(registry: Registry, scope: str, actor: str, reason: str) -> Change:
    """Back to what the scope had before: its previous version, or no pointer of its own."""
    require_reason(reason)
    version = _kill_switch_version(registry, actor)
    if registry.active("policy", scope) != version:
        raise RegistryError(f"the kill switch is not engaged for policy/{scope}")
    return registry.rollback("policy", actor, reason, scope)


def shadow(registry: Registry, version: int | None, actor: str, reason: str) -> Change:
    """Runs policy `version` beside the enforced one on every request (None: stop)."""
    require_reason(reason)
    current = registry.active("policy", SHADOW_SCOPE)
    if version is None:
        if current is None:
            raise RegistryError("no policy is running in shadow")
        return registry.flip([ChangeItem("policy", SHADOW_SCOPE, current, None)], actor, reason, "shadow")
    registry.require("policy", version)
    return registry.flip([ChangeItem("policy", SHADOW_SCOPE, current, version)], actor, reason, "shadow")


def parse_bundle(data: bytes, name: str) -> Bundle:
    tree = documents.parse(data, name)
    try:
        return msgspec.convert(tree, Bundle)
    except msgspec.ValidationError as exc:
        raise documents.DocumentError(f"{name}: {exc}") from None


def activate_bundle(registry: Registry, bundle: Bundle, actor: str, reason: str) -> Change:
    """Flips policy, routing and config of the default scope together, in one change."""
    require_reason(reason)
    items = []
    for domain in documents.DOMAINS:
        version = getattr(bundle, domain)
        registry.require(domain, version)
        pointer = registry.pointer(domain)
        current, candidate = (pointer.version, pointer.candidate) if pointer else (None, None)
        if current != version or candidate is not None:  # a candidate is dropped with it
            items.append(ChangeItem(domain, DEFAULT_SCOPE, current, version, candidate, None))
    if not items:
        raise RegistryError("every domain is already at the bundle's version")
    return registry.flip(items, actor, reason, "activate")


def rollback_bundle(registry: Registry, actor: str, reason: str) -> Change:
    """Returns every domain that has a previous version to it, in one change."""
    require_reason(reason)
    items = []
    for domain in documents.DOMAINS:
        previous = registry.previous(domain)
        pointer = registry.pointer(domain)
        if previous is not None and pointer is not None:
            items.append(ChangeItem(domain, DEFAULT_SCOPE, pointer.version, previous, pointer.candidate, None))
    if not items:
        raise RegistryError("no domain has a previous version to roll back to")
    return registry.flip(items, actor, reason, "rollback")


def _kill_switch_version(registry: Registry, actor: str) -> int:
    digest = documents.digest(KILL_SWITCH_POLICY)
    for info in registry.versions("policy"):
        if info.digest == digest and info.name == KILL_SWITCH_NAME:
            return info.id
    info = registry.push("policy", KILL_SWITCH_POLICY, KILL_SWITCH_NAME, actor, "built-in kill switch policy")
    return info.id
