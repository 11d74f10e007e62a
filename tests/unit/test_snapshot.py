"""The snapshot a replica serves from (gatewayd.control.snapshot): built from pointers
and real compiled documents, with the store replaced by a dict."""

from __future__ import annotations

import pytest

from gatewayd import _core
from gatewayd.control.documents import RuntimeConfig
from gatewayd.control.model import Candidate, Pointer
from gatewayd.control.snapshot import CompiledVersions, IncompleteState, Snapshot, build

PROVIDERS = [("mock", "openai")]
POLICY = b"default: allow\nrules:\n  - {id: no-secrets, when: {prompt: {keywords: [swordfish]}}, action: deny}\n"
ROUTING = b'routes:\n  - {match: "mock-*", provider: mock}\n'
CONFIG = b"retries: 2\nejection: {after_failures: 3, for_s: 1.5}\n"
DOCS = {"policy": ("policy.yaml", POLICY), "routing": ("routing.yaml", ROUTING), "config": ("runtime.yaml", CONFIG)}


class Store:
    """The `load` callback: every version of a domain is that domain's document; calls counted."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, domain: str, version: int) -> tuple[str, bytes]:
        self.calls.append((domain, version))
        return DOCS[domain]


def pointer(domain: str, version: int, scope: str = "default") -> Pointer:
    return Pointer(domain, scope, version, change_id=version)


BASE = [pointer("policy", 1), pointer("routing", 4), pointer("config", 5)]


def snapshot(*extra: Pointer, base=BASE, change_id: int = 42) -> Snapshot:
    return build(change_id, [*base, *extra], CompiledVersions(PROVIDERS), Store())


# build


def current(snap: Snapshot, domain: str, scope: str = "default"):
    return snap.positions[domain][scope].current


def test_build_carries_every_domain_and_its_version():
    snap = snapshot()
    assert snap.change_id == 42
    assert set(snap.positions["policy"]) == {"default"}
    policy = current(snap, "policy")
    assert isinstance(policy, _core.Policy) and policy.version == 1 and policy.rule_count == 1
    assert isinstance(snap.routing, _core.Routing) and snap.routing.version == 4
    assert isinstance(snap.config, RuntimeConfig)
    assert snap.config.retries == 2 and snap.config.ejection.after_failures == 3
    assert snap.positions["config"]["default"].version == 5
    assert snap.shadow is None


def test_build_keeps_every_domain_per_scope():
    snap = snapshot(pointer("policy", 2, "tenant:acme"), pointer("routing", 3, "route:chat"))
    assert {scope: p.version for scope, p in snap.positions["policy"].items()} == {"default": 1, "tenant:acme": 2}
    assert {scope: p.version for scope, p in snap.positions["routing"].items()} == {"default": 4, "route:chat": 3}


def test_the_shadow_scope_is_the_candidate_not_an_enforced_policy():
    snap = snapshot(pointer("policy", 6, "shadow"))
    assert snap.shadow is not None and snap.shadow.version == 6
    assert "shadow" not in snap.positions["policy"]


@pytest.mark.parametrize("missing", ["policy", "routing", "config"])
def test_a_missing_domain_is_named(missing):
    with pytest.raises(IncompleteState) as exc:
        snapshot(base=[p for p in BASE if p.domain != missing])
    assert str(exc.value) == f"no active version for {missing}"


def test_every_missing_domain_is_named():
    with pytest.raises(IncompleteState, match=r"^no active version for policy, routing, config$"):
        snapshot(base=[])


def test_only_the_default_scope_completes_a_domain():
    # A tenant policy, a shadow candidate or a routing/config pointer of another scope
    # does not stand in for the default one.
    others = [
        pointer("policy", 2, "tenant:acme"),
        pointer("policy", 3, "shadow"),
        pointer("routing", 4, "tenant:x"),
        pointer("config", 5, "route:chat"),
    ]
    with pytest.raises(IncompleteState, match=r"^no active version for policy, routing, config$"):
        snapshot(*others, base=[])


# Snapshot.route: scopes


def served(snap: Snapshot, tenant: str, api: str, bucket: int = 0) -> tuple[int, int, int]:
    v = snap.route(tenant, api).serve(bucket).versions
    return v.policy, v.routing, v.config


def test_tenant_beats_route_beats_default_in_every_domain():
    snap = snapshot(
        pointer("policy", 2, "tenant:acme"),
        pointer("policy", 3, "route:chat"),
        pointer("routing", 6, "tenant:acme"),
        pointer("config", 7, "route:embeddings"),
    )
    assert served(snap, "acme", "chat") == (2, 6, 5)
    assert served(snap, "acme", "embeddings") == (2, 6, 7)
    assert served(snap, "globex", "chat") == (3, 4, 5)
    assert served(snap, "globex", "embeddings") == (1, 4, 7)


def test_a_tenant_named_like_an_api_gets_the_route_scope_not_its_own():
    snap = snapshot(pointer("policy", 3, "route:chat"))
    assert served(snap, "chat", "messages") == (1, 4, 5)


def test_what_is_served_carries_matching_documents_and_versions():
    snap = snapshot(pointer("routing", 6, "tenant:acme"))
    got = snap.route("acme", "chat").serve(0)
    assert got.routing.version == got.versions.routing == 6
    assert got.policy.version == got.versions.policy == 1
    assert got.config is current(snap, "config") and got.change_id == 42
    assert snap.route("acme", "chat").serve(0) is got  # built once per snapshot


# Candidates (canaries)


def canary(domain: str, version: int, candidate: int, share: int, scope: str = "default") -> Pointer:
    return Pointer(domain, scope, version, 9, Candidate(candidate, share))


def test_callers_below_the_share_get_the_candidate():
    snap = snapshot(base=[pointer("policy", 1), canary("routing", 4, 8, 2500), pointer("config", 5)])
    route = snap.route("acme", "chat")
    assert route.split
    assert served(snap, "acme", "chat", 0) == (1, 8, 5)
    assert served(snap, "acme", "chat", 2499) == (1, 8, 5)
    assert served(snap, "acme", "chat", 2500) == (1, 4, 5)
    assert route.serve(0).versions.positions == [("policy", "current"), ("routing", "candidate"), ("config", "current")]
    assert route.serve(0).versions.candidates == 2 and route.serve(9999).versions.candidates == 0
    assert route.current().versions.routing == 4  # before the bucket is known


def test_a_held_candidate_serves_nobody_and_needs_no_bucket():
    snap = snapshot(base=[pointer("policy", 1), canary("routing", 4, 8, 0), pointer("config", 5)])
    assert not snap.route("acme", "chat").split
    assert served(snap, "acme", "chat", 0) == (1, 4, 5)
    assert "routing/default@candidate" not in snap.versions()


def test_each_domain_splits_by_its_own_share_with_one_bucket():
    snap = snapshot(base=[canary("policy", 1, 2, 1000), canary("routing", 4, 8, 5000), pointer("config", 5)])
    assert served(snap, "acme", "chat", 500) == (2, 8, 5)
    assert served(snap, "acme", "chat", 3000) == (1, 8, 5)
    assert served(snap, "acme", "chat", 7000) == (1, 4, 5)


def test_a_canary_at_one_scope_leaves_the_others_alone():
    snap = snapshot(canary("routing", 4, 8, 10000, scope="tenant:acme"))
    assert served(snap, "acme", "chat", 0) == (1, 8, 5)
    assert served(snap, "globex", "chat", 0) == (1, 4, 5)
    assert not snap.route("globex", "chat").split


# Snapshot.versions, active_version_sets


def test_versions_name_every_pointer_and_serving_candidate():
    snap = snapshot(pointer("policy", 2, "tenant:acme"), canary("config", 5, 7, 100, scope="route:chat"))
    assert snap.versions() == {
        "policy/default": 1,
        "policy/tenant:acme": 2,
        "routing/default": 4,
        "config/default": 5,
        "config/route:chat": 5,
        "config/route:chat@candidate": 7,
    }


def test_versions_include_the_shadow_candidate():
    assert snapshot(pointer("policy", 6, "shadow")).versions() == {
        "policy/default": 1,
        "policy/shadow": 6,
        "routing/default": 4,
        "config/default": 5,
    }


def test_active_version_sets_cover_every_served_combination():
    snap = snapshot(pointer("policy", 2, "tenant:acme"), pointer("policy", 6, "shadow"))
    sets = snap.active_version_sets()
    assert sorted((v.policy, v.routing, v.config, v.candidates) for v in sets) == [(1, 4, 5, 0), (2, 4, 5, 0)]
    assert _core.Versions(1, 4, 5) in sets


def test_active_version_sets_include_a_serving_candidate_and_not_a_held_one():
    serving = snapshot(base=[pointer("policy", 1), canary("routing", 4, 8, 100), pointer("config", 5)])
    assert sorted((v.routing, v.candidates) for v in serving.active_version_sets()) == [(4, 0), (8, 2)]
    held = snapshot(base=[pointer("policy", 1), canary("routing", 4, 8, 0), pointer("config", 5)])
    assert [(v.routing, v.candidates) for v in held.active_version_sets()] == [(4, 0)]
    for bucket in (0, 50, 99, 100, 9999):  # whatever a request is served under is kept
        assert serving.route("acme", "chat").serve(bucket).versions in serving.active_version_sets()


# CompiledVersions


def test_a_version_is_compiled_once_and_reused():
    compiled, load = CompiledVersions(PROVIDERS), Store()
    first = compiled.get("policy", 1, load)
    assert compiled.get("policy", 1, load) is first
    assert load.calls == [("policy", 1)]
    assert first.version == 1  # compiled with the registry's number


def test_the_domain_is_part_of_the_key():
    compiled, load = CompiledVersions(PROVIDERS), Store()
    policy, routing = compiled.get("policy", 1, load), compiled.get("routing", 1, load)
    assert isinstance(policy, _core.Policy) and isinstance(routing, _core.Routing)
    assert load.calls == [("policy", 1), ("routing", 1)]


def test_rebuilding_a_snapshot_loads_nothing_again():
    compiled, load = CompiledVersions(PROVIDERS), Store()
    build(1, BASE, compiled, load)
    build(2, BASE, compiled, load)  # a rollback back to versions still warm is a swap
    assert sorted(load.calls) == [("config", 5), ("policy", 1), ("routing", 4)]


def kept(compiled: CompiledVersions, domain: str) -> list[int]:
    """The versions of `domain` held compiled, read from the cache itself."""
    return sorted(v for d, v in compiled._compiled if d == domain)


def test_keeps_at_most_keep_per_domain_evicting_the_oldest_ids():
    compiled, load = CompiledVersions(PROVIDERS, keep_per_domain=2), Store()
    for version in (3, 1, 2):  # 1 is the oldest id, though not the first compiled
        compiled.get("policy", version, load)
    assert kept(compiled, "policy") == [2, 3]
    load.calls.clear()
    compiled.get("policy", 3, load)
    compiled.get("policy", 2, load)
    assert load.calls == []
    compiled.get("policy", 4, load)
    assert kept(compiled, "policy") == [3, 4]


def test_eviction_is_per_domain():
    compiled, load = CompiledVersions(PROVIDERS, keep_per_domain=1), Store()
    compiled.get("routing", 1, load)
    compiled.get("policy", 2, load)
    compiled.get("policy", 3, load)
    assert (kept(compiled, "routing"), kept(compiled, "policy")) == ([1], [3])
    load.calls.clear()
    compiled.get("routing", 1, load)
    compiled.get("policy", 3, load)
    assert load.calls == []


def test_a_version_older_than_every_kept_one_is_still_served():
    compiled, load = CompiledVersions(PROVIDERS, keep_per_domain=2), Store()
    compiled.get("policy", 2, load)
    compiled.get("policy", 3, load)
    assert compiled.get("policy", 1, load).version == 1


def test_warming_compiles_ahead_and_counts_compiles():
    compiled, load = CompiledVersions(PROVIDERS), Store()
    assert compiled.warm("policy", 3, load) is True
    assert compiled.compiles == 1
    compiled.get("policy", 3, load)
    assert compiled.compiles == 1  # the rollback to it compiles nothing


def test_warming_a_version_that_does_not_compile_is_no_error():
    compiled = CompiledVersions(PROVIDERS)
    assert compiled.warm("policy", 1, lambda d, v: ("bad.yaml", b"rules: [{id: x, action: explode}]")) is False


def test_a_shadow_candidate_is_a_mirror_never_a_served_position():
    shadow = Pointer("routing", "default", 4, 9, Candidate(8, 5000, shadow=True))
    snap = snapshot(base=[pointer("policy", 1), shadow, pointer("config", 5)])
    route = snap.route("acme", "chat")
    assert route.split
    inside, outside = route.serve(100), route.serve(9000)
    assert inside.versions == outside.versions == _core.Versions(1, 4, 5)  # served by current either way
    assert inside.mirror is not None and inside.mirror.version == 8 and outside.mirror is None
    assert [(v.routing, v.candidates) for v in snap.active_version_sets()] == [(4, 0)]
    assert snap.versions()["routing/default@shadow"] == 8
