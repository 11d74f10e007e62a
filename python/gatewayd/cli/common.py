"""What the subcommands share: settings, the registry, time parsing and printing."""

from __future__ import annotations

import argparse
import datetime as dt
import os

from gatewayd import config
from gatewayd.control.registry import Registry
from gatewayd.control.stores import open_store


class CliError(Exception):
    """A one-line message for stderr; the command exits with `code`."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage dump
        raise CliError(f"{self.prog}: {message}")


def load_settings(args) -> config.Settings:
    return config.load(getattr(args, "config", None) or os.environ.get("GATEWAYD_CONFIG") or None)


def open_registry(settings: config.Settings) -> Registry:
    providers = [(name, p.kind) for name, p in settings.providers.items()]
    return Registry(open_store(settings), providers)


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_instant(text: str) -> float:
    """RFC 3339 / ISO 8601; a time without a zone is UTC."""
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"not an ISO 8601 time: {text!r} (e.g. 2026-11-23T14:32:17Z)") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.timestamp()


def actor() -> str:
    return os.environ.get("GATEWAYD_ACTOR") or os.environ.get("USER") or "operator"
