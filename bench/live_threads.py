"""Where a live worker's CPU goes, thread by thread: gatewayd against the bare pass-through.

    python bench/live_threads.py [--connections 1,32] [--seconds 6] [--interface asgi]

Each server (one worker, the `dedicated` layout: it alone on CPU 1, the mock and wrk on
CPU 0) serves the bench's chat completion under `wrk` (forwarded to the mock: no cache).
Around the measured run each of its threads' CPU time and context switches are read
from /proc (`stat`, `status`), and reported per request: the Python thread that runs the
app, granian's tokio thread and the rest. Voluntary switches are sleeps and wake-ups,
involuntary ones preemptions: at one connection they are a large part of the latency.
CPU time comes in the kernel's 10 ms ticks, so runs shorter than a few seconds are
coarse. Prints a table; writes nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from gateway_bench import PROMPT, WRK_LUA, pin, policy_50  # noqa: E402
from servers import Servers, Target, process_tree  # noqa: E402

TICK_US = 10_000  # /proc reports CPU time in clock ticks of 10 ms


def thread_counters(pids: list[int]) -> dict[tuple[int, str], tuple[int, int, int]]:
    """(tid, name) -> (CPU µs, voluntary switches, involuntary switches) of every thread."""
    out = {}
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                stat = (task / "stat").read_text()
                status = (task / "status").read_text().splitlines()
            except FileNotFoundError:  # the thread ended meanwhile
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            switches = {line.split(":")[0]: int(line.split()[1]) for line in status if "ctxt_switches" in line}
            cpu = (int(fields[11]) + int(fields[12])) * TICK_US
            out[(int(task.name), name)] = (
                cpu,
                switches["voluntary_ctxt_switches"],
                switches["nonvoluntary_ctxt_switches"],
            )
    return out


def wrk(target: Target, script: Path, connections: int, seconds: int) -> int:
    """Requests `wrk` completed against `target`."""
    argv = ["taskset", "-c", "0", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), target.url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return int(next(line for line in out.splitlines() if "requests in" in line).split()[0])


def measure(target: Target, script: Path, connections: int, seconds: int) -> None:
    wrk(target, script, connections, 1)  # warm: pools, memos
    pids = process_tree(target.pid)
    before = thread_counters(pids)
    requests = wrk(target, script, connections, seconds)
    after = thread_counters(pids)
    print(f"{target.name}, {connections} connection(s): {requests / seconds:,.0f} req/s")
    for thread, (cpu, vol, inv) in sorted(after.items()):
        if thread not in before:
            continue
        cpu_us, voluntary, involuntary = (
            (now - then) / requests for now, then in zip((cpu, vol, inv), before[thread], strict=True)
        )
        if cpu_us or voluntary or involuntary:
            switches = f"{voluntary:5.2f} voluntary  {involuntary:5.2f} involuntary"
            print(f"  {thread[1]:16} {thread[0]:>8}  {cpu_us:7.1f} us  {switches}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", default="1,32")
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--interface", choices=("asgi", "rsgi"), default="asgi")
    args = parser.parse_args()
    body = json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": PROMPT}]})
    with Servers() as servers:
        gateway = servers.gateway(policy_50(), args.interface)
        floor = servers.passthrough()
        scripts = {}
        for target in (gateway, floor):
            scripts[target.name] = servers.root / f"{target.name}.lua"
            scripts[target.name].write_text(WRK_LUA % (body, target.key))
        pin(process_tree(gateway.pid) + process_tree(floor.pid), "1")
        pin(process_tree(servers.mock.pid), "0")
        for connections in (int(c) for c in args.connections.split(",")):
            for target in (gateway, floor):
                measure(target, scripts[target.name], connections, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
