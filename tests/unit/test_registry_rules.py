"""previous_version and in_effect_at (gatewayd.control.registry): the rules that read the
change log, on hand-built change records, with no store."""

from __future__ import annotations

from gatewayd.control.model import Candidate, Change, ChangeItem
from gatewayd.control.registry import in_effect_at, previous_version

_ids = iter(range(1, 10_000))


def change(kind: str, *items: ChangeItem, at: float = 0.0) -> Change:
    return Change(next(_ids), at, "tester", "because", kind, list(items))


def item(new: int | None, prev: int | None = None, domain: str = "policy", scope: str = "default") -> ChangeItem:
    return ChangeItem(domain, scope, prev, new)


def log(*steps: tuple[str, int | None]) -> list[Change]:
    """A policy/default change log: (kind, new version) per change, prev filled in."""
    changes, current = [], None
    for kind, new in steps:
        changes.append(change(kind, item(new, current)))
        current = new
    return changes


# previous_version


def test_no_history_has_no_previous():
    assert previous_version([], "policy", "default") is None


def test_a_single_activation_has_no_previous():
    assert previous_version(log(("bootstrap", 1)), "policy", "default") is None


def test_activations_push_and_rollback_returns_to_the_one_before():
    changes = log(("bootstrap", 1), ("activate", 2), ("activate", 3))
    assert previous_version(changes, "policy", "default") == 2


def test_after_a_rollback_the_previous_is_the_one_before_it():
    changes = log(("bootstrap", 1), ("activate", 2), ("activate", 3), ("rollback", 2))
    assert previous_version(changes, "policy", "default") == 1


def test_rollback_then_rollback_goes_further_back():
    changes = log(("bootstrap", 1), ("activate", 2), ("activate", 3), ("activate", 4), ("rollback", 3), ("rollback", 2))
    assert previous_version(changes, "policy", "default") == 1
    changes += log(("rollback", 1))
    assert previous_version(changes, "policy", "default") is None


def test_rollback_to_an_older_version_truncates_the_stack_above_it():
    # `rollback --to 2` from 4: 3 and 4 are gone, the next rollback goes to 1, not 3.
    changes = log(("bootstrap", 1), ("activate", 2), ("activate", 3), ("activate", 4), ("rollback", 2))
    assert previous_version(changes, "policy", "default") == 1


def test_rollback_to_a_version_never_active_here_is_pushed():
    changes = log(("bootstrap", 1), ("activate", 2), ("rollback", 7))
    assert previous_version(changes, "policy", "default") == 2


def test_activating_again_after_a_rollback_pushes_it_again():
    changes = log(("bootstrap", 1), ("activate", 2), ("activate", 3), ("rollback", 2), ("activate", 3))
    assert previous_version(changes, "policy", "default") == 2


def test_activating_an_older_version_pushes_instead_of_popping():
    # Only a rollback pops: activating 1 again makes 2 the version to roll back to.
    changes = log(("bootstrap", 1), ("activate", 2), ("activate", 1))
    assert previous_version(changes, "policy", "default") == 2


def test_other_scopes_and_domains_are_ignored():
    changes = log(("bootstrap", 1), ("activate", 2))
    changes += [
        change("activate", item(9, 2, scope="tenant:acme")),
        change("activate", item(8, 2, domain="routing")),
        change("activate", item(10, 9, scope="tenant:acme")),
        change("rollback", item(2, 8, domain="routing", scope="route:chat")),
    ]
    assert previous_version(changes, "policy", "default") == 1
    assert previous_version(changes, "policy", "tenant:acme") == 9
    assert previous_version(changes, "routing", "default") is None


def test_bundle_items_of_the_scope_count():
    changes = log(("bootstrap", 1))
    changes.append(change("bundle", item(4, 1, domain="routing"), item(2, 1), item(5, None, scope="route:chat")))
    assert previous_version(changes, "policy", "default") == 1
    assert previous_version(changes, "routing", "default") is None


def test_an_unset_pointer_is_ignored():
    changes = log(("bootstrap", 1), ("activate", 2), ("activate", None))
    assert previous_version(changes, "policy", "default") == 1


# in_effect_at


def timeline() -> list[Change]:
    return [
        change("bootstrap", item(1, domain="policy"), item(1, domain="routing"), item(1, domain="config"), at=100.0),
        change("activate", item(2, 1), at=200.0),
        change("activate", item(5, scope="tenant:acme"), at=300.0),
        change("activate", item(None, 5, scope="tenant:acme"), at=400.0),
        change("rollback", item(1, 2), at=500.0),
    ]


def test_before_the_first_change_nothing_is_in_effect():
    assert in_effect_at(timeline(), 99.9) == {}
    assert in_effect_at([], 1e12) == {}


def test_a_change_is_in_effect_from_its_own_instant():
    changes = timeline()
    assert in_effect_at(changes, 200.0)[("policy", "default")] == (2, None, changes[1])
    assert in_effect_at(changes, 199.999)[("policy", "default")] == (1, None, changes[0])


def test_multi_item_changes_set_every_pointer():
    changes = timeline()
    state = in_effect_at(changes, 150.0)
    assert state == {
        ("policy", "default"): (1, None, changes[0]),
        ("routing", "default"): (1, None, changes[0]),
        ("config", "default"): (1, None, changes[0]),
    }


def test_each_pointer_names_the_change_that_set_it():
    changes = timeline()
    state = in_effect_at(changes, 350.0)
    assert state[("policy", "default")] == (2, None, changes[1])
    assert state[("routing", "default")] == (1, None, changes[0])
    assert state[("policy", "tenant:acme")] == (5, None, changes[2])


def test_an_unset_pointer_disappears():
    changes = timeline()
    assert ("policy", "tenant:acme") in in_effect_at(changes, 399.0)
    state = in_effect_at(changes, 400.0)
    assert ("policy", "tenant:acme") not in state
    assert state[("policy", "default")] == (2, None, changes[1])


def test_scopes_are_independent():
    changes = timeline()
    # Setting and unsetting tenant:acme never moved default, and the rollback of default
    # at 500 left the other domains where the bootstrap put them.
    assert in_effect_at(changes, 450.0)[("policy", "default")] == (2, None, changes[1])
    state = in_effect_at(changes, 1e9)
    assert state == {
        ("policy", "default"): (1, None, changes[4]),
        ("routing", "default"): (1, None, changes[0]),
        ("config", "default"): (1, None, changes[0]),
    }


def test_a_canary_is_in_effect_with_its_share_and_a_promotion_ends_it():
    canary = Candidate(7, 2500)
    changes = [
        change("bootstrap", item(1), at=100.0),
        change("canary", ChangeItem("policy", "default", 1, 1, None, canary), at=200.0),
        change("promote", ChangeItem("policy", "default", 1, 7, canary, None), at=300.0),
    ]
    assert in_effect_at(changes, 250.0)[("policy", "default")] == (1, canary, changes[1])
    assert in_effect_at(changes, 300.0)[("policy", "default")] == (7, None, changes[2])


def test_candidate_moves_do_not_count_as_activations_for_rollback():
    canary = Candidate(7, 500)
    changes = [
        change("bootstrap", item(1), at=100.0),
        change("activate", item(2, 1), at=150.0),
        change("canary", ChangeItem("policy", "default", 2, 2, None, canary), at=200.0),
        change("canary", ChangeItem("policy", "default", 2, 2, canary, Candidate(7, 5000)), at=250.0),
    ]
    assert previous_version(changes, "policy", "default") == 1
    promoted = [*changes, change("promote", ChangeItem("policy", "default", 2, 7, Candidate(7, 5000), None))]
    assert previous_version(promoted, "policy", "default") == 2
