"""`gatewayd usage`: tokens and spend by tenant, key or model, read from the audit chains.

Every record is read through the chain reader, which verifies each link as it reads (a
broken chain stops the report: a bill is only as good as the chain it comes from). The
figures are the records' own (`prompt_tokens`, `completion_tokens`, `cost`, priced when the
record was written), so they total what `/metrics` counted.
"""

from __future__ import annotations

import csv
import sys

import msgspec

from gatewayd import _core
from gatewayd.cli.audit_records import audit_root, record_stamp
from gatewayd.cli.common import CliError
from gatewayd.errors import ChainCorruptError

GROUPS = ("tenant", "key", "model", "provider")
COLUMNS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost",
    "saved_prompt_tokens",
    "saved_completion_tokens",
    "saved_cost",
)


def register(commands) -> None:
    u = commands.add_parser("usage", help="tokens and spend by tenant, key or model, from the verified audit chains")
    u.add_argument("--from", dest="start", help="ISO 8601 time, inclusive")
    u.add_argument("--to", dest="end", help="ISO 8601 time, exclusive")
    u.add_argument("--by", choices=GROUPS, default="tenant")
    u.add_argument("--tenant", help="only this tenant's requests")
    u.add_argument("--dir", help="audit directory (default: audit.dir of the config)")
    shape = u.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="one JSON object: rows, totals, records verified")
    shape.add_argument("--csv", action="store_true", help="CSV with a header line")
    u.set_defaults(run=run_usage)


class UsageRecord(msgspec.Struct):
    """The fields of a request record the report reads."""

    kind: str | None = None
    tenant: str = ""
    key: str | None = None
    model: str = ""
    upstream: str | None = None
    upstream_model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost: float | None = None
    saved_cost: float | None = None
    currency: str = ""


_decode = msgspec.json.Decoder(UsageRecord).decode


class Report(msgspec.Struct):
    by: str
    rows: list[dict]
    totals: list[dict]  # one per currency
    records_read: int
    chains: int


def usage_report(root: str, by: str, ts_from: str | None, ts_to: str | None, tenant: str | None = None) -> Report:
    """Sums the request records with usage between the two instants, by `by` and currency."""
    sums: dict[tuple[str, str], list[float]] = {}
    read = 0
    chains = _core.list_chains(root)
    for chain in chains:
        for payload in _core.AuditReader(root, chain, 0, ts_from, ts_to):
            read += 1
            r = _decode(payload)
            if r.prompt_tokens is None or r.kind != "request":
                continue
            if tenant is not None and r.tenant != tenant:
                continue
            group = _group(r, by)
            row = sums.get((group, r.currency))
            if row is None:
                row = sums[(group, r.currency)] = [0] * len(COLUMNS)
            row[0] += 1
            if r.saved_cost is not None:  # a cache hit: what it saved
                row[5] += r.prompt_tokens
                row[6] += r.completion_tokens
                row[7] += r.saved_cost
            else:
                row[1] += r.prompt_tokens
                row[2] += r.completion_tokens
                row[3] += r.cached_tokens
                row[4] += r.cost or 0.0
    rows = [_row(by, group, currency, values) for (group, currency), values in sorted(sums.items())]
    totals: dict[str, list[float]] = {}
    for (_, currency), values in sums.items():
        total = totals.setdefault(currency, [0] * len(COLUMNS))
        for i, v in enumerate(values):
            total[i] += v
    return Report(by, rows, [_row(by, "total", c, v) for c, v in sorted(totals.items())], read, len(chains))


def _group(r: UsageRecord, by: str) -> str:
    if by == "tenant":
        return r.tenant
    if by == "key":
        return r.key or "-"
    if by == "provider":
        return r.upstream or "-"
    return r.upstream_model or r.model


def _row(by: str, group: str, currency: str, values: list[float]) -> dict:
    row: dict = {by: group, "currency": currency}
    for name, value in zip(COLUMNS, values, strict=True):
        row[name] = round(value, 9) if "cost" in name else int(value)
    return row


def run_usage(args) -> int:
    root = audit_root(args)
    try:
        report = usage_report(root, args.by, record_stamp(args.start), record_stamp(args.end), args.tenant)
    except ChainCorruptError as exc:
        raise CliError(f"BROKEN: {exc}", 1) from None
    out = sys.stdout
    if args.json:
        out.write(msgspec.json.encode(report).decode() + "\n")
        return 0
    fields = [report.by, "currency", *COLUMNS]
    if args.csv:
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(report.rows + report.totals)
        return 0
    widths = {f: max([len(f), *(len(_cell(r[f])) for r in report.rows + report.totals)]) for f in fields}
    out.write("  ".join(f.ljust(widths[f]) for f in fields).rstrip() + "\n")
    for row in report.rows + report.totals:
        out.write("  ".join(_cell(row[f]).ljust(widths[f]) for f in fields).rstrip() + "\n")
    out.write(f"{report.records_read} records read from {report.chains} chain(s), every link verified\n")
    return 0


def _cell(value) -> str:
    return f"{value:.6f}" if isinstance(value, float) else str(value)
