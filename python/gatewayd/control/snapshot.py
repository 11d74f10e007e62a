"""The compiled state a replica serves from, and what one request is served under.

A request resolves what it is served under once, when it starts, and uses it to the end
(docs/ROLLBACK.md R6): swapping in a new snapshot is one attribute assignment, so no
request can mix versions.

Each domain has versions by scope; the most specific scope wins for a request: its
tenant's (`tenant:NAME`), then its route's (`route:API`), then `default`. At each scope a
domain has a current version and, during a canary, a candidate served to the callers whose
sticky bucket is below its share (R13).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import product
from typing import TypeAlias

import msgspec

from gatewayd import _core
from gatewayd.control import documents
from gatewayd.control.documents import RuntimeConfig
from gatewayd.control.model import DEFAULT_SCOPE, SHADOW_SCOPE, Pointer

# Declared as an alias: _core.pyi imports this module back, and in that cycle mypy takes a
# bare union assignment for a variable.
Compiled: TypeAlias = _core.Policy | _core.Routing | RuntimeConfig
Loader: TypeAlias = Callable[[str, int], tuple[str, bytes]]

CANDIDATE_BITS = {"policy": 1, "routing": 2, "config": 4}  # as _core.Versions.candidates counts them
MIRROR = 8  # Route's own: the request also goes to a shadow routing candidate


class Positions(msgspec.Struct, frozen=True):
    """One domain at one scope: the current version, and a candidate beside it."""

    current: Compiled
    version: int
    candidate: Compiled | None = None
    candidate_version: int = 0
    share: int = 0  # sticky buckets (of _core.STICKY_BUCKETS) served by the candidate
    shadow: bool = False  # the candidate only gets copies of the share's requests (routing)

    @property
    def serves(self) -> bool:
        return self.candidate is not None and self.share > 0 and not self.shadow

    def served(self, candidate: bool) -> tuple[Compiled, int]:
        if candidate and self.candidate is not None:
            return self.candidate, self.candidate_version
        return self.current, self.version


class Served(msgspec.Struct, frozen=True):
    """Everything one request is served under: compiled documents, their versions and
    positions (`versions.candidates`), and the change that made them current. The request's
    admission carries it, so its cache use, audit settings and record all read the same."""

    policy: _core.Policy
    shadow: _core.Policy | None
    routing: _core.Routing
    config: RuntimeConfig
    versions: _core.Versions
    change_id: int
    # A shadow routing candidate this request is also sent to (its answer only measured).
    mirror: _core.Routing | None = None


class Route:
    """The positions of the three domains for one (tenant, API), and what each assignment
    serves, built once per snapshot."""

    __slots__ = ("_domains", "_served", "_shadow", "_change_id", "split")

    def __init__(self, policy: Positions, routing: Positions, config: Positions, shadow, change_id: int):
        self._domains = (("policy", policy), ("routing", routing), ("config", config))
        self._shadow = shadow
        self._change_id = change_id
        self._served: dict[int, Served] = {}
        # Whether any of the three has a candidate serving or shadowing traffic: only then
        # is the request's sticky bucket needed.
        self.split = any(p.candidate is not None and p.share > 0 for _, p in self._domains)

    def serve(self, bucket: int) -> Served:
        """What a caller in `bucket` is served: the candidate of each domain whose share
        covers the bucket, the current version of the others (and, for a shadow routing
        candidate covering it, the current routing with the candidate as its mirror)."""
        bits = 0
        if self.split:
            for domain, p in self._domains:
                if bucket < p.share:
                    bits |= MIRROR if p.shadow else CANDIDATE_BITS[domain]
        found = self._served.get(bits)
        if found is None:
            found = self._served[bits] = self._build(bits)
        return found

    def current(self) -> Served:
        """What a request is served under before its bucket is known (refused early)."""
        return self.serve(_core.STICKY_BUCKETS)

    def _build(self, bits: int) -> Served:
        chosen = {d: p.served(bool(bits & CANDIDATE_BITS[d])) for d, p in self._domains}
        (policy, pv), (routing, rv), (config, cv) = chosen["policy"], chosen["routing"], chosen["config"]
        assert isinstance(policy, _core.Policy) and isinstance(routing, _core.Routing)
        assert isinstance(config, RuntimeConfig)
        mirror = self._domains[1][1].candidate if bits & MIRROR else None
        assert mirror is None or isinstance(mirror, _core.Routing)
        versions = _core.Versions(pv, rv, cv, bits & ~MIRROR)
        return Served(policy, self._shadow, routing, config, versions, self._change_id, mirror)


class Snapshot:
    """Every domain's positions by scope, as of change `change_id`."""

    def __init__(
        self,
        change_id: int,
        positions: dict[str, dict[str, Positions]],
        shadow: _core.Policy | None = None,
    ):
        self.change_id = change_id
        self.positions = positions  # domain -> scope -> positions; each has "default"
        # A candidate policy evaluated beside the enforced one, recorded, never enforced (R15).
        self.shadow = shadow
        self._routes: dict[tuple[str, str], Route] = {}

    @property
    def config(self) -> RuntimeConfig:
        """The default scope's current config: what the replica as a whole runs by (its
        audit writer's sync policy); requests read their own `Served.config`."""
        config = self.positions["config"][DEFAULT_SCOPE].current
        assert isinstance(config, RuntimeConfig)
        return config

    @property
    def routing(self) -> _core.Routing:
        """The default scope's current routing (the models `/v1/models` lists)."""
        routing = self.positions["routing"][DEFAULT_SCOPE].current
        assert isinstance(routing, _core.Routing)
        return routing

    def route(self, tenant: str, api: str) -> Route:
        """The positions a request of `tenant` on `api` is served from (memoised: tenants
        are the configured keys' few)."""
        found = self._routes.get((tenant, api))
        if found is None:
            policy, routing, config = (self._scope(d, tenant, api) for d in ("policy", "routing", "config"))
            found = self._routes[(tenant, api)] = Route(policy, routing, config, self.shadow, self.change_id)
        return found

    def _scope(self, domain: str, tenant: str, api: str) -> Positions:
        scopes = self.positions[domain]
        return scopes.get("tenant:" + tenant) or scopes.get("route:" + api) or scopes[DEFAULT_SCOPE]

    def versions(self) -> dict[str, int]:
        """`domain/scope` -> current version, and `domain/scope@candidate` -> candidate
        version while one serves traffic (what replicas report in heartbeats)."""
        out = {}
        for domain, scopes in self.positions.items():
            for scope, p in scopes.items():
                out[f"{domain}/{scope}"] = p.version
                if p.candidate is not None and p.share > 0:
                    out[f"{domain}/{scope}@{'shadow' if p.shadow else 'candidate'}"] = p.candidate_version
        if self.shadow:
            out[f"policy/{SHADOW_SCOPE}"] = self.shadow.version
        return out

    def active_version_sets(self) -> list[_core.Versions]:
        """Every version set a request can be served under (a superset: every combination
        of each domain's served versions and positions): the cache keeps entries of these
        and purges the rest (R5)."""
        served = {}
        for domain, scopes in self.positions.items():
            served[domain] = {(p.version, 0) for p in scopes.values()}
            served[domain] |= {(p.candidate_version, CANDIDATE_BITS[domain]) for p in scopes.values() if p.serves}
        return [
            _core.Versions(p, r, c, pb | rb | cb)
            for (p, pb), (r, rb), (c, cb) in product(served["policy"], served["routing"], served["config"])
        ]


class InService:
    """The version sets the replica serves (`Snapshot.active_version_sets`), and how many
    swaps it has made: what a request in flight checks to learn that its own set has left
    service (R6, `inflight_on_revert`).

    The agent's thread writes it at each swap, the event loop reads it: the sets and their
    change are replaced, as one tuple, before `generation` moves, so a reader that sees a
    new generation finds sets at least as new. A stream compares `generation` with the one
    it saw last, one int per chunk, and looks its set up only when it moved."""

    __slots__ = ("generation", "_state")

    def __init__(self) -> None:
        self.generation = 0
        self._state: tuple[frozenset[_core.Versions], int] | None = None  # None: before the first swap

    def swap(self, sets: Iterable[_core.Versions], change_id: int) -> None:
        self._state = (frozenset(sets), change_id)
        self.generation += 1

    def left_service(self, versions: _core.Versions) -> tuple[int, int | None]:
        """(the generation this answers for, and the change after which `versions` is no
        longer served, or None while it is)."""
        generation = self.generation  # read first: the sets are at least this new
        state = self._state
        if state is None or versions in state[0]:
            return generation, None
        return generation, state[1]


class CompiledVersions:
    """Compiled documents by (domain, version): previous versions stay warm, so a rollback
    is a swap, not a load (R7)."""

    def __init__(self, providers: list[tuple[str, str]], keep_per_domain: int = 8):
        self.providers = providers
        self.keep = keep_per_domain
        self._compiled: dict[tuple[str, int], Compiled] = {}
        self.compiles = 0  # documents compiled so far (a warm rollback adds none)

    def get(self, domain: str, version: int, load: Loader) -> Compiled:
        key = (domain, version)
        found = self._compiled.get(key)
        if found is None:
            name, data = load(domain, version)
            self.compiles += 1
            found = self._compiled[key] = documents.compile_document(domain, data, name, self.providers, version)
            self._evict(domain, keep=version)
        return found

    def warm(self, domain: str, version: int, load: Loader) -> bool:
        """Compiles a version a rollback may return to, ahead of the rollback; False when
        it does not compile (then the rollback is refused when it comes, not now)."""
        try:
            self.get(domain, version, load)
        except (documents.DocumentError, KeyError):
            return False
        return True

    def _evict(self, domain: str, keep: int) -> None:
        ids = sorted(v for d, v in self._compiled if d == domain and v != keep)
        for old in ids[: max(0, len(ids) + 1 - self.keep)]:
            del self._compiled[(domain, old)]


class IncompleteState(Exception):
    """The store has no active version for a required domain yet."""


def build(change_id: int, pointers: Iterable[Pointer], compiled: CompiledVersions, load: Loader) -> Snapshot:
    """Compiles (or reuses) every current and candidate version the pointers name; raises
    DocumentError on a bad one."""
    positions: dict[str, dict[str, Positions]] = {domain: {} for domain in documents.DOMAINS}
    shadow: _core.Policy | None = None
    for p in pointers:
        current = compiled.get(p.domain, p.version, load)
        if p.domain == "policy" and p.scope == SHADOW_SCOPE:
            assert isinstance(current, _core.Policy)
            shadow = current
            continue
        if p.candidate is None:
            positions[p.domain][p.scope] = Positions(current, p.version)
            continue
        candidate = compiled.get(p.domain, p.candidate.version, load)
        c = p.candidate
        positions[p.domain][p.scope] = Positions(current, p.version, candidate, c.version, c.share, c.shadow)
    missing = [domain for domain, scopes in positions.items() if DEFAULT_SCOPE not in scopes]
    if missing:
        raise IncompleteState(f"no active version for {', '.join(missing)}")
    return Snapshot(change_id, positions, shadow)
