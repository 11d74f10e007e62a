"""Pass or fail for each scenario, from what the replicas acknowledged, what the audit
chains say was served (not the client's clock), and what the clients saw."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from gatewayd import _core
from gatewayd.drill.scenarios import LAST_REQUEST_LIMIT_S, Run


@dataclass
class Served:
    """One request as its audit record tells it."""

    chain: str
    started: float
    versions: dict[str, int]
    position: dict[str, str]
    status: int


@dataclass
class Result:
    name: str
    passed: bool
    figures: dict
    problems: list[str] = field(default_factory=list)


def audit_requests(audit_dir: str, since: float) -> list[Served]:
    out = []
    for chain in _core.list_chains(audit_dir):
        for payload in _core.AuditReader(audit_dir, chain):
            r = json.loads(payload)
            if r.get("kind") != "request":
                continue
            ended = dt.datetime.fromisoformat(r["ts"].replace("Z", "+00:00")).timestamp()
            started = ended - r["latency_us"] / 1e6
            if started < since:
                continue
            versions = {d: r[f"{d}_version"] for d in ("policy", "routing", "config")}
            out.append(Served(chain, started, versions, r.get("position") or {}, r["status"]))
    return sorted(out, key=lambda s: s.started)


def under(run: Run, requests: list[Served]) -> list[Served]:
    """The requests served under the version the run reverts (a routing candidate: from
    the candidate position)."""
    return [
        s
        for s in requests
        if s.versions[run.domain] == run.version and (run.name != "routing" or s.position.get("routing") == "candidate")
    ]


def judge_change(run: Run, requests: list[Served], rows: list[dict]) -> Result:
    change, revert = run.change, run.revert
    served = under(run, requests)
    last = max((s.started for s in served), default=None)
    late = [s for s in served if s.started > revert.acks.get(s.chain, float("inf"))]
    window = [r for r in rows if run.started <= float(r["started"]) <= run.ended]
    malformed = [r for r in window if r["malformed"]]
    figures: dict = {
        "version": run.version,
        "change_last_ack_ms": round(change.last_ack_ms, 1),
        "revert_last_ack_ms": round(revert.last_ack_ms, 1),
        "revert_command_to_last_ack_ms": round(
            (max(revert.acks.values(), default=revert.flipped) - revert.issued) * 1000, 1
        ),
        "revert_command_to_last_request_ms": None if last is None else round((last - revert.issued) * 1000, 1),
        "requests_served_under_it": len(served),
        "requests_started_after_their_replica_acknowledged_the_revert": len(late),
        "client_requests": len(window),
        "client_failures": sum(1 for r in window if r["status"] != "200"),
        "malformed_responses": len(malformed),
    }
    problems = []
    for mark in run.marks:
        if not mark.ok:
            problems.append(f"{mark.name}: not every replica acknowledged change {mark.change}: {mark.report}")
    if not served:
        problems.append(f"no request was served under {run.domain} v{run.version}: nothing was tested")
    if last is not None and last - revert.issued > LAST_REQUEST_LIMIT_S:
        problems.append(f"a request under the reverted version started {last - revert.issued:.3f} s after the command")
    if late:
        problems.append(f"{len(late)} request(s) under the reverted version started after their replica acknowledged")
    if malformed:
        problems.append(f"{len(malformed)} malformed response(s), e.g. {malformed[0]['malformed']}")
    if run.name == "config":
        stale = stale_answers(run, rows)
        figures["stale_cache_answers"] = len(stale)
        if stale:
            problems.append(
                f"{len(stale)} answer(s) after the revert came from entries made under config v{run.version}"
            )
    return Result(run.name, not problems, figures, problems)


def stale_answers(run: Run, rows: list[dict]) -> list[dict]:
    """Answers after the revert returned that were made under the reverted config: served
    under it, or a cached answer first seen under it (the mock gives each answer its own id,
    so a cache hit repeats the id of the answer it keeps)."""
    version = str(run.version)
    born = {r["answer_id"] for r in rows if r["config_version"] == version and r["answer_id"]}
    after = [r for r in rows if float(r["started"]) > run.revert.returned]
    return [r for r in after if r["config_version"] == version or (r["answer_id"] and r["answer_id"] in born)]


def judge_audit(runs: list[Run], requests: list[Served], verified: tuple[int, str]) -> Result:
    code, output = verified
    problems = []
    if code != 0 or "intact:" not in output:
        problems.append("audit verify did not say intact:\n" + output.strip())
    if "resolves in the registry" not in output:
        problems.append("audit verify did not check the versions against the registry")
    phases = {}
    for run in runs:
        counts = {
            "before": _between(requests, run.started, run.change.issued),
            "during": _between(requests, run.change.returned, run.revert.issued),
            "after": _between(requests, run.revert.returned, run.ended),
        }
        phases[run.name] = counts
        problems += [f"{run.name}: no record {phase} the change" for phase, n in counts.items() if n == 0]
    chains = sorted({s.chain for s in requests})
    figures = {"verify": output.strip().splitlines()[-3:], "records_by_phase": phases, "chains": chains}
    return Result("audit", not problems, figures, problems)


def _between(requests: list[Served], start: float, end: float) -> int:
    return sum(1 for s in requests if start <= s.started < end)
