"""Staged rollouts (docs/ROLLBACK.md R13): a candidate version served beside the current one
to a share of traffic, raised in stages, then promoted, held at 0 % or rolled back.

Each step is one compare-and-set change whose item carries the candidate before and after
(version and share), so the change log says who moved how much traffic when. Callers are
assigned by sticky bucket (`_core.sticky_bucket`), so raising a share only adds callers.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from gatewayd import _core
from gatewayd.control.model import SHADOW_SCOPE, Candidate, Change, ChangeItem, Pointer, RegistryError
from gatewayd.control.registry import FlipCheck, Registry, check_scope, require_reason

# One bucket is 0.01 % of traffic.
PERCENT_STEP = 100 / _core.STICKY_BUCKETS


def share_of(percent: float) -> int:
    """Buckets for `percent` (0 < percent <= 100, in steps of 0.01)."""
    share = round(percent / PERCENT_STEP)
    if not 0 < percent <= 100 or abs(share * PERCENT_STEP - percent) > 1e-9:
        raise RegistryError(
            f"--percent {percent:g}: expected more than 0 and at most 100, in steps of {PERCENT_STEP:g}"
        )
    return share


def canary(
    registry: Registry,
    domain: str,
    scope: str,
    version: int | None,
    percent: float,
    actor: str,
    reason: str,
    revert: Callable[[Candidate], Candidate] | None = None,
    shadow: bool = False,
) -> Change:
    """Starts a candidate (`version`) at `percent`, or moves the existing one to `percent`.
    `revert` gives it automatic revert rules (`auto_revert.with_rules`); without it a
    running candidate keeps the ones it has. `shadow` starts a routing candidate as a
    shadow: the share's requests are copied to it, never answered by it."""
    if shadow and domain != "routing":
        raise RegistryError("--shadow: only a routing candidate can run as a shadow")
    pointer = _pointer(registry, domain, scope, reason)
    share = share_of(percent)
    held = pointer.candidate
    if version is None:
        if held is None:
            raise RegistryError(f"{domain}/{scope} has no candidate: name a version to start one")
        version = held.version
    elif held is not None and held.version != version:
        raise RegistryError(
            f"{domain}/{scope} already has candidate version {held.version} at {held.percent:g}%: "
            "promote it, or roll it back, first"
        )
    if version == pointer.version:
        raise RegistryError(f"{domain}/{scope} already serves version {version} as current")
    registry.require(domain, version)
    if shadow and held is not None and not held.shadow:
        raise RegistryError(f"{domain}/{scope}'s candidate serves traffic; roll it back before shadowing")
    after = msgspec.structs.replace(held, share=share) if held is not None else Candidate(version, share, shadow=shadow)
    if revert is not None:
        after = revert(after)
        if after.shadow and after.revert_if:
            raise RegistryError("--revert-if: a shadow candidate serves nobody, so there is nothing to revert")
    if after == held:
        raise RegistryError(f"{domain}/{scope}'s candidate version {version} is already at {percent:g}%")
    return _shift(registry, pointer, pointer.version, after, actor, reason, "canary")


def abort(registry: Registry, domain: str, scope: str, actor: str, reason: str) -> Change:
    """Candidate share to 0: all traffic back on the current version, the candidate held
    (a later `canary --percent` resumes it; `rollback` drops it)."""
    pointer = _pointer(registry, domain, scope, reason)
    held = pointer.candidate
    if held is None:
        raise RegistryError(f"{domain}/{scope} has no candidate to abort")
    if held.share == 0:
        raise RegistryError(f"{domain}/{scope}'s candidate version {held.version} is already held at 0%")
    return _shift(registry, pointer, pointer.version, Candidate(held.version, 0), actor, reason, "canary")


def promote(
    registry: Registry, domain: str, scope: str, actor: str, reason: str, check: FlipCheck | None = None
) -> Change:
    """The candidate becomes the current version for all traffic; the old current becomes
    the previous position, where `rollback` returns. `check` sees the promotion before it
    is made (it may refuse it, or add to its reason)."""
    pointer = _pointer(registry, domain, scope, reason)
    if pointer.candidate is None:
        raise RegistryError(f"{domain}/{scope} has no candidate to promote")
    if check is not None:
        item = ChangeItem(domain, scope, pointer.version, pointer.candidate.version, pointer.candidate, None)
        reason = check(item, "promote", reason)
    return _shift(registry, pointer, pointer.candidate.version, None, actor, reason, "promote")


def _pointer(registry: Registry, domain: str, scope: str, reason: str) -> Pointer:
    check_scope(domain, scope)
    if scope == SHADOW_SCOPE:
        raise RegistryError("the shadow scope has no positions; use `gatewayd shadow`")
    require_reason(reason)
    pointer = registry.pointer(domain, scope)
    if pointer is None:
        raise RegistryError(f"{domain}/{scope} has no current version: activate one before a canary")
    return pointer


def _shift(
    registry: Registry, pointer: Pointer, new: int, candidate: Candidate | None, actor: str, reason: str, kind: str
) -> Change:
    item = ChangeItem(pointer.domain, pointer.scope, pointer.version, new, pointer.candidate, candidate)
    return registry.flip([item], actor, reason, kind)
