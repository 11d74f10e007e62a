"""A worker's memory under forwarded requests, against a real `gatewayd serve`, the mock
and wrk: whatever a request makes must be given back when it ends. A reference cycle the
collector cannot break (granian's futures are invisible to it) leaked 1.4 KB a forwarded
request once; under wrk that shows within seconds."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

from support.gateway import KEYS

MIN_REQUESTS = 12_000
MAX_GROWTH_PER_REQUEST = 256  # bytes; the allocator's own drift stays far below
FORWARDED = json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "no cache for me"}]})


def worker_rss_kb(master_pid: int) -> int:
    """The largest RSS among the serve process's children (its one granian worker)."""
    children = subprocess.run(["pgrep", "-P", str(master_pid)], capture_output=True, text=True).stdout.split()
    sizes = [int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0]) for pid in children]
    return max(sizes)


def wrk(url: str, script: Path, seconds: int) -> int:
    """Requests answered in a `seconds` run at 8 connections; fails on any error."""
    out = subprocess.run(
        ["wrk", "-t1", "-c8", f"-d{seconds}s", "-s", str(script), url], capture_output=True, text=True, check=True
    ).stdout
    assert "Non-2xx" not in out and "Socket errors" not in out, out
    return int(re.search(r"(\d+) requests in", out).group(1))


def test_forwarded_requests_leave_nothing_behind(gateway_each_interface, tmp_path):
    assert shutil.which("wrk"), "wrk is missing: `make setup` installs it"
    gw = gateway_each_interface
    script = tmp_path / "forward.lua"
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = [[{FORWARDED}]]\n'
        f'wrk.headers["content-type"] = "application/json"\nwrk.headers["authorization"] = "Bearer {KEYS["acme"]}"\n'
    )
    url = gw.url + "/v1/chat/completions"
    wrk(url, script, 2)  # warm-up: connection pools, the allocator's arenas, the audit segment
    before = worker_rss_kb(gw.proc.pid)
    served, deadline = 0, time.monotonic() + 60
    while served < MIN_REQUESTS and time.monotonic() < deadline:
        served += wrk(url, script, 3)
    growth = (worker_rss_kb(gw.proc.pid) - before) * 1024
    assert served > 0
    assert growth / served < MAX_GROWTH_PER_REQUEST, f"RSS grew {growth // 1024} KB over {served} forwarded requests"
