"""`gatewayd keys create|list|revoke`: caller keys at run time, in the control store.

`create --name` stores a key and waits until every replica serves it; `revoke` waits until
no replica accepts it any more (the barrier of a flip, R4). `create` without `--name`
prints a static key and the TOML lines for it instead, as before run-time keys.
"""

from __future__ import annotations

import json
import secrets

import msgspec

from gatewayd.cli.common import CliError, Parser, actor, await_change, load_settings, open_registry
from gatewayd.config import hash_key
from gatewayd.control import keys
from gatewayd.control.keys import PERIODS


def register(commands) -> None:
    k = commands.add_parser("keys", help="create, list and revoke caller keys (run-time ones in the control store)")
    verbs = k.add_subparsers(dest="verb", required=True, parser_class=Parser)
    c = verbs.add_parser("create", help="create a key; prints it once")
    c.add_argument("--tenant", required=True)
    c.add_argument("--name", help="a run-time key's name (unique); without it, a static key for the TOML")
    c.add_argument("--models", help="model globs the key may use, comma-separated (e.g. 'gpt-4o*,mock-*')")
    c.add_argument("--budget-usd", type=float, help="spending cap per period, in the prices' currency")
    c.add_argument("--budget-tokens", type=int, help="token cap (prompt + completion) per period")
    c.add_argument("--period", choices=PERIODS, default="month", help="budget period, UTC (default: month)")
    c.add_argument("--rpm", type=int, default=0, help="requests per minute for this key (0: none of its own)")
    c.add_argument("--reason", default="", help="recorded on the change (default: what was created)")
    c.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for acknowledgements")
    c.set_defaults(run=run_create)

    li = verbs.add_parser("list", help="run-time keys: tenant, limits, spend so far, state")
    li.add_argument("--tenant")
    li.add_argument("--json", action="store_true")
    li.set_defaults(run=run_list)

    r = verbs.add_parser("revoke", help="revoke a run-time key; returns when no replica accepts it")
    r.add_argument("name")
    r.add_argument("--reason", required=True)
    r.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for acknowledgements")
    r.set_defaults(run=run_revoke)


def run_create(args) -> int:
    if args.name is None:
        if args.models or args.budget_usd is not None or args.budget_tokens is not None or args.rpm:
            raise CliError("--models, --budget-usd, --budget-tokens and --rpm are for run-time keys: add --name")
        static = "gw-" + secrets.token_urlsafe(24)
        print(f"key (shown once, give it to the caller): {static}")
        print("add to the config file:")
        print(f'[[keys]]\ntenant = "{args.tenant}"\nsha256 = "{hash_key(static)}"')
        return 0
    budget = keys.make_budget(args.budget_usd, args.budget_tokens, args.period)
    registry = open_registry(load_settings(args))
    secret, key, change = keys.create_key(
        registry,
        tenant=args.tenant,
        name=args.name,
        actor=actor(),
        models=keys.parse_models(args.models),
        rpm=args.rpm,
        budget=budget,
        reason=args.reason,
    )
    print(f"key {key.name} for tenant {key.tenant} (shown once): {secret}", flush=True)
    return await_change(registry, change, args.timeout)


def run_list(args) -> int:
    registry = open_registry(load_settings(args))
    found = [k for k in registry.runtime_keys() if args.tenant is None or k.tenant == args.tenant]
    spent = registry.key_spend(found)
    if args.json:
        rows = [{**msgspec.to_builtins(k), "spent": spent.get(k.name)} for k in found]
        print(json.dumps(rows))
        return 0
    for k in found:
        limits = [f"models {','.join(k.models)}"] if k.models else []
        if k.rpm:
            limits.append(f"{k.rpm} rpm")
        used = spent.get(k.name, 0.0)
        if k.budget:
            unit = "money" if k.budget.unit == "usd" else "tokens"
            limits.append(f"budget {k.budget.amount:g} {unit}/{k.budget.period}, spent {used:g}")
        else:
            limits.append(f"spent {used:g} this month")
        state = f"REVOKED by {k.revoked_by}: {k.revoked_reason}" if k.revoked else "active"
        print(f"{k.name:<20} tenant={k.tenant:<12} {'; '.join(limits)}  [{state}]")
    if not found:
        print("no run-time keys" + (f" for tenant {args.tenant}" if args.tenant else ""))
    return 0


def run_revoke(args) -> int:
    registry = open_registry(load_settings(args))
    key, change = keys.revoke_key(registry, args.name, actor=actor(), reason=args.reason)
    print(f"key {key.name} of tenant {key.tenant} revoked; waiting until no replica accepts it", flush=True)
    return await_change(registry, change, args.timeout)
