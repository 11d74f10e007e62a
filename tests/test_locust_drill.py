"""The SRE drill (loadtests/drill.py) runs end to end: locust traffic, activate, rollback,
timeline picture, and no request served by the reverted version after the rollback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support.gateway import KEYS

ROOT = Path(__file__).resolve().parents[1]


def test_locust_drill_reports_a_clean_rollback(gateway, tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "loadtests" / "drill.py"),
            "--config",
            str(gateway.config),
            "--host",
            gateway.url,
            "--users",
            "8",
            "--key",
            KEYS["acme"],
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "drill.json").read_text())
    assert report["requests"] > 100 and report["failures"] == 0
    assert report["served_by_reverted_version_after_rollback_returned"] == 0
    assert [c["command"] for c in report["commands"]] == ["activate", "rollback"]
    assert (tmp_path / "drill-timeline.png").stat().st_size > 10_000
