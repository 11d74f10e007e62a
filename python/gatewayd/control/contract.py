"""The response-contract check (docs/ROLLBACK.md R11): before a routing promotion, and
before a routing rollback to a version that sends some probe to another provider or
upstream model, the same small requests (the probes: chat and messages, plain and
streamed; `[contract] probes` in the config) go to the upstreams of both positions, and
the shapes of the answers are compared. A difference refuses the change, nothing changed;
forced, the change goes ahead and its reason records the differences.

A shape (gatewayd.control.shapes) is what a client's parser depends on, never a value:
ids, texts, counts and timestamps differ between any two answers and are no difference; a
missing key, another type or another event order is.

Where a probe goes is decided by the gateway's own admission (`_core.Engine.admit`, on a
throwaway engine with an allow-all policy): the provider, the upstream model and the exact
bytes a replica would send. The probes are sent as the pipeline sends requests, with the
provider's URL, headers and key (`ProviderEndpoint`, `UpstreamClient`), from the process
that makes the change (the CLI, or the admin API) with its config's provider keys.

The pointer is read before the probes and flipped by compare-and-set after them
(`FlipCheck` in `gatewayd.control.registry`), so the change made is the change checked.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from typing import NamedTuple

import msgspec

from gatewayd import _core
from gatewayd.config import Settings
from gatewayd.control import documents
from gatewayd.control.documents import RuntimeConfig
from gatewayd.control.model import ChangeItem
from gatewayd.control.registry import Registry
from gatewayd.control.shapes import ShapeError, StreamShape, differences, shape, stream_shape
from gatewayd.control.snapshot import Served
from gatewayd.errors import ContractMismatchError
from gatewayd.translate import Untranslatable, translation_for
from gatewayd.upstream import UpstreamClient, UpstreamError
from gatewayd.upstream.providers import ProviderEndpoint

CHECKED_DOMAIN = "routing"
PROMPT = "Reply with the word OK."
MAX_TOKENS = 16
MAX_ANSWER_BYTES = 1024 * 1024
ERROR_EXCERPT = 200  # characters of a failed probe's answer quoted in its line
ALLOW_ALL = b'{"default":"allow"}'
SSE = b"text/event-stream"


# -- the probes --


class Probe(NamedTuple):
    name: str  # as `[contract] probes` names it
    api: str
    stream: bool


PROBES = {
    p.name: p
    for p in (
        Probe("chat", "chat", False),
        Probe("chat-stream", "chat", True),
        Probe("messages", "messages", False),
        Probe("messages-stream", "messages", True),
    )
}


def probe_request(probe: Probe, model: str) -> bytes:
    """A tiny request of the probe's API for `model`, as a client would send it."""
    body: dict[str, object] = {
        "model": model,
        "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": PROMPT}],
    }
    if probe.stream:
        body["stream"] = True
        if probe.api == "chat":
            body["stream_options"] = {"include_usage": True}
    return msgspec.json.encode(body)


class Target(NamedTuple):
    """Where one routing version sends one probe: exactly what a replica would send."""

    provider: str
    model: str  # the upstream model
    body: bytes
    stream: bool


class Position(NamedTuple):
    role: str  # current | candidate | rollback target
    version: int
    routing: _core.Routing


class Planned(NamedTuple):
    probe: Probe
    model: str
    before: Target
    after: Target | None  # None: the version the change moves to does not route the model


class Resolver:
    """Routing decisions made by the gateway's own admission, on a throwaway engine (its
    audit chain in a temporary directory) with an allow-all policy: there is no other
    binding of the Rust routing that resolves a model."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="gatewayd-contract-")
        self._engine: _core.Engine | None = _core.Engine(16, 1 << 20, self._dir.name, "contract", 1 << 20)
        self._policy = _core.Policy(ALLOW_ALL, 0)

    def __enter__(self) -> Resolver:
        return self

    def __exit__(self, *exc: object) -> None:
        self._engine = None
        self._dir.cleanup()

    def resolve(self, routing: _core.Routing, probe: Probe, model: str) -> Target | None:
        assert self._engine is not None
        versions = _core.Versions(0, routing.version, 0)
        served = Served(self._policy, None, routing, RuntimeConfig(), versions, 0)
        adm = self._engine.admit(
            served=served,
            api=probe.api,
            tenant="contract-check",
            request_id=secrets.token_hex(16),
            headers=[],
            body=probe_request(probe, model),
            cache=_core.CacheMode.OFF,
            vary="",
        )
        if adm.verdict != "allow" or adm.provider is None or adm.upstream_model is None or adm.body is None:
            return None
        return Target(adm.provider, adm.upstream_model, adm.body, adm.stream)


def plan(before: Position, after: Position, probes: tuple[str, ...]) -> tuple[list[Planned], list[str]]:
    """What each probe sends, under each position, and the probes that find nothing to send
    (no model of either `models` list is routed for their API by the current version:
    nobody can be relying on that API's answers). Each probe's model is the first, of the
    current version's `models` and then the other's, that both versions route for its API,
    else the first the current one routes."""
    models = list(dict.fromkeys([*before.routing.models, *after.routing.models]))
    planned: list[Planned] = []
    skipped: list[str] = []
    with Resolver() as resolver:
        for name in probes:
            probe = PROBES[name]
            routed = [
                (m, resolver.resolve(before.routing, probe, m), resolver.resolve(after.routing, probe, m))
                for m in models
            ]
            both = [(m, b, a) for m, b, a in routed if b is not None and a is not None]
            ours = [(m, b, a) for m, b, a in routed if b is not None]
            chosen = (both or ours or [None])[0]
            if chosen is None:
                skipped.append(name)
                continue
            model, target_before, target_after = chosen
            assert target_before is not None
            planned.append(Planned(probe, model, target_before, target_after))
    return planned, skipped


def probes_for(scope: str, probes: tuple[str, ...]) -> tuple[str, ...]:
    """The configured probes a scope's requests could be: a `route:API` scope serves one API."""
    api = scope.removeprefix("route:") if scope.startswith("route:") else None
    return tuple(p for p in probes if api is None or PROBES[p].api == api)


def moves_upstream(planned: list[Planned]) -> bool:
    """Whether any probe goes to another (provider, upstream model) after the change."""
    return any(p.after is None or p.after[:2] != p.before[:2] for p in planned)


def _side(position: Position, target: Target) -> str:
    return f"{position.role} v{position.version} (provider {target.provider}, model {target.model})"


class ProbeFailed(Exception):
    """A probe that got no answer with a shape: the message says what it got instead."""


async def _answer(
    client: UpstreamClient, endpoint: ProviderEndpoint, api: str, target: Target, timeout: float
) -> frozenset[str] | StreamShape:
    """The shape of the answer as the caller gets it: translated both ways, as the pipeline
    does, when the provider speaks the other protocol (issue 14)."""
    translation = translation_for(api, endpoint.kind)
    body = target.body
    try:
        if translation is not None:
            body, api = translation.request(body), translation.upstream_api
        async with asyncio.timeout(timeout):
            response = await client.send(
                "POST", endpoint.url(api), endpoint.headers([]), body, timeout, stream=target.stream
            )
            try:
                content_type = next((v for k, v in response.headers if k == b"content-type"), b"")
                if target.stream and response.status == 200 and content_type.startswith(SSE):
                    parts, size = [], 0
                    translator = translation.stream() if translation is not None else None
                    async for chunk in response.chunks():
                        parts.append(translator.feed(chunk) if translator is not None else chunk)
                        size += len(chunk)
                        if size > MAX_ANSWER_BYTES:
                            raise ProbeFailed(f"answered more than {MAX_ANSWER_BYTES} bytes")
                    payload = b"".join(parts)
                else:
                    payload = await response.read()
            finally:
                await response.aclose()
    except TimeoutError:
        raise ProbeFailed(f"no complete answer within {timeout:g}s") from None
    except (UpstreamError, _core.StreamTranslationError) as exc:
        raise ProbeFailed(str(exc)) from None
    except Untranslatable as exc:
        raise ProbeFailed(f"cannot be translated for it: {exc}") from None
    if response.status != 200:
        raise ProbeFailed(f"answered {response.status}: {_excerpt(payload, endpoint)}")
    try:
        if target.stream:
            if not content_type.startswith(SSE):
                raise ShapeError(f"{content_type.decode(errors='replace') or 'no content-type'}, not an event stream")
            return stream_shape(payload)
        return shape(payload if translation is None else translation.response(payload))
    except (ShapeError, msgspec.DecodeError) as exc:
        raise ProbeFailed(f"answered {exc}") from None


def _excerpt(payload: bytes, endpoint: ProviderEndpoint) -> str:
    """The start of a failed answer, on one line, without the provider's credentials."""
    text = payload.decode(errors="replace")
    for secret in endpoint.secrets:
        text = text.replace(secret, "[provider credential]")
    return " ".join(text.split())[:ERROR_EXCERPT] or "(empty body)"


async def _compare_all(
    settings: Settings, before: Position, after: Position, planned: list[Planned], timeout: float
) -> list[str]:
    endpoints = {name: ProviderEndpoint(name, p) for name, p in settings.providers.items()}
    client = UpstreamClient(max_connections=8, connect_timeout=min(5.0, timeout))
    await client.start()
    try:

        async def one(p: Planned) -> list[str]:
            assert p.after is not None
            sides = ((before, p.before), (after, p.after))
            answers = await asyncio.gather(
                *(_answer(client, endpoints[t.provider], p.probe.api, t, timeout) for _, t in sides),
                return_exceptions=True,
            )
            failed = [
                f"{p.probe.name}: {_side(pos, t)} failed: {a}"
                for (pos, t), a in zip(sides, answers, strict=True)
                if isinstance(a, ProbeFailed)
            ]
            for a in answers:
                if isinstance(a, BaseException) and not isinstance(a, ProbeFailed):
                    raise a
            if failed:
                return failed
            shape_before, shape_after = answers
            assert not isinstance(shape_before, BaseException) and not isinstance(shape_after, BaseException)
            found = differences(shape_before, shape_after)
            return [d.line(p.probe.name, _side(after, p.after), _side(before, p.before)) for d in found]

        found = await asyncio.gather(*(one(p) for p in planned if p.after is not None))
    finally:
        await client.close()
    return [line for lines in found for line in lines]


def compare(settings: Settings, before: Position, after: Position, planned: list[Planned]) -> list[str]:
    """The difference lines of the planned probes: each sent to both positions' upstreams
    (from this process, with the config's provider keys), and each answer's shape compared."""
    lines = [
        f"{p.probe.name}: {after.role} v{after.version} does not route model {p.model} for the {p.probe.api} API, "
        f"which {_side(before, p.before)} serves"
        for p in planned
        if p.after is None
    ]
    if any(p.after is not None for p in planned):
        lines += asyncio.run(_compare_all(settings, before, after, planned, settings.contract.timeout_s))
    return lines


# -- the check itself --


class ContractCheck:
    """The FlipCheck of routing promotions and rollbacks (`positions.promote(...,
    check=...)`, `Registry.rollback(..., check=...)`). Other domains pass through. A
    promotion is always probed; a rollback only when some probe goes to another provider
    or upstream model after it. `report` says what the last check did, for the CLI."""

    def __init__(self, registry: Registry, settings: Settings, force: bool = False):
        self.registry = registry
        self.settings = settings
        self.force = force
        self.report: list[str] = []

    def __call__(self, item: ChangeItem, kind: str, reason: str) -> str:
        self.report = []
        if item.domain != CHECKED_DOMAIN or item.prev is None or item.new is None or item.prev == item.new:
            return reason
        before = Position("current", item.prev, self._compile(item.prev))
        after = Position("candidate" if kind == "promote" else "rollback target", item.new, self._compile(item.new))
        where = f"{item.domain}/{item.scope}"
        probes = probes_for(item.scope, self.settings.contract.probes)
        if not probes:
            self.report = [f"response contract: not checked: no configured probe is of {where}'s API"]
            return reason
        planned, skipped = plan(before, after, probes)
        unprobed = (
            f"; {', '.join(skipped)} not probed: v{before.version} routes no listed model for it" if skipped else ""
        )
        if kind != "promote" and not moves_upstream(planned):
            self.report = [
                f"response contract: not checked: v{after.version} sends every probe to the same provider "
                f"and upstream model as v{before.version}{unprobed}"
            ]
            return reason
        found = compare(self.settings, before, after, planned)
        probed = ", ".join(p.probe.name for p in planned) or "none"
        if not found:
            self.report = [f"response contract: v{after.version} answers like v{before.version} ({probed}){unprobed}"]
            return reason
        between = f"{before.role} v{before.version} and {after.role} v{after.version}"
        if not self.force:
            raise ContractMismatchError(
                f"{where}: the response contract differs between {between}: {_count(found)}; "
                'nothing changed (--force, or "force": true, goes ahead and records them)',
                found,
            )
        self.report = [f"response contract: forced past {_count(found)} between {between}:", *found]
        return f"{reason} [forced past {_count(found, 'response-contract difference')}: {'; '.join(found)}]"

    def _compile(self, version: int) -> _core.Routing:
        info, data = self.registry.document(CHECKED_DOMAIN, version)
        compiled = documents.compile_document(CHECKED_DOMAIN, data, info.name, self.registry.providers, version)
        assert isinstance(compiled, _core.Routing)
        return compiled


def _count(found: list[str], noun: str = "difference") -> str:
    return f"{len(found)} {noun}{'s' if len(found) != 1 else ''}"
