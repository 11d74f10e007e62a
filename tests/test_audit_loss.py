"""Records lost from a real gateway's trail are reported by `gatewayd audit verify`: a
partial record cut from the end of the current segment, a replica's whole chain deleted,
both at once, with the control store out of reach; and one corrupt chain does not stop the
gateway: its replica is refused, the other workers serve."""

from __future__ import annotations

import os
import shutil
import subprocess

import httpx
import pytest

from support.audit import record_frames
from support.gateway import ADMIN_TOKENS, KEYS, Gateway
from support.procs import free_port

PREFIX = "host"


def chat(gw: Gateway, n: int = 20) -> None:
    with httpx.Client(timeout=10) as client:
        for i in range(n):
            body = {"model": "mock-gpt", "messages": [{"role": "user", "content": f"record {i}"}]}
            r = client.post(
                gw.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEYS['acme']}"}
            )
            assert r.status_code == 200, r.text


@pytest.fixture
def served(tmp_path, mock_port, fragile_port):
    """A two-worker gateway that served requests and stopped: (gateway, its chain names)."""
    gw = Gateway(tmp_path, mock_port, fragile_port, workers=2, prefix=PREFIX).start()
    try:
        chat(gw)
    finally:
        gw.stop()
    chains = sorted(p.name for p in gw.audit_dir.iterdir())
    assert chains == [f"{PREFIX}-w0", f"{PREFIX}-w1"], chains
    assert "intact: 2 chain(s)" in gw.cli("audit", "verify").stdout
    return gw, chains


def verify_fails(gw: Gateway, env: dict | None = None) -> str:
    """verify's output; it must exit 1 and not call the trail intact."""
    done = subprocess.run(gw.cli_argv("audit", "verify"), capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "intact" not in done.stdout.replace("NOT INTACT", ""), done.stdout
    assert done.stdout.splitlines()[-1].startswith("NOT INTACT: "), done.stdout
    return done.stdout


def cut_tail(gw: Gateway, chain: str, n: int = 5) -> int:
    """Cuts `n` bytes off the chain's current segment; returns the seq of the last whole record."""
    segment = sorted((gw.audit_dir / chain).glob("*.seg"))[-1]
    records = [r for r in gw.audit_records() if r["chain"] == chain]
    data = segment.read_bytes()
    segment.write_bytes(data[:-n])
    return records[-1]["seq"] - 1


def test_a_cut_tail_is_reported_as_lost_records(served):
    gw, (chain, _) = served
    last_whole = cut_tail(gw, chain)
    out = verify_fails(gw)
    lines = [line for line in out.splitlines() if line.startswith("BROKEN: ")]
    assert len(lines) == 1, out
    assert lines[0].startswith(f"BROKEN: chain {chain}: ") and "possible crash: " in lines[0], out
    assert f"bytes of a partial record after seq {last_whole}; records after seq {last_whole} are lost" in lines[0]


def test_a_deleted_chain_is_named_missing(served):
    gw, (_, gone) = served
    shutil.rmtree(gw.audit_dir / gone)
    out = verify_fails(gw)
    assert f"MISSING: chain {gone}: no chain directory under" in out, out
    assert "acknowledged change 1 in the control store" in out, out


def test_two_tamperings_are_both_reported(served):
    gw, (cut, gone) = served
    cut_tail(gw, cut)
    shutil.rmtree(gw.audit_dir / gone)
    out = verify_fails(gw)
    assert f"BROKEN: chain {cut}: " in out and f"MISSING: chain {gone}: " in out, out
    assert "NOT INTACT: 2 problem(s); 2 of 2 chain(s) affected" in out, out


def test_without_the_store_verify_still_reports_and_says_what_it_could_not_check(served):
    gw, (cut, _) = served
    cut_tail(gw, cut)
    env = dict(os.environ, GATEWAYD_CONTROL_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    out = verify_fails(gw, env)
    assert f"BROKEN: chain {cut}: " in out and "possible crash" in out, out
    assert "versions and replicas not checked against the registry: " in out, out


def test_a_corrupt_chain_is_refused_and_the_other_workers_serve(served, tmp_path, mock_port, fragile_port):
    old, _ = served
    bad = f"{PREFIX}-w0"
    segment = old.audit_dir / bad / "00000001.seg"
    data = bytearray(segment.read_bytes())
    frames = record_frames(bytes(data))
    _, end = frames[len(frames) // 2]  # a record in the middle, records after it: no crash does that
    data[end - 3] ^= 0x20
    segment.write_bytes(bytes(data))
    damaged = bytes(data)

    gw = Gateway(old.root, mock_port, fragile_port, workers=2, prefix=PREFIX, admin=True).start()
    try:
        chat(gw, 10)
        headers = {"authorization": f"Bearer {ADMIN_TOKENS['viewer']}"}
        status = httpx.get(gw.admin_url + "/v1/status", headers=headers, timeout=10)
        assert status.status_code == 200, status.text
        serving = {r["name"] for r in status.json()["replicas"]}
        assert bad not in serving and len(serving) == 2, serving
        gw.proc.log.seek(0)
        log = gw.proc.log.read().decode(errors="replace")
        refusals = [line for line in log.splitlines() if f"replica {bad} refused: audit chain is corrupt" in line]
        assert len(refusals) == 1, log[-3000:]
    finally:
        gw.stop()
    assert segment.read_bytes() == damaged  # left as it was, for inspection
    out = verify_fails(gw)
    assert f"BROKEN: chain {bad}: " in out and "CRC-32C mismatch" in out, out
    assert f"note: chain {bad}: chain {PREFIX}-w" in out and "records a worker refused it" in out, out
