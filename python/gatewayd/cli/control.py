"""Operator commands: push, activate, rollback (with the propagation barrier), history,
show, at, status, store backup and restore, and key creation."""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec

from gatewayd.cli.common import (
    CliError,
    actor,
    await_change,
    contract_force_help,
    iso,
    load_settings,
    open_registry,
    parse_instant,
)
from gatewayd.control import contract, documents, overview, restore
from gatewayd.control.model import DEFAULT_SCOPE, StoreDump, StoreUnavailableError


def register(commands) -> None:
    p = commands.add_parser("push", help="validate and store a new version (not activated)")
    p.add_argument("domain", choices=documents.DOMAINS)
    p.add_argument("file")
    p.add_argument("--reason", required=True)
    p.set_defaults(run=run_push)

    for verb, helptext in (("activate", "point a domain at a version"), ("rollback", "return to the previous version")):
        a = commands.add_parser(verb, help=helptext + "; waits for every replica")
        a.add_argument("domain", choices=documents.DOMAINS)
        if verb == "activate":
            a.add_argument("version", type=int)
        else:
            a.add_argument("--to", type=int, help="an explicit version instead of the previous one")
            a.add_argument("--force", action="store_true", help=contract_force_help("rollback"))
        a.add_argument("--scope", default=DEFAULT_SCOPE)
        a.add_argument("--reason", required=True)
        a.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for acknowledgements")
        a.set_defaults(run=run_flip, verb=verb)

    h = commands.add_parser("history", help="change records")
    h.add_argument("domain", nargs="?", choices=documents.DOMAINS)
    h.set_defaults(run=run_history)

    s = commands.add_parser("show", help="print a stored version byte for byte")
    s.add_argument("domain", choices=documents.DOMAINS)
    s.add_argument("version", type=int)
    s.set_defaults(run=run_show)

    t = commands.add_parser("at", help="what was in effect at an instant")
    t.add_argument("instant", help="ISO 8601, e.g. 2026-11-23T14:32:17Z")
    t.set_defaults(run=run_at)

    st = commands.add_parser("status", help="replicas and the versions they serve")
    st.set_defaults(run=run_status)

    b = commands.add_parser("store", help="back up the control store, or restore one that lost its data")
    b.add_argument("action", choices=["export", "restore"])
    b.add_argument("file", nargs="?", help="export: where to write the backup (default: stdout)")
    b.add_argument("--backup", help="restore: a file written by `gatewayd store export`")
    b.add_argument(
        "--last-known-good",
        action="append",
        default=[],
        metavar="CONTROL_DIR",
        help="restore: another host's control directory (copied here) to take documents from; repeatable",
    )
    b.add_argument("--reason", default="restore after the control store lost its data")
    b.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for acknowledgements")
    b.set_defaults(run=run_store)


def run_push(args) -> int:
    registry = open_registry(load_settings(args))
    data = documents.read_file(args.file)
    info = registry.push(args.domain, data, args.file.rsplit("/", 1)[-1], actor(), args.reason)
    print(
        f"pushed {info.domain} version {info.id} ({info.digest}); "
        f"not active: `gatewayd activate {info.domain} {info.id}`"
    )
    return 0


def run_flip(args) -> int:
    settings = load_settings(args)
    registry = open_registry(settings)
    if args.verb == "activate":
        change = registry.activate(args.domain, args.version, actor(), args.reason, args.scope)
    else:
        check = contract.ContractCheck(registry, settings, force=args.force)
        change = registry.rollback(args.domain, actor(), args.reason, args.scope, args.to, check=check)
        for line in check.report:
            print(line)
    return await_change(registry, change, args.timeout)


def run_history(args) -> int:
    registry = open_registry(load_settings(args))
    for change in registry.history(args.domain):
        moves = overview.moves(change)
        print(f"{change.id:>5}  {iso(change.at)}  {change.kind:<9} {moves}  by {change.actor}: {change.reason}")
    return 0


def run_show(args) -> int:
    registry = open_registry(load_settings(args))
    _, data = registry.document(args.domain, args.version)
    sys.stdout.buffer.write(data)
    return 0


def run_at(args) -> int:
    registry = open_registry(load_settings(args))
    at = parse_instant(args.instant)
    state = overview.in_effect_at(registry, at)
    if not state:
        print(f"nothing was in effect at {iso(at)} (before the first activation)")
        return 0
    for e in state:
        change, acked = e.change, e.acknowledged_by
        print(
            f"{e.domain}/{e.scope}: version {e.version}{_with_candidate(e.candidate)} "
            f"(change {change.id} at {iso(change.at)} by {change.actor}); "
            f"acknowledged by {len(acked)} replica(s) by then: {', '.join(acked) or '-'}"
        )
        if e.domain == "config":
            _print_prices(registry, e.version)
    return 0


def _print_prices(registry, version: int) -> None:
    """The prices a config version set, one line per provider and model: what requests
    were charged at then."""
    info, data = registry.document("config", version)
    prices = documents.runtime_config(documents.to_json(documents.parse(data, info.name), info.name), info.name).prices
    for provider, models in sorted(prices.providers.items()):
        for model, p in sorted(models.items()):
            cached = p.input if p.cached is None else p.cached
            print(
                f"  price {provider} {model}: input {p.input:g}, output {p.output:g}, cached {cached:g} "
                f"{prices.currency} per million tokens"
            )


def run_status(args) -> int:
    registry = open_registry(load_settings(args))
    try:
        status = overview.status(registry)
    except StoreUnavailableError as exc:
        print(f"store UNREACHABLE: {exc}. Replicas keep serving their current versions (fail static)")
        if topology := registry.store_topology():
            print(f"store: {topology}")
        return 1
    refusals, warnings = registry.durability_problems()
    for problem in refusals + warnings:
        print(f"warning: {problem}", file=sys.stderr)
    last = status.last_change.id if status.last_change else 0
    if status.store_problem:
        print(
            f"store LOST: {status.store_problem}. Replicas serve their last-known-good state; "
            "restore it: gatewayd store restore (docs/STORE.md)"
        )
    else:
        active = ", ".join(f"{p.domain}/{p.scope}={overview.describe(p.version, p.candidate)}" for p in status.pointers)
        print(f"active: {active} (change {last})")
    for key, positions in sorted(status.traffic.items()):
        said = ", ".join(
            f"{position} {t.requests} requests, {t.errors / t.requests:.1%} 5xx"
            if t.requests
            else f"{position} 0 requests"
            for position, t in sorted(positions.items())
        )
        print(f"traffic {key}: {said} (live replicas, since each started)")
    for r in status.replicas:
        versions = ", ".join(f"{k}=v{v}" for k, v in sorted(r.versions.items()))
        age = r.heartbeat_age_s
        print(f"{r.name:<24} {r.state:<8} change {r.applied_change:<5} heartbeat {age:5.1f}s ago  {versions}")
    if status.store_topology:
        print(f"store: {status.store_topology}")
    return 1 if status.store_problem else 0


def run_store(args) -> int:
    registry = open_registry(load_settings(args))
    if args.action == "export":
        payload = msgspec.json.encode(registry.export())
        if args.file:
            Path(args.file).write_bytes(payload)
        else:
            sys.stdout.buffer.write(payload)
        return 0
    backup = _read_backup(args.backup) if args.backup else None
    extra = [Path(d) for d in args.last_known_good]
    plan = restore.plan(registry, backup, extra, actor(), args.reason)
    registry.restore(plan.dump)
    dump, change = plan.dump, plan.dump.changes[-1]
    print(
        f"restored control store at {registry.where}: epoch {dump.identity.epoch}, {len(dump.versions)} "
        f"versions, {len(dump.changes)} changes ({len(plan.lost_changes)} recorded as lost)"
    )
    for domain, ids in sorted(plan.missing_versions.items()):
        print(
            f"not recovered: {domain} versions {', '.join(map(str, ids))} (in no backup or archive; "
            "their numbers stay used)"
        )
    return await_change(registry, change, args.timeout)


def _read_backup(path: str) -> StoreDump:
    try:
        return msgspec.json.decode(Path(path).read_bytes(), type=StoreDump)
    except (OSError, msgspec.DecodeError) as exc:
        raise CliError(f"--backup {path}: not a backup written by `gatewayd store export` ({exc})") from None


def _with_candidate(candidate) -> str:
    return f" + candidate {candidate.version} at {candidate.percent:g}%" if candidate else ""
