"""`gatewayd canary` and `gatewayd promote`: staged rollouts, each step through the barrier."""

from __future__ import annotations

from gatewayd.cli.common import CliError, actor, await_change, contract_force_help, load_settings, open_registry
from gatewayd.control import auto_revert, contract, documents, positions
from gatewayd.control.model import DEFAULT_SCOPE


def register(commands) -> None:
    c = commands.add_parser(
        "canary", help="serve a candidate version to a share of traffic, move the share, or --abort it"
    )
    c.add_argument("domain", choices=documents.DOMAINS)
    c.add_argument("version", nargs="?", type=int, help="the candidate to start; omitted: the one running")
    share = c.add_mutually_exclusive_group(required=True)
    share.add_argument("--percent", type=float, help="the candidate's share of traffic, 0.01 to 100")
    share.add_argument("--abort", action="store_true", help="the candidate's share to 0, the candidate held")
    c.add_argument(
        "--revert-if",
        action="append",
        default=[],
        metavar="RULE",
        help="hold the candidate at 0%% automatically when RULE holds, e.g. 'error_rate > 0.05' or "
        "'p95_ms > 3 * current'; repeatable",
    )
    c.add_argument("--min-requests", type=int, help="candidate requests in the window before rules are judged (100)")
    c.add_argument("--window", type=float, help="seconds of traffic the rules are judged over (60)")
    c.add_argument("--allow-policy-revert", action="store_true", help="allow revert rules on a policy candidate")
    c.add_argument(
        "--shadow",
        action="store_true",
        help="routing only: copy the share's requests to the candidate, measured and compared, never answered from it",
    )
    _options(c)
    c.set_defaults(run=run_canary)

    p = commands.add_parser("promote", help="the candidate becomes the current version for all traffic")
    p.add_argument("domain", choices=documents.DOMAINS)
    _options(p)
    p.add_argument("--force", action="store_true", help=contract_force_help("promotion"))
    p.set_defaults(run=run_promote)


def _options(parser) -> None:
    parser.add_argument("--scope", default=DEFAULT_SCOPE, help="default, tenant:NAME or route:API")
    parser.add_argument("--reason", required=True)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for acknowledgements")


def run_canary(args) -> int:
    registry = open_registry(load_settings(args))
    if args.abort:
        if args.version is not None:
            raise CliError("canary --abort: takes no version (it holds the running candidate at 0%)")
        change = positions.abort(registry, args.domain, args.scope, actor(), args.reason)
    else:
        revert = auto_revert.rules_for(
            args.domain, args.revert_if, args.min_requests, args.window, args.allow_policy_revert
        )
        change = positions.canary(
            registry, args.domain, args.scope, args.version, args.percent, actor(), args.reason, revert, args.shadow
        )
    return await_change(registry, change, args.timeout)


def run_promote(args) -> int:
    settings = load_settings(args)
    registry = open_registry(settings)
    check = contract.ContractCheck(registry, settings, force=args.force)
    change = positions.promote(registry, args.domain, args.scope, actor(), args.reason, check=check)
    for line in check.report:
        print(line)
    return await_change(registry, change, args.timeout)
