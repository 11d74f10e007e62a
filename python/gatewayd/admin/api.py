"""The admin endpoints. Store work (and the propagation barrier, which blocks until every
replica answered) runs in worker threads, so one slow flip never stalls the other calls."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Callable
from typing import Annotated, Literal, TypeVar
from urllib.parse import quote

import msgspec

from gatewayd.admin import exposition, views
from gatewayd.admin.http import ApiError, Call, Reply, json_reply
from gatewayd.config import Settings
from gatewayd.control import auto_revert, contract, documents, keys, overview, positions, switches
from gatewayd.control.barrier import BarrierReport, wait_for_acks
from gatewayd.control.model import DEFAULT_SCOPE, Change
from gatewayd.control.registry import Registry, open_registry
from gatewayd.errors import ContractMismatchError, GatewaydError
from gatewayd.server import metrics as replica_metrics

log = logging.getLogger("gatewayd.admin")

T = TypeVar("T")
MAX_TIMEOUT_S = 300.0
FLIP_BODY_LIMIT = 64 * 1024
# A label, not a path: its suffix says how the document parses (.yaml, .json, .toml).
PLAIN_NAME = re.compile(r"[^/\\\x00-\x1f\x7f]{1,255}")
MEDIA_TYPES = {
    ".yaml": b"application/yaml",
    ".yml": b"application/yaml",
    ".json": b"application/json",
    ".toml": b"application/toml",
}


class FlipRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    domain: str
    reason: str = ""  # required; defaulted so a missing one gets the same answer as a blank one
    scope: Annotated[str, msgspec.Meta(min_length=1)] = DEFAULT_SCOPE
    expect: int | None = None  # the version the caller saw active: 409 if the pointer has moved since
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=MAX_TIMEOUT_S)] = 10.0


class ActivateRequest(FlipRequest, kw_only=True):
    version: int


class RollbackRequest(FlipRequest, kw_only=True):
    to: int | None = None  # default: the version before the current activation
    force: bool = False  # routing: past response-contract differences, recorded in the reason (R11)


class PromoteRequest(FlipRequest, kw_only=True):
    force: bool = False  # routing: past response-contract differences, recorded in the reason (R11)


class CanaryRequest(FlipRequest, kw_only=True):
    version: int | None = None  # the candidate to start; None: the one running
    percent: float | None = None  # its share of traffic; None only with abort
    abort: bool = False  # the candidate's share to 0, held
    revert_if: list[str] = []  # automatic revert rules, as `gatewayd canary --revert-if`
    min_requests: int | None = None
    window_s: float | None = None
    allow_policy_revert: bool = False
    shadow: bool = False  # routing only: the share's requests are copied to the candidate


Flip = TypeVar("Flip", bound=FlipRequest)


class KillSwitchRequest(FlipRequest, kw_only=True):
    domain: Literal["policy"] = "policy"  # the switch points a scope's policy at deny-all
    state: Literal["on", "off"]


class KeyRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`gatewayd keys create` over HTTP."""

    tenant: str
    name: str
    models: list[str] = []
    budget_usd: float | None = None
    budget_tokens: int | None = None
    period: str = "month"
    rpm: int = 0
    reason: str = ""
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=MAX_TIMEOUT_S)] = 10.0


class RevokeRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    reason: str = ""
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=MAX_TIMEOUT_S)] = 10.0


class AtAnswer(msgspec.Struct, frozen=True):
    at: float
    in_effect: list[overview.InEffect]


class AdminApi:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._local = threading.local()  # one registry (store connection) per worker thread
        self._verifying = asyncio.Lock()
        self.barriers = exposition.BarrierCounts()

    async def status(self, call: Call) -> Reply:
        return json_reply(200, await self.run(overview.status))

    async def metrics(self, call: Call) -> Reply:
        """Prometheus text for every replica on this host, from the files the workers
        write each second: the same as the data port's /metrics, behind a token."""
        control_dir = self.settings.path(self.settings.control.dir)
        folder = replica_metrics.MetricsDir(control_dir / "metrics")
        try:
            own = await self.run(lambda r: exposition.render(r, control_dir, self.barriers))
        except (GatewaydError, OSError):  # the store is down: say so in a series, serve the rest
            own = exposition.render(None, control_dir, self.barriers)
        return Reply(200, replica_metrics.render(folder.read_all()) + own, b"text/plain; version=0.0.4")

    async def history(self, call: Call) -> Reply:
        domain = call.query.get("domain") or None
        return json_reply(200, {"changes": await self.run(lambda r: r.history(domain))})

    async def versions(self, call: Call) -> Reply:
        domain = _domain(call)
        return json_reply(200, {"versions": await self.run(lambda r: r.versions(domain))})

    async def version(self, call: Call) -> Reply:
        """The stored bytes exactly, as pushed (R1)."""
        domain, version_id = _domain(call), int(call.path["id"])
        info, data = await self.run(lambda r: r.document(domain, version_id))
        suffix = info.name[info.name.rfind(".") :].lower() if "." in info.name else ""
        headers = [
            (b"x-gatewayd-digest", info.digest.encode()),
            (b"x-gatewayd-version", str(info.id).encode()),
            (b"content-disposition", f"inline; filename*=UTF-8''{quote(info.name)}".encode()),
        ]
        return Reply(200, data, MEDIA_TYPES.get(suffix, b"text/plain; charset=utf-8"), headers)

    async def at(self, call: Call) -> Reply:
        text = call.query.get("t")
        if not text:
            raise ApiError(400, "t: required, an ISO 8601 instant such as 2026-11-23T14:32:17Z", "invalid_request")
        try:
            instant = overview.parse_instant(text)
        except ValueError as exc:
            raise ApiError(400, f"t: {exc}", "invalid_request") from None
        state = await self.run(lambda r: overview.in_effect_at(r, instant))
        return json_reply(200, AtAnswer(instant, state))

    async def push(self, call: Call) -> Reply:
        """Validates by compiling and stores; a bad document is refused and nothing is stored."""
        domain = _domain(call)
        name = call.param("name", b"x-gatewayd-name") or f"{domain}.yaml"
        if not PLAIN_NAME.fullmatch(name):
            raise ApiError(400, "name: must be a file name without slashes, e.g. policy-v2.yaml", "invalid_request")
        reason = _reason(call.param("reason", b"x-gatewayd-reason"), "?reason= or the x-gatewayd-reason header")
        data = await call.body(self.settings.server.max_body_bytes)
        info = await self.run(lambda r: r.push(domain, data, name, call.actor, reason))
        log.info("%s pushed %s version %d (%s): %s", call.actor, domain, info.id, info.digest, reason)
        location = f"/v1/versions/{domain}/{info.id}".encode()
        return json_reply(201, info, [(b"location", location)])

    async def activate(self, call: Call) -> Reply:
        req = await _flip_request(call, ActivateRequest)
        return await self._flip(
            lambda r: r.activate(req.domain, req.version, call.actor, req.reason, req.scope, req.expect),
            req.timeout_s,
        )

    async def rollback(self, call: Call) -> Reply:
        req = await _flip_request(call, RollbackRequest)

        def flip(r: Registry) -> Change:
            check = contract.ContractCheck(r, self.settings, force=req.force)
            return r.rollback(req.domain, call.actor, req.reason, req.scope, req.to, req.expect, check=check)

        return await self._flip(flip, req.timeout_s)

    async def canary(self, call: Call) -> Reply:
        req = await _flip_request(call, CanaryRequest)
        if req.abort == (req.percent is not None):
            raise ApiError(400, "request body: give exactly one of percent and abort", "invalid_request")
        if req.abort:
            if req.version is not None:
                raise ApiError(400, "request body: abort takes no version", "invalid_request")
            return await self._flip(
                lambda r: positions.abort(r, req.domain, req.scope, call.actor, req.reason), req.timeout_s
            )
        assert req.percent is not None
        percent = req.percent
        revert = auto_revert.rules_for(
            req.domain, req.revert_if, req.min_requests, req.window_s, req.allow_policy_revert
        )
        return await self._flip(
            lambda r: positions.canary(
                r, req.domain, req.scope, req.version, percent, call.actor, req.reason, revert, req.shadow
            ),
            req.timeout_s,
        )

    async def promote(self, call: Call) -> Reply:
        req = await _flip_request(call, PromoteRequest)

        def flip(r: Registry) -> Change:
            check = contract.ContractCheck(r, self.settings, force=req.force)
            return positions.promote(r, req.domain, req.scope, call.actor, req.reason, check=check)

        return await self._flip(flip, req.timeout_s)

    async def killswitch(self, call: Call) -> Reply:
        """On: the scope's policy points at the built-in deny-all version; off: back to what it had."""
        req = await _flip_request(call, KillSwitchRequest)
        engage = switches.kill if req.state == "on" else switches.unkill
        return await self._flip(lambda r: engage(r, req.scope, call.actor, req.reason), req.timeout_s)

    async def diff(self, call: Call) -> Reply:
        """A version's document beside the one numbered before it in its domain."""
        domain, version_id = _domain(call), int(call.path["id"])
        return json_reply(200, await self.run(lambda r: views.diff(r, domain, version_id)))

    async def audit(self, call: Call) -> Reply:
        """Every chain's latest signed checkpoint, and what the last verification found."""
        return json_reply(200, await asyncio.to_thread(views.audit_state, self.settings))

    async def audit_verify(self, call: Call) -> Reply:
        """Verifies the whole trail now (one run at a time; callers meanwhile wait for it)."""
        async with self._verifying:
            answer = await asyncio.to_thread(views.verify_now, self.settings, self._in_thread)
        log.info("%s verified the audit trail: %s", call.actor, "intact" if answer.intact else "NOT INTACT")
        return json_reply(200, answer)

    async def keys(self, call: Call) -> Reply:
        """Run-time keys (revoked ones too) with what each spent in its budget's period."""
        tenant = call.query.get("tenant") or None

        def listing(r: Registry) -> list[dict]:
            found = [k for k in r.runtime_keys() if tenant is None or k.tenant == tenant]
            spent = r.key_spend(found)
            return [{**msgspec.to_builtins(k), "spent": spent.get(k.name)} for k in found]

        return json_reply(200, {"keys": await self.run(listing)})

    async def create_key(self, call: Call) -> Reply:
        """Stores a key, then waits at the barrier; the body has the key (shown this once)
        and the report: 201 in effect everywhere, 502 / 504 as for a flip."""
        req = await _decode_body(call, KeyRequest)
        budget = keys.make_budget(req.budget_usd, req.budget_tokens, req.period)
        models = keys.parse_models(",".join(req.models))

        def create(r: Registry) -> tuple[str, BarrierReport]:
            secret, key, change = keys.create_key(
                r,
                tenant=req.tenant,
                name=req.name,
                actor=call.actor,
                models=models,
                rpm=req.rpm,
                budget=budget,
                reason=req.reason,
            )
            log.info("%s created key %s for tenant %s (change %d)", call.actor, key.name, key.tenant, change.id)
            return secret, wait_for_acks(r, change, req.timeout_s)

        secret, report = await self.run(create)
        status = 201 if report.ok else 502 if report.refused else 504
        return json_reply(status, {"key": secret, "name": req.name, "barrier": report.outcome()})

    async def revoke_key(self, call: Call) -> Reply:
        """Revokes a key; 200 once no replica accepts it any more (502 / 504 as for a flip)."""
        req = await _decode_body(call, RevokeRequest)
        reason = _reason(req.reason, '"reason" in the JSON body')
        name = call.path["name"]

        def revoke(r: Registry) -> BarrierReport:
            key, change = keys.revoke_key(r, name, actor=call.actor, reason=reason)
            log.info("%s revoked key %s (change %d): %s", call.actor, key.name, change.id, reason)
            return wait_for_acks(r, change, req.timeout_s)

        report = await self.run(revoke)
        status = 200 if report.ok else 502 if report.refused else 504
        return json_reply(status, report.outcome())

    async def _flip(self, flip: Callable[[Registry], Change], timeout_s: float) -> Reply:
        """The flip, then the barrier (R4). 200 in effect; 502 a replica refused; 504 one did
        not answer in time. In all three the change is recorded and the body is the report.
        A routing change refused by the response-contract check (R11) is 409
        `contract_mismatch`, its differences in the message, nothing changed."""

        def run(registry: Registry) -> BarrierReport:
            change = flip(registry)
            log.info("%s made change %d (%s): %s", change.actor, change.id, change.kind, change.reason)
            return wait_for_acks(registry, change, timeout_s)

        try:
            report = await self.run(run)
        except ContractMismatchError as exc:
            raise ApiError(409, f"{exc}: {'; '.join(exc.differences)}", "contract_mismatch") from None
        self.barriers.note(report)
        status = 200 if report.ok else 502 if report.refused else 504
        return json_reply(status, report.outcome())

    async def run(self, work: Callable[[Registry], T]) -> T:
        """Store work in a worker thread, with that thread's own registry."""
        return await asyncio.to_thread(self._in_thread, work)

    def _in_thread(self, work: Callable[[Registry], T]) -> T:
        """A store connection is not shared between threads: SQLite transactions are per connection."""
        registry = getattr(self._local, "registry", None)
        if registry is None:
            registry = self._local.registry = open_registry(self.settings)
        return work(registry)


async def _flip_request(call: Call, kind: type[Flip]) -> Flip:
    req = await _decode_body(call, kind)
    _reason(req.reason, '"reason" in the JSON body')
    return req


async def _decode_body(call: Call, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(await call.body(FLIP_BODY_LIMIT), type=kind)
    except msgspec.DecodeError as exc:  # ValidationError included: its message names the field
        raise ApiError(400, f"request body: {exc}", "invalid_request") from None


def _reason(text: str, where: str) -> str:
    if not text.strip():
        raise ApiError(400, f"reason: required ({where}): every change record says why", "missing_reason")
    return text


def _domain(call: Call) -> str:
    domain = call.path["domain"]
    if domain not in documents.DOMAINS:
        raise ApiError(404, f"unknown domain {domain!r}: expected one of {', '.join(documents.DOMAINS)}", "not_found")
    return domain
