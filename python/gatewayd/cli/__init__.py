"""The `gatewayd` command: serve, run the mock provider, and operate the control plane.

Every failure is one line on stderr naming the file, field or argument, and exit code 2
(usage, bad input: nothing changed) or 1 (the operation ran and failed). One refusal lists
more below its line: the response-contract differences of a routing change (R11).
"""

from __future__ import annotations

import argparse
import sys

from gatewayd.cli import admin, audit, control, drill, keys, rollouts, serve, switches, usage
from gatewayd.cli.common import Parser
from gatewayd.errors import ContractMismatchError, GatewaydError, meaning


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="gatewayd", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="config file (TOML); default: $GATEWAYD_CONFIG")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    serve.register(commands)
    control.register(commands)
    rollouts.register(commands)
    switches.register(commands)
    audit.register(commands)
    admin.register(commands)
    drill.register(commands)
    usage.register(commands)
    keys.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.run(args) or 0
    except GatewaydError as exc:  # every error of ours, from Python or Rust: one line
        print(f"error: {exc}", file=sys.stderr)
        if isinstance(exc, ContractMismatchError):  # the one refusal whose list is the point
            for line in exc.differences:
                print(f"  {line}", file=sys.stderr)
        return meaning(exc).exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
