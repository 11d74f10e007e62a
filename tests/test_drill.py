"""`gatewayd drill` end to end: its own cluster (redis-server, 2 replicas, two mocks) under
locust load, the four scenarios judged from the audit chains, the reports written; and the
same drill against a running gateway (--target)."""

from __future__ import annotations

import json
import subprocess
import sys

from support.gateway import KEYS


def drill(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gatewayd.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_a_short_drill_passes_every_scenario_and_reports(tmp_path):
    out = tmp_path / "report"
    done = drill("drill", "--replicas", "2", "--users", "8", "--phase", "4", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((out / "drill.json").read_text())
    assert report["passed"] is True
    results = {s["name"]: s for s in report["scenarios"]}
    assert list(results) == ["policy", "routing", "config", "audit"]
    for name in ("policy", "routing", "config"):
        figures = results[name]["figures"]
        assert figures["requests_served_under_it"] > 0, name
        assert figures["requests_started_after_their_replica_acknowledged_the_revert"] == 0, name
        assert figures["malformed_responses"] == 0 and figures["client_failures"] == 0, name
        assert figures["revert_command_to_last_request_ms"] <= 1000, name
        assert len(report["commands"][name]) == 2  # the change and its revert, with every ack
        assert all(len(c["acks"]) == 2 for c in report["commands"][name]), name
    assert results["config"]["figures"]["stale_cache_answers"] == 0
    assert len(results["audit"]["figures"]["chains"]) == 2  # both replicas' chains were read
    page = (out / "drill.html").read_text()
    assert "PASSED" in page and page.count("data:image/png;base64,") == 3
    assert "policy   PASS" in done.stdout and "audit    PASS" in done.stdout


def test_a_drill_against_a_running_gateway(gateway, tmp_path):
    out = tmp_path / "report"
    done = drill(
        "--config", str(gateway.config), "drill", "--target", gateway.url, "--key", KEYS["acme"],
        "--scenarios", "policy,audit", "--users", "4", "--phase", "2", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((out / "drill.json").read_text())
    assert [s["name"] for s in report["scenarios"]] == ["policy", "audit"] and report["passed"]


def test_bad_drill_arguments_are_one_line():
    for args, said in (
        (("drill", "--scenarios", "policy,nope"), "nope"),
        (("drill", "--target", "http://127.0.0.1:1"), "needs --config"),
        (("drill", "--phase", "0"), "--phase"),
    ):
        done = drill(*args, timeout=30)
        assert done.returncode == 2 and said in done.stderr and len(done.stderr.strip().splitlines()) == 1, done
