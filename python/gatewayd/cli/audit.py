"""`gatewayd audit ...`: verify the chains, query and export records."""

from __future__ import annotations

import sys

import msgspec

from gatewayd import _core
from gatewayd.cli.common import Parser, load_settings, parse_instant


def register(commands) -> None:
    audit = commands.add_parser("audit", help="verify, query and export the audit chains")
    verbs = audit.add_subparsers(dest="audit_command", required=True, parser_class=Parser)

    v = verbs.add_parser("verify", help="verify every chain of every replica")
    v.add_argument("--dir", help="audit directory (default: from the config)")
    v.set_defaults(run=run_verify)

    for name, helptext in (("query", "print matching records"), ("export", "print records as JSON lines")):
        q = verbs.add_parser(name, help=helptext)
        q.add_argument("--dir")
        q.add_argument("--from", dest="start", help="ISO 8601 time, inclusive")
        q.add_argument("--to", dest="end", help="ISO 8601 time, exclusive")
        q.add_argument("--request-id")
        q.add_argument("--tenant")
        q.add_argument("--policy-version", type=int)
        q.add_argument("--kind", help="request | replica | change")
        q.set_defaults(run=run_query)


def _root(args) -> str:
    if args.dir:
        return args.dir
    settings = load_settings(args)
    return str(settings.path(settings.audit.dir))


def run_verify(args) -> int:
    root = _root(args)
    chains = _core.list_chains(root)
    if not chains:
        print(f"no audit chains under {root}")
        return 1
    total = 0
    for chain in chains:
        try:
            report = _core.verify_chain(root, chain)
        except ValueError as exc:
            print(f"BROKEN: chain {chain}: {exc}")
            return 1
        total += report["records"]
        print(f"  {chain}: {report['records']} records in {report['segments']} segment(s), head {report['head_hash'][:16]}")
    print(f"intact: {len(chains)} chain(s), {total} records")
    return 0


def run_query(args) -> int:
    """Streams matching records of every chain as JSON lines, oldest chain order first."""
    root = _root(args)
    start = _micros(args.start)
    end = _micros(args.end)
    out = sys.stdout.buffer
    for chain in _core.list_chains(root):
        for payload in _core.AuditReader(root, chain):
            record = msgspec.json.decode(payload)
            if args.request_id and record.get("request_id") != args.request_id:
                continue
            if args.tenant and record.get("tenant") != args.tenant:
                continue
            if args.policy_version is not None and record.get("policy_version") != args.policy_version:
                continue
            if args.kind and record.get("kind") != args.kind:
                continue
            if start is not None or end is not None:
                ts = parse_instant(record["ts"]) * 1e6
                if (start is not None and ts < start) or (end is not None and ts >= end):
                    continue
            out.write(payload + b"\n")
    out.flush()
    return 0


def _micros(text: str | None) -> float | None:
    return None if text is None else parse_instant(text) * 1e6
