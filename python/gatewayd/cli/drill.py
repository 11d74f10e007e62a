"""`gatewayd drill`: the rollback scenarios under locust load; exit 1 when any fails."""

from __future__ import annotations

import os
from pathlib import Path

from gatewayd.cli.common import CliError
from gatewayd.drill.scenarios import SCENARIOS


def register(commands) -> None:
    d = commands.add_parser(
        "drill", help="run the rollback scenarios under locust load and report (exit 1 on a failure)"
    )
    d.add_argument("--replicas", type=int, default=4, help="replicas of the drill's own cluster (4)")
    d.add_argument("--users", type=int, default=64, help="locust users (64)")
    d.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of {', '.join(SCENARIOS)}")
    d.add_argument("--phase", type=float, default=10.0, help="seconds before, during and after each change (10)")
    d.add_argument("--out", default="drill-report", help="where drill.json, drill.html and requests.csv go")
    d.add_argument("--target", help="a running gatewayd's URL (with --config); default: start a cluster")
    d.add_argument("--key", help="with --target: a caller key for the traffic (default $GATEWAYD_DRILL_KEY)")
    d.set_defaults(run=run_drill)


def run_drill(args) -> int:
    from gatewayd.drill import run  # locust and matplotlib are needed only here

    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown or not scenarios:
        raise CliError(f"drill --scenarios: {', '.join(unknown) or 'none'}: expected some of {', '.join(SCENARIOS)}")
    if args.replicas < 1 or args.users < 1 or args.phase < 1:
        raise CliError("drill: --replicas and --users at least 1, --phase at least 1 second")
    key = args.key or os.environ.get("GATEWAYD_DRILL_KEY")
    if args.target and not (args.config and key):
        raise CliError("drill --target: needs --config (the cluster's) and --key or $GATEWAYD_DRILL_KEY")
    config_path = args.config or os.environ.get("GATEWAYD_CONFIG") if args.target else None
    passed = run.run(scenarios, args.users, args.phase, Path(args.out), args.replicas, args.target, config_path, key)
    return 0 if passed else 1
