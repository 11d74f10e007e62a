"""deploy/prometheus/alerts.yaml, checked and unit-tested by promtool (Debian's
`prometheus` package): every alert fires on what it names and stays quiet otherwise
(the cases are in alerts_test.yaml)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def promtool(*args: str) -> subprocess.CompletedProcess:
    if not Path(PROMTOOL).exists():
        pytest.fail("promtool is missing: `make system-deps` installs Debian's prometheus package")
    return subprocess.run([PROMTOOL, *args], cwd=RULES, capture_output=True, text=True, timeout=120)


def test_the_alert_rules_are_valid():
    done = promtool("check", "rules", "alerts.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 10 rules found" in done.stdout


def test_every_alert_fires_on_its_case_and_only_then():
    done = promtool("test", "rules", "alerts_test.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    alerts = {
        line.split(":", 1)[1].strip()
        for line in (RULES / "alerts.yaml").read_text().splitlines()
        if line.strip().startswith("- alert:")
    }
    cases = (RULES / "alerts_test.yaml").read_text()
    untested = sorted(a for a in alerts if f"alertname: {a}\n" not in cases)
    assert not untested, f"alerts without a promtool case: {untested}"
