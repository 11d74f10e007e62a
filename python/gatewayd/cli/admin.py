"""`gatewayd admin` (serve the admin HTTP API) and `gatewayd admin-token create`."""

from __future__ import annotations

import json
import os
import secrets

from gatewayd.cli.common import CliError, load_settings
from gatewayd.config import ADMIN_ROLES, hash_key


def register(commands) -> None:
    a = commands.add_parser("admin", help="serve the admin HTTP API (granian, one worker)")
    a.add_argument("--host", help="default: [server] host")
    a.add_argument("--port", type=int, help="default: [server] admin_port")
    a.set_defaults(run=run_admin)

    t = commands.add_parser("admin-token", help="create a token for the admin API")
    t.add_argument("action", choices=["create"])
    t.add_argument("--name", required=True, help="who holds it; change records name it as token:NAME")
    t.add_argument("--role", required=True, choices=ADMIN_ROLES)
    t.set_defaults(run=run_admin_token)


def run_admin(args) -> int:
    settings = load_settings(args)
    port = args.port if args.port is not None else settings.server.admin_port
    if not 0 < port < 65536:
        raise CliError("no admin port: set [server] admin_port or pass --port (1-65535)")
    if not settings.admin_tokens:
        raise CliError("admin_tokens: none configured; create one with `gatewayd admin-token create`")
    if args.config:  # the worker process finds the file through the environment
        os.environ["GATEWAYD_CONFIG"] = os.path.abspath(args.config)
    from granian import Granian
    from granian.constants import Interfaces, Loops

    Granian(
        "gatewayd.admin.app:create_app",
        factory=True,
        address=args.host or settings.server.host,
        port=port,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        workers=1,
        log_access=False,
        respawn_failed_workers=True,
    ).serve()
    return 0


def run_admin_token(args) -> int:
    if not args.name.strip():
        raise CliError("--name: must not be empty")
    token = "gwa-" + secrets.token_urlsafe(32)
    print(f"token (shown once, give it to {args.name}): {token}")
    print("add to the config file:")
    print(f'[[admin_tokens]]\nname = {json.dumps(args.name)}\nrole = "{args.role}"\nsha256 = "{hash_key(token)}"')
    return 0
