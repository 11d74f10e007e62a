"""What the subcommands share: settings, the registry, time parsing and printing.

`iso` and `open_registry` are re-exported: the control layer owns them, the CLI uses them.
"""

from __future__ import annotations

import argparse
import os
from typing import NoReturn

from gatewayd import config
from gatewayd.control import overview
from gatewayd.control.barrier import wait_for_acks
from gatewayd.control.overview import iso  # noqa: F401 (re-export)
from gatewayd.control.registry import open_registry  # noqa: F401 (re-export)
from gatewayd.errors import BadInputError


class CliError(BadInputError):
    """A one-line message for stderr; the command exits with `exit_code` (2: bad input,
    nothing changed; 1: the operation ran and failed)."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not argparse's usage dump
        raise CliError(f"{self.prog}: {message}")


def load_settings(args) -> config.Settings:
    return config.load(getattr(args, "config", None) or os.environ.get("GATEWAYD_CONFIG") or None)


def parse_instant(text: str) -> float:
    try:
        return overview.parse_instant(text)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def actor() -> str:
    return os.environ.get("GATEWAYD_ACTOR") or os.environ.get("USER") or "operator"


def contract_force_help(what: str) -> str:
    return (
        f"routing: go ahead with the {what} although the positions' upstreams answer in different "
        "response shapes (docs/ROLLBACK.md R11); the differences are recorded in the change's reason"
    )


def await_change(registry, change, timeout: float) -> int:
    """Prints the change, waits at the barrier (R4) and prints every replica's answer; the
    exit code is 0 only when the change is in effect everywhere."""
    moves = overview.moves(change)
    print(f"change {change.id}: {moves} ({change.kind})", flush=True)
    report = wait_for_acks(registry, change, timeout)
    print(report.render())
    return 0 if report.ok else 1
