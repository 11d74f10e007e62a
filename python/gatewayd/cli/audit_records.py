"""`gatewayd audit query|export|ship`: records of every chain, merged in time order."""

from __future__ import annotations

import datetime as dt
import heapq
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec

from gatewayd import _core
from gatewayd.audit.ship import ship
from gatewayd.cli.common import CliError, load_settings
from gatewayd.errors import ChainCorruptError


def register(verbs) -> None:
    for name, helptext in (
        ("query", "print matching records, one line each (--json: as JSON lines)"),
        ("export", "print matching records as JSON lines, byte for byte as chained"),
    ):
        q = verbs.add_parser(name, help=helptext)
        q.add_argument("--dir", help="audit directory (default: audit.dir of the config)")
        q.add_argument("--from", dest="start", help="ISO 8601 time, inclusive")
        q.add_argument("--to", dest="end", help="ISO 8601 time, exclusive")
        q.add_argument("--request-id")
        q.add_argument("--tenant")
        q.add_argument("--policy-version", type=int)
        q.add_argument("--kind", help="request | replica | change | checkpoint | retention")
        if name == "query":
            q.add_argument("--json", action="store_true", help="JSON lines instead of a summary per record")
        q.set_defaults(run=run_query, export=name == "export")

    s = verbs.add_parser("ship", help="copy new records to a JSON-lines sink, backfilling what it lacks")
    s.add_argument("--dir", help="audit directory (default: audit.dir of the config)")
    s.add_argument("--to", required=True, help="sink directory: one <replica>.jsonl per chain")
    s.add_argument("--state", required=True, help="state file: the last seq each sink acknowledged")
    s.set_defaults(run=run_ship)


class Row(msgspec.Struct):
    """The fields a query filters on or prints."""

    ts: str
    chain: str
    seq: int
    kind: str | None = None
    event: str | None = None
    request_id: str | None = None
    tenant: str | None = None
    decision: str | None = None
    status: int | None = None
    policy_version: int | None = None
    routing_version: int | None = None
    config_version: int | None = None
    change: int | None = None
    change_kind: str | None = None
    actor: str | None = None
    reason: str | None = None
    size: int | None = None


_row = msgspec.json.Decoder(Row).decode


def audit_root(args) -> str:
    """--dir, else audit.dir of the config."""
    if args.dir:
        return args.dir
    settings = load_settings(args)
    return str(settings.path(settings.audit.dir))


def run_query(args) -> int:
    root = audit_root(args)
    ts_from, ts_to = record_stamp(args.start), record_stamp(args.end)
    out = sys.stdout.buffer
    streams = [_matching(root, chain, args, ts_from, ts_to) for chain in _core.list_chains(root)]
    try:
        for _, _, _, row, payload in heapq.merge(*streams):
            if args.export or args.json:
                out.write(payload + b"\n")
            else:
                out.write(_summary(row).encode() + b"\n")
    except ChainCorruptError as exc:  # a chain broke while being read
        raise CliError(f"BROKEN: {exc}", 1) from None
    out.flush()
    return 0


def _matching(root: str, chain: str, args, ts_from: str | None, ts_to: str | None) -> Iterator[tuple]:
    """(ts, chain, seq, row, payload) of the chain's matching records, in seq order: the
    first three are unique, so merging never compares rows."""
    for payload in _core.AuditReader(root, chain, 0, ts_from, ts_to):
        row = _row(payload)
        if args.request_id is not None and row.request_id != args.request_id:
            continue
        if args.tenant is not None and row.tenant != args.tenant:
            continue
        if args.policy_version is not None and row.policy_version != args.policy_version:
            continue
        if args.kind is not None and row.kind != args.kind:
            continue
        yield row.ts, chain, row.seq, row, payload


def record_stamp(text: str | None) -> str | None:
    """An instant in the records' own `ts` form, which sorts as text; exact to the
    microsecond (a float timestamp would not be)."""
    if text is None:
        return None
    try:
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"not an ISO 8601 time: {text!r} (e.g. 2026-11-23T14:32:17Z)") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _summary(r: Row) -> str:
    head = f"{r.ts} {r.chain}#{r.seq} {r.kind or '-'}"
    if r.kind == "request":
        versions = f"{r.policy_version}/{r.routing_version}/{r.config_version}"
        return f"{head} {r.request_id} tenant={r.tenant} {r.decision} {r.status} versions(p/r/c)={versions}"
    if r.kind == "replica":
        return f"{head} {r.event}" + (f" change={r.change}" if r.change is not None else "")
    if r.kind == "change":
        return f"{head} {r.change} {r.change_kind} by {r.actor}: {r.reason}"
    if r.kind == "checkpoint":
        return f"{head} size={r.size}"
    return head


def run_ship(args) -> int:
    try:
        results = ship(audit_root(args), Path(args.to), Path(args.state))
    except ChainCorruptError as exc:
        raise CliError(f"BROKEN: {exc}", 1) from None
    code = 0
    for r in results:
        print(f"{r.chain}: shipped {r.records} record(s); the sink now ends at seq {r.through}")
        if r.behind is not None:
            print(f"{r.chain}: the sink had lost records it acknowledged (through seq {r.behind}); backfilled them")
        if r.gap is not None:
            print(f"{r.chain}: seq {r.gap[0]}..{r.gap[1]} were removed by retention before being shipped")
            code = 1
    return code
