"""How the drill judges a scenario (gatewayd.drill.judge): late requests, the last request
after the command, malformed answers, stale cache answers, and the audit phases."""

from __future__ import annotations

from gatewayd.drill.judge import Served, judge_audit, judge_change, stale_answers
from gatewayd.drill.scenarios import Mark, Run


def run(name: str = "policy", domain: str = "policy") -> Run:
    r = Run(name, domain, 2, started=100.0, ended=130.0)
    r.marks.append(Mark("change", 5, 110.0, 110.01, 110.05, {"w0": 110.02, "w1": 110.03}, True, ""))
    r.marks.append(Mark("revert", 6, 120.0, 120.01, 120.05, {"w0": 120.02, "w1": 120.04}, True, ""))
    return r


def served(at: float, version: int, chain: str = "w0", candidate: bool = False) -> Served:
    position = {"routing": "candidate" if candidate else "current"}
    return Served(chain, at, {"policy": version, "routing": version, "config": version}, position, 200)


def row(at: float, config: int = 1, answer: str = "", malformed: str = "") -> dict:
    return {
        "started": str(at),
        "status": "200",
        "config_version": str(config),
        "answer_id": answer,
        "malformed": malformed,
    }


def test_a_clean_revert_passes_with_its_figures():
    requests = [served(105, 1), served(115, 2), served(120.015, 2, "w1"), served(125, 1)]
    result = judge_change(run(), requests, [row(105), row(115)])
    assert result.passed, result.problems
    assert result.figures["requests_served_under_it"] == 2
    assert result.figures["revert_command_to_last_request_ms"] == 15.0
    assert result.figures["revert_last_ack_ms"] == 30.0


def test_a_request_after_its_replica_acknowledged_fails():
    result = judge_change(run(), [served(115, 2), served(120.03, 2, "w0")], [])
    assert not result.passed
    assert result.figures["requests_started_after_their_replica_acknowledged_the_revert"] == 1


def test_a_late_last_request_malformed_answers_and_no_traffic_fail():
    slow = judge_change(run(), [served(115, 2), served(121.5, 2, "w9")], [])
    assert any("1.500 s after the command" in p for p in slow.problems)
    bad = judge_change(run(), [served(115, 2)], [row(112, malformed="200 that is not a chat completion")])
    assert any("malformed" in p for p in bad.problems)
    assert any("nothing was tested" in p for p in judge_change(run(), [served(115, 1)], []).problems)


def test_routing_counts_only_the_candidate_position():
    routing = run("routing", "routing")
    requests = [served(115, 2, candidate=True), served(115, 2, candidate=False)]
    assert judge_change(routing, requests, []).figures["requests_served_under_it"] == 1


def test_stale_cache_answers_are_found_by_answer_id():
    config = run("config", "config")
    rows = [row(112, config=2, answer="a-2"), row(121, config=1, answer="a-2"), row(122, config=1, answer="a-1")]
    assert [r["answer_id"] for r in stale_answers(config, rows)] == ["a-2"]
    assert not judge_change(config, [served(115, 2)], rows).passed


def test_audit_needs_records_in_every_phase_and_an_intact_verify():
    ok = (0, "intact: 2 chain(s)\nevery version the records name (3) resolves in the registry\n")
    requests = [served(105, 1), served(115, 2), served(125, 1)]
    assert judge_audit([run()], requests, ok).passed
    gap = judge_audit([run()], [served(105, 1), served(125, 1)], ok)
    assert gap.problems == ["policy: no record during the change"]
    assert not judge_audit([run()], requests, (1, "NOT INTACT: 1 problem(s)")).passed
