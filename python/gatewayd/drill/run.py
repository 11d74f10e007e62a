"""`gatewayd drill`: the rollback scenarios under locust load, judged and reported.

Without a target it starts its own cluster (`drill.cluster`); with one it drives a running
gatewayd through the config given (its control store and audit directory must be
reachable from here). Traffic runs for the whole drill; each change scenario takes three
phases of `phase_s` seconds (before, during, after), then the chains are read and judged.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from gatewayd import config
from gatewayd.control.registry import open_registry
from gatewayd.drill import judge, report
from gatewayd.drill.cluster import Cluster
from gatewayd.drill.scenarios import change_and_revert

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
WARMUP_S = 3.0


def run(
    scenarios: list[str],
    users: int,
    phase_s: float,
    out: Path,
    replicas: int,
    target: str | None,
    config_path: str | None,
    key: str | None,
) -> bool:
    """Runs the drill; True when every scenario passed."""
    cluster = None
    if target is None:
        cluster = Cluster(Path(tempfile.mkdtemp(prefix="gatewayd-drill-")), replicas)
        target, config_path, key = cluster.url, str(cluster.config), cluster.key
        print(f"drill: cluster of {replicas} replicas, Redis and two mock providers in {cluster.root}", flush=True)
    assert config_path is not None and key is not None
    settings = config.load(config_path)
    registry = open_registry(settings)
    changes = [s for s in scenarios if s != "audit"]
    duration = WARMUP_S + len(changes) * (3 * phase_s + 2) + 5
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "requests.csv"
    locust = _locust(target, key, users, duration, csv_path)
    progress = Progress(csv_path)
    try:
        try:
            progress.say("warming up")
            time.sleep(WARMUP_S)
            started = time.time()
            runs = [change_and_revert(registry, name, phase_s, progress.say) for name in changes]
            progress.say("stopping the load")
        finally:
            if locust.poll() is None:
                locust.terminate()
            locust.wait(timeout=30)
            progress.stop()
        rows = _rows(csv_path)
        requests = judge.audit_requests(str(settings.path(settings.audit.dir)), started)
        results = [judge.judge_change(r, requests, rows) for r in runs]
        if "audit" in scenarios:  # while the store is up: versions are checked against it
            results.append(judge.judge_audit(runs, requests, _verify(config_path)))
    finally:
        if cluster is not None:
            cluster.stop()
    how = {
        "target": target,
        "replicas": len({s.chain for s in requests}),
        "locust users": users,
        "phase": f"{phase_s:g} s",
        "requests": len(rows),
        "requests/s": round(len(rows) / max(1.0, time.time() - started), 1),
    }
    report.write(out, how, runs, results, requests)
    for r in results:
        flat = ", ".join(f"{k}={v}" for k, v in r.figures.items() if not isinstance(v, (dict, list)))
        print(f"{r.name:<8} {'PASS' if r.passed else 'FAIL'}  {flat}")
        for problem in r.problems:
            print(f"         {problem}")
    print(f"reports: {out / 'drill.json'}, {out / 'drill.html'}")
    return all(r.passed for r in results)


def _locust(target: str, key: str, users: int, duration: float, csv_path: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", target, "--headless"]
    argv += ["-u", str(users), "-r", str(users), "-t", f"{int(duration)}s", "--only-summary", "--loglevel", "ERROR"]
    env = {**os.environ, "GATEWAYD_KEY": key, "GATEWAYD_VERSIONS_CSV": str(csv_path)}
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _verify(config_path: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "gatewayd.cli", "--config", config_path, "audit", "verify"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.returncode, done.stdout + done.stderr


class Progress:
    """One live line: the phase, requests so far, their rate and the malformed ones."""

    def __init__(self, csv_path: Path):
        self.csv_path = csv_path
        self.phase = ""
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._live = sys.stdout.isatty()
        self._thread.start()

    def say(self, phase: str) -> None:
        self.phase = phase
        if not self._live:
            print(f"drill: {phase} ({self._line()})", flush=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        if self._live:
            print(flush=True)

    def _line(self) -> str:
        rows = _rows(self.csv_path)
        elapsed = time.monotonic() - self.started
        bad = sum(1 for r in rows if r["malformed"])
        return f"{len(rows)} requests, {len(rows) / max(elapsed, 1):.0f}/s, {bad} malformed"

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            if self._live:
                print(f"\rdrill: {self.phase:<20} {self._line():<60}", end="", flush=True)
