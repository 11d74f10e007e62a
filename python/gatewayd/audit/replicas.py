"""Which replicas ever served, so `verify` can name a chain that is gone: a deleted chain
directory leaves every remaining chain intact, and only an outside account shows it.

Two accounts: the control store's (every replica acknowledges each change it applies or
refuses, starting with those it finds at start-up, and heartbeats while it runs; acks are
kept for good) and the chains' own (a worker that refused a replica's chain says so in its
own chain).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gatewayd.control.registry import Registry


def known_to_store(registry: Registry) -> dict[str, str]:
    """Replica name -> where the store shows it served. Raises StoreUnavailableError."""
    known: dict[str, str] = {}
    for change in registry.history():
        for ack in registry.acks(change.id):
            known.setdefault(ack.replica, f"it acknowledged change {change.id} in the control store")
    for replica in registry.replicas():
        known.setdefault(replica.name, f"it is registered in the control store (pid {replica.pid} on {replica.host})")
    return known


def missing_chains(chains: list[str], known: dict[str, str]) -> list[tuple[str, str]]:
    """(name, why it is known) of each replica known to have served whose chain is absent."""
    present = set(chains)
    return [(name, why) for name, why in sorted(known.items()) if name not in present]
