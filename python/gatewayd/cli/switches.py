"""`gatewayd killswitch`, `gatewayd shadow` and `gatewayd bundle`: flips with the barrier."""

from __future__ import annotations

from gatewayd.cli.common import CliError, actor, await_change, load_settings, open_registry
from gatewayd.control import documents, switches
from gatewayd.control.model import DEFAULT_SCOPE


def register(commands) -> None:
    k = commands.add_parser("killswitch", help="deny every request of a scope (on), or restore it (off)")
    k.add_argument("state", choices=["on", "off"])
    k.add_argument("--scope", default=DEFAULT_SCOPE, help="default, or tenant:NAME")
    _flip_options(k)
    k.set_defaults(run=run_killswitch)

    s = commands.add_parser("shadow", help="evaluate a policy version beside the enforced one, not enforced")
    s.add_argument("version", help="a policy version, or `off`")
    _flip_options(s)
    s.set_defaults(run=run_shadow)

    b = commands.add_parser("bundle", help="flip policy, routing and config together")
    b.add_argument("action", choices=["activate", "rollback"])
    b.add_argument("manifest", nargs="?", help="activate: a file with `policy: N`, `routing: N`, `config: N`")
    _flip_options(b)
    b.set_defaults(run=run_bundle)


def _flip_options(parser) -> None:
    parser.add_argument("--reason", required=True)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for acknowledgements")


def run_killswitch(args) -> int:
    registry = open_registry(load_settings(args))
    if args.state == "on":
        change = switches.kill(registry, args.scope, actor(), args.reason)
    else:
        change = switches.unkill(registry, args.scope, actor(), args.reason)
    return await_change(registry, change, args.timeout)


def run_shadow(args) -> int:
    registry = open_registry(load_settings(args))
    if args.version == "off":
        version = None
    elif args.version.isdigit():
        version = int(args.version)
    else:
        raise CliError(f"shadow: expected a policy version or `off`, got {args.version!r}")
    return await_change(registry, switches.shadow(registry, version, actor(), args.reason), args.timeout)


def run_bundle(args) -> int:
    registry = open_registry(load_settings(args))
    if args.action == "activate":
        if not args.manifest:
            raise CliError("bundle activate: a manifest file is required")
        bundle = switches.parse_bundle(documents.read_file(args.manifest), args.manifest)
        change = switches.activate_bundle(registry, bundle, actor(), args.reason)
    else:
        change = switches.rollback_bundle(registry, actor(), args.reason)
    return await_change(registry, change, args.timeout)
