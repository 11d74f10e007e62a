"""The operator console's figures (issue 16): how soon the page shows a flip in effect on
every replica, how much it weighs, and what its live view costs the admin API.

A real cluster (redis-server, the mock provider, `gatewayd serve` with N replicas and its
admin API), headless Chromium (Debian's chromium and chromium-driver, through selenium).

1. Flips: the bench activates a policy version and rolls it back, `--flips` times in all,
   through the admin API. The page, signed in as an operator, notes (in the browser, with a
   MutationObserver) when its replica table first shows every replica in sync on that
   change. Time from the change record's timestamp to then, beside the barrier's own last
   acknowledgement (the same clock: one machine).
2. Weight: the HTML, CSS and JavaScript the page loads, raw and gzipped.
3. Cost: the admin process's CPU (its process tree, from /proc through psutil) over
   `--window` seconds with 0, 1, 10, 50 consoles' live streams open, beside as many
   clients short-polling GET /v1/status once a second (what a page without the shared
   stream would do).

    python bench/console_bench.py [--flips 20] [--replicas 2] [--consoles 0,1,10,50] [--window 15]

Writes bench/results/console.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import httpx  # noqa: E402
import psutil  # noqa: E402
from cluster import Cluster, percentile  # noqa: E402

from gatewayd.admin import console  # noqa: E402
from support.browser import sign_in, start_browser, wait_for  # noqa: E402
from support.gateway import ADMIN_TOKENS, POLICY_V2  # noqa: E402

WATCH = """
window.__seen = {};
const check = () => {
  const rows = [...document.querySelectorAll('#replicas tr[data-replica]')];
  if (rows.length !== arguments[0]) return;
  const applied = rows.map((r) => Number(r.children[3].textContent));
  const synced = rows.every((r) => r.querySelector('.state').textContent === 'in sync');
  const change = Math.min(...applied);
  if (synced && applied.every((a) => a === change) && !(change in window.__seen)) window.__seen[change] = Date.now();
};
const options = {subtree: true, childList: true, characterData: true};
new MutationObserver(check).observe(document.getElementById('overview'), options);
"""


def flips(cluster: Cluster, replicas: int, count: int) -> dict:
    browser = start_browser()
    admin = httpx.Client(
        base_url=cluster.gw.admin_url, headers={"authorization": f"Bearer {ADMIN_TOKENS['operator']}"}, timeout=30
    )
    try:
        sign_in(browser, cluster.gw.admin_url, ADMIN_TOKENS["operator"])
        wait_for(lambda: browser.find_elements("css selector", "#replicas tr[data-replica]"))
        browser.execute_script(WATCH, replicas)
        with httpx.Client(
            base_url=cluster.gw.admin_url, headers={"authorization": f"Bearer {ADMIN_TOKENS['admin']}"}
        ) as a:
            bad = a.post("/v1/versions/policy", content=POLICY_V2.encode(), params={"reason": "console bench"}).json()
        console_ms, barrier_ms = [], []
        for i in range(count):
            if i % 2 == 0:
                r = admin.post("/v1/activate", json={"domain": "policy", "version": bad["id"], "reason": f"bench {i}"})
            else:
                r = admin.post("/v1/rollback", json={"domain": "policy", "reason": f"bench {i}"})
            report = r.json()
            assert r.status_code == 200, report
            change = report["change"]
            seen = wait_for(lambda c=change["id"]: browser.execute_script(f"return window.__seen[{c}]"), timeout=30)
            console_ms.append(seen - change["at"] * 1000)
            barrier_ms.append(report["last_ack_ms"])
            time.sleep(0.3)  # apart, so each flip is seen on its own
        return {"flips": count, "console_ms": summary(console_ms), "barrier_last_ack_ms": summary(barrier_ms)}
    finally:
        admin.close()
        browser.quit()


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered), 1),
        "p95": round(percentile(ordered, 95), 1),
        "max": round(ordered[-1], 1),
    }


def weight() -> dict:
    assets = console.load_assets()
    files = {path: len(a.body) for path, a in assets.items() if path != "/"}
    raw = sum(files.values())
    zipped = sum(len(gzip.compress(assets[path].body, 9)) for path in files)
    return {"files": files, "bytes": raw, "gzip_bytes": zipped}


def admin_processes(gateway_pid: int) -> list[psutil.Process]:
    root = psutil.Process(gateway_pid)
    for child in root.children(recursive=True):
        if "admin" in child.cmdline():
            return [child, *child.children(recursive=True)]
    raise RuntimeError("no admin process under the gateway")


def cpu_seconds(procs: list[psutil.Process]) -> float:
    return sum(p.cpu_times().user + p.cpu_times().system for p in procs)


async def _streams(url: str, cookie: str, count: int, stop: threading.Event, tally: dict) -> None:
    host, port = url.removeprefix("http://").split(":")

    async def one() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET /v1/live HTTP/1.1\r\nhost: {host}\r\ncookie: {cookie}\r\n\r\n".encode())
        await writer.drain()
        while not stop.is_set():
            try:
                chunk = await asyncio.wait_for(reader.read(65536), 0.5)
            except TimeoutError:
                continue
            if not chunk:
                break
            tally["bytes"] += len(chunk)
            tally["events"] += chunk.count(b"\nevent: ") + chunk.startswith(b"event: ")
        writer.close()

    await asyncio.gather(*(one() for _ in range(count)))


async def _pollers(url: str, token: str, count: int, stop: threading.Event, tally: dict) -> None:
    async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {token}"}, timeout=30) as c:

        async def one() -> None:
            while not stop.is_set():
                r = await c.get("/v1/status")
                tally["bytes"] += len(r.content)
                tally["events"] += 1
                await asyncio.sleep(1.0)

        await asyncio.gather(*(one() for _ in range(count)))


def cost(cluster: Cluster, counts: list[int], window: float) -> list[dict]:
    url = cluster.gw.admin_url
    procs = admin_processes(cluster.gw.proc.pid)
    with httpx.Client(base_url=url) as c:
        c.post("/console/session", json={"token": ADMIN_TOKENS["viewer"]})
        cookie = f"gatewayd_session={c.cookies['gatewayd_session']}"
    out = []
    for mode in ("live stream", "polling /v1/status every 1 s"):
        for n in counts:
            if n == 0 and mode != "live stream":
                continue
            stop, tally = threading.Event(), {"bytes": 0, "events": 0}
            work = _streams(url, cookie, n, stop, tally) if mode == "live stream" else None
            if work is None:
                work = _pollers(url, ADMIN_TOKENS["viewer"], n, stop, tally)
            thread = threading.Thread(target=asyncio.run, args=(work,), daemon=True)
            thread.start()
            time.sleep(2.0)  # connected and settled
            before, start, counted = cpu_seconds(procs), time.monotonic(), dict(tally)
            time.sleep(window)
            used, elapsed = cpu_seconds(procs) - before, time.monotonic() - start
            got = {k: tally[k] - counted[k] for k in tally}
            stop.set()
            thread.join(10)
            polling = mode != "live stream"
            row = {
                "mode": mode,
                "consoles": n,
                "admin_cpu_percent": round(100 * used / elapsed, 2),
                # A live stream is one request held open; a poller makes one a second.
                "admin_requests_per_s": round(got["events"] / elapsed, 2) if polling else 0.0,
                "messages_per_s_per_console": round(got["events"] / elapsed / n, 2) if n else 0.0,
                "bytes_per_s_per_console": round(got["bytes"] / elapsed / n) if n else 0,
            }
            print(json.dumps(row), flush=True)
            out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flips", type=int, default=20)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--consoles", default="0,1,10,50", help="comma-separated console counts")
    parser.add_argument("--window", type=float, default=15.0, help="seconds measured per console count")
    args = parser.parse_args()
    counts = [int(n) for n in args.consoles.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp), args.replicas, admin=True)
        try:
            result = {"replicas": args.replicas, "weight": weight()}
            print(json.dumps(result["weight"]), flush=True)
            result["flip_to_console_in_sync"] = flips(cluster, args.replicas, args.flips)
            print(json.dumps(result["flip_to_console_in_sync"]), flush=True)
            result["live_view_cost"] = cost(cluster, counts, args.window)
        finally:
            cluster.stop()
    out = HERE / "results" / "console.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
