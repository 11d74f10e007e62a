"""`gatewayd serve` and `gatewayd mock-upstream`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gatewayd import config
from gatewayd.cli.common import load_settings, open_registry
from gatewayd.control import documents
from gatewayd.control.model import StoreLostError, StoreUnavailableError
from gatewayd.server import tracing
from gatewayd.server.connections import FILES_RESERVE, connection_cap, raise_open_file_limit


def register(commands) -> None:
    p = commands.add_parser("serve", help="run the gateway (granian, ASGI, uvloop)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int, help="worker processes; each one is a replica")
    p.set_defaults(run=run_serve)

    h = commands.add_parser("healthcheck", help="exit 0 when this host's gateway answers /healthz (container probes)")
    h.add_argument("--timeout", type=float, default=3.0)
    h.set_defaults(run=run_healthcheck)

    from gatewayd.mock.__main__ import DESCRIPTION, add_arguments

    m = commands.add_parser("mock-upstream", help="run the bundled mock LLM provider", description=DESCRIPTION)
    add_arguments(m)
    m.set_defaults(run=run_mock)


def run_serve(args) -> int:
    overrides = {
        f"{config.ENV_PREFIX}SERVER_{name.upper()}": str(value)
        for name, value in (("host", args.host), ("port", args.port), ("workers", args.workers))
        if value is not None
    }
    os.environ.update(overrides)
    settings = load_settings(args)
    # Before any worker starts: tracing configured without the SDK is one line, not a traceback per worker.
    tracing.check(settings, args.config or os.environ.get("GATEWAYD_CONFIG") or "defaults")
    if args.config:  # workers are separate processes: they find the file through the environment
        os.environ["GATEWAYD_CONFIG"] = os.path.abspath(args.config)
    bootstrap(settings)
    max_connections = _fit_connection_cap(settings.server.max_connections)
    admin = _start_admin() if settings.server.admin_port else None
    try:
        granian_server(settings, max_connections).serve()
    finally:
        if admin is not None:
            _stop(admin)
    return 0


def granian_server(
    settings: config.Settings,
    max_connections: int,
    target: str = "gatewayd.server.app:create_app",
    working_dir: Path | None = None,
):
    """The granian server `serve` runs: `target` is the app factory (the bench serves its
    measuring rods through the same settings)."""
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings

    server = settings.server
    return Granian(
        target,
        factory=True,
        working_dir=working_dir,
        address=server.host,
        port=server.port,
        interface=Interfaces.RSGI if server.interface == "rsgi" else Interfaces.ASGI,
        loop=Loops.uvloop,
        workers=server.workers,
        # HTTP/1 only: in granian's "auto" mode a connection that sends nothing never
        # gets past protocol detection, so the header timeout never starts.
        http=HTTPModes.http1,
        # Covers idle keep-alive connections too; granian closes the connection.
        http1_settings=HTTP1Settings(header_read_timeout=round(server.header_timeout_s * 1000)),
        backpressure=max_connections,  # open connections per worker
        log_access=False,
        respawn_failed_workers=True,
        workers_kill_timeout=10,
    )


def run_healthcheck(args) -> int:
    """The image's HEALTHCHECK: slim images have no curl, and the port may come from the
    TOML or a GATEWAYD_SERVER_PORT override, which only the loaded settings know."""
    import urllib.request

    server = load_settings(args).server
    host = "127.0.0.1" if server.host in ("0.0.0.0", "::", "") else server.host
    url = f"http://{f'[{host}]' if ':' in host else host}:{server.port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as r:
            return 0 if r.status == 200 else 1
    except OSError as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1


def _fit_connection_cap(configured: int) -> int:
    """The per-worker connection cap the open-file limit has room for (raised to the hard
    limit first); workers inherit the limit, so they compute the same cap."""
    limit = raise_open_file_limit()
    cap = connection_cap(configured)
    if cap < configured:
        print(
            f"warning: server.max_connections lowered from {configured} to {cap} per worker: the "
            f"open-file limit is {limit} (each connection may hold an upstream one, "
            f"{FILES_RESERVE} kept for files)",
            flush=True,
        )
    return cap


def _start_admin() -> subprocess.Popen:
    """The admin API is a process of its own: a busy or stuck gateway worker never holds up a
    rollback. It reads the same config (GATEWAYD_CONFIG and overrides pass in the environment)."""
    config_path = os.environ.get("GATEWAYD_CONFIG")
    argv = [sys.executable, "-m", "gatewayd.cli", *(["--config", config_path] if config_path else []), "admin"]
    return subprocess.Popen(argv)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def bootstrap(settings: config.Settings) -> None:
    """Before any worker starts: a store that could lose versions is refused, and an empty
    one gets the config file's documents as version 1."""
    registry = open_registry(settings)
    docs = {}
    for domain in documents.DOMAINS:
        path = getattr(settings.bootstrap, domain)
        if path:
            full = settings.path(path)
            docs[domain] = (documents.read_file(full), full.name)
    try:
        refusals, warnings = registry.durability_problems()
        for warning in warnings:
            print(f"warning: {warning}", flush=True)
        if refusals:
            raise config.ConfigError(refusals[0])
        change = registry.bootstrap(docs)
    except (StoreUnavailableError, StoreLostError) as exc:  # fail static (R16, R17)
        print(f"warning: {exc}; replicas start from their last-known-good state", flush=True)
        return
    if change:
        versions = ", ".join(f"{i.domain} v{i.new}" for i in change.items)
        print(f"bootstrapped an empty store: {versions} (change {change.id})", flush=True)


def run_mock(args) -> int:
    from gatewayd.mock.__main__ import run_from_args

    return run_from_args(args)
