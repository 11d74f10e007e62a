"""Rules read off the change log: where a rollback returns to (docs/ROLLBACK.md R2), and what
was in effect at an instant (R9). Pure functions of the change records, so the registry,
the replica agent and the unit tests share them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from gatewayd.control.model import Candidate, Change


class RollbackStacks:
    """Per domain and scope, the current versions in the order they became current:
    activations (and promotions) push, a rollback pops back to the version it returned to;
    changes that only move a candidate leave the stack alone. Fed change by change, so a
    replica keeps it up to date as it applies changes."""

    def __init__(self, changes: Iterable[Change] = ()):
        self._stacks: dict[tuple[str, str], list[int]] = {}
        for change in changes:
            self.apply(change)

    def apply(self, change: Change) -> None:
        for item in change.items:
            if item.new is None or not item.moves_current:
                continue
            stack = self._stacks.setdefault((item.domain, item.scope), [])
            if change.kind == "rollback" and item.new in stack:
                del stack[stack.index(item.new) + 1 :]
            else:
                stack.append(item.new)

    def previous(self, domain: str, scope: str) -> int | None:
        """The version a rollback of domain/scope returns to."""
        stack = self._stacks.get((domain, scope), [])
        return stack[-2] if len(stack) >= 2 else None


def previous_version(changes: Iterable[Change], domain: str, scope: str) -> int | None:
    """The version a rollback of domain/scope returns to, from the change log in order."""
    return RollbackStacks(changes).previous(domain, scope)


class InEffect(NamedTuple):
    version: int
    candidate: Candidate | None
    change: Change  # the change that set this state


def in_effect_at(changes: Iterable[Change], at: float) -> dict[tuple[str, str], InEffect]:
    """(domain, scope) -> what it served at instant `at` (current version, candidate, the
    change that set them), from the change log in order; a pointer a change unset is absent."""
    state: dict[tuple[str, str], InEffect] = {}
    for change in changes:
        if change.at > at:
            break
        for item in change.items:
            key = (item.domain, item.scope)
            if item.new is None:
                state.pop(key, None)
            else:
                state[key] = InEffect(item.new, item.candidate, change)
    return state
