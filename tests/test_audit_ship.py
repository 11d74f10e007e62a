"""R14: records go on in the canonical chain whatever the sink; switching sinks, and
switching back, backfill so that no sink ever has a gap."""

from __future__ import annotations

import json

from gatewayd import _core
from support.audit import CHAIN, cli

SINK = f"{CHAIN}.jsonl"


def seqs(path) -> list[int]:
    return [json.loads(line)["seq"] for line in path.read_text().splitlines()]


def ship(root, sink, state):
    done = cli("audit", "ship", "--dir", str(root), "--to", str(sink), "--state", str(state))
    return done


def append(engine, n: int) -> None:
    for i in range(n):
        engine.event(json.dumps({"kind": "request", "request_id": f"r{i}"}).encode())


def test_switching_sinks_and_back_leaves_no_gap(tmp_path):
    root, state, a, b = tmp_path / "audit", tmp_path / "state.json", tmp_path / "sink-a", tmp_path / "sink-b"
    engine = _core.Engine(16, 1 << 20, str(root), CHAIN, 4096)
    append(engine, 30)
    assert ship(root, a, state).returncode == 0
    assert seqs(a / SINK) == list(range(1, 31))
    again = ship(root, a, state)
    assert "shipped 0 record(s)" in again.stdout, "shipping twice ships nothing twice"

    append(engine, 5)  # the destination changes to b: a full backfill there
    assert "shipped 35 record(s)" in ship(root, b, state).stdout
    append(engine, 7)  # written while b was the destination
    ship(root, b, state)
    done = ship(root, a, state)  # reverted to a: the window is backfilled
    assert "shipped 12 record(s)" in done.stdout, done.stdout
    assert seqs(a / SINK) == seqs(b / SINK) == list(range(1, 43))
    acked = json.loads(state.read_text())
    assert acked[str(a.resolve())][CHAIN] == acked[str(b.resolve())][CHAIN] == 42
    chained = [json.loads(p)["seq"] for p in _core.AuditReader(str(root), CHAIN)]
    assert chained == list(range(1, 43)), "the chain itself never depended on a sink"


def test_a_torn_sink_line_is_cut_and_a_lost_tail_backfilled(tmp_path):
    root, state, sink = tmp_path / "audit", tmp_path / "state.json", tmp_path / "sink"
    engine = _core.Engine(16, 1 << 20, str(root), CHAIN, 1 << 20)
    append(engine, 20)
    ship(root, sink, state)
    lines = (sink / SINK).read_bytes().splitlines(keepends=True)
    (sink / SINK).write_bytes(b"".join(lines[:12]) + lines[12][:25])  # lost 8, tore one
    done = ship(root, sink, state)
    assert done.returncode == 0 and "had lost records it acknowledged (through seq 20)" in done.stdout, done.stdout
    assert seqs(sink / SINK) == list(range(1, 21))


def test_records_removed_by_retention_before_shipping_are_reported(tmp_path):
    from gatewayd.audit import checkpoint
    from support.audit import new_signer

    root, state, sink = tmp_path / "audit", tmp_path / "state.json", tmp_path / "sink"
    _, signer = new_signer(tmp_path)
    engine = _core.Engine(16, 1 << 20, str(root), CHAIN, 2048)
    append(engine, 60)
    plan = engine.audit_plan_retention(0.0, 4096)
    checkpoint(engine, signer)
    engine.audit_apply_retention(plan)
    done = ship(root, sink, state)
    assert done.returncode == 1, done.stdout
    assert f"seq 1..{plan.first_seq - 1} were removed by retention before being shipped" in done.stdout
    assert seqs(sink / SINK)[0] == plan.first_seq
