"""The response-contract check (docs/ROLLBACK.md R11): before a routing promotion, and
before a routing rollback to a version that sends some probe to another provider or
upstream model, the same small requests (the probes: chat and messages, plain and
streamed; `[contract] probes` in the config) go to the upstreams of both positions, and
the shapes of the answers are compared. A difference refuses the change, nothing changed;
forced, the change goes ahead and its reason records the differences.

A shape is what a client's parser depends on, never a value: every key path with the type
of its value (`choices[].message.content: string`; arrays collapsed to `[]`, all numbers
one type), and for a stream the kinds of its events in order (consecutive repeats
collapsed) with each kind's data shape. Ids, texts, counts and timestamps differ between
any two answers and are no difference; a missing key, another type or another event
order is.

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
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import msgspec

from gatewayd import _core
from gatewayd.config import Settings
from gatewayd.control import documents
from gatewayd.control.documents import RuntimeConfig
from gatewayd.control.model import ChangeItem
from gatewayd.control.registry import Registry
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


class ShapeError(ValueError):
    """An answer that has no shape to compare: not JSON, not an object, no events."""


# -- shapes: pure functions of the bytes --


def shape(body: bytes) -> frozenset[str]:
    """The shape of a JSON object: `path: type` for every key, arrays collapsed to `[]`
    (`choices[].message.content: string`). Types: object, array, string, number, boolean,
    null. Raises ShapeError for a body that is not a JSON object."""
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise ShapeError("not JSON") from None
    if not isinstance(value, dict):
        raise ShapeError(f"a JSON {_type(value)}, not an object")
    out: set[str] = set()
    _walk(value, "", out)
    return frozenset(out)


def _walk(value: object, path: str, out: set[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            out.add(f"{child}: {_type(item)}")
            _walk(item, child, out)
    elif isinstance(value, list):
        child = path + "[]"
        for item in value:
            out.add(f"{child}: {_type(item)}")
            _walk(item, child, out)


def _type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class StreamShape(NamedTuple):
    """A streamed answer's shape: its event kinds in order (consecutive repeats collapsed)
    and `kind: path: type` for each kind's data. A kind is the SSE `event:` name
    (Anthropic), else what an OpenAI chunk carries (`chunk(delta.content)`,
    `chunk(finish_reason)`, `chunk(usage)`, ...), or `[DONE]`."""

    events: tuple[str, ...]
    fields: frozenset[str]


def stream_shape(raw: bytes) -> StreamShape:
    """The shape of a server-sent event stream. Raises ShapeError for a stream without
    events, or with an event whose data is neither a JSON object nor `[DONE]`."""
    events: list[str] = []
    fields: set[str] = set()
    for n, (name, data) in enumerate(_sse_events(raw), 1):
        if name is None and data.strip() == "[DONE]":
            kind, paths = "[DONE]", frozenset[str]()
        else:
            try:
                paths = shape(data.encode())
            except ShapeError as exc:
                raise ShapeError(f"event {n} ({name or 'data'}): {exc}") from None
            kind = name if name is not None else _chunk_kind(paths)
        if not events or events[-1] != kind:
            events.append(kind)
        fields.update(f"{kind}: {p}" for p in paths)
    if not events:
        raise ShapeError("a stream without events")
    return StreamShape(tuple(events), frozenset(fields))


def _sse_events(raw: bytes) -> Iterator[tuple[str | None, str]]:
    """(event name or None, data) of each event that has data, in order."""
    text = raw.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    for block in text.split("\n\n"):
        name: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        if data:
            yield name, "\n".join(data)


DELTA = "choices[].delta."


def _chunk_kind(paths: frozenset[str]) -> str:
    """What an OpenAI chunk carries, from its shape alone: the keys of its delta, a finish
    reason, usage."""
    carried = sorted(
        "delta." + path[len(DELTA) :]
        for path, _ in (p.rsplit(": ", 1) for p in paths)
        if path.startswith(DELTA) and not any(c in path[len(DELTA) :] for c in ".[")
    )
    if "choices[].finish_reason: string" in paths:
        carried.append("finish_reason")
    if "usage: object" in paths:
        carried.append("usage")
    return f"chunk({', '.join(carried)})"


# -- comparing two shapes --


class Difference(NamedTuple):
    """How the answer after a change differs from the one before, as "<after side>
    <after> <joiner> <before side> <before>": "lacks usage: object" "that" "sends",
    "sends content: array" "where" "sends string"."""

    after: str
    joiner: str
    before: str

    def line(self, probe: str, after: str, before: str) -> str:
        return f"{probe}: {after} {self.after} {self.joiner} {before} {self.before}"


def differences(before: frozenset[str] | StreamShape, after: frozenset[str] | StreamShape) -> list[Difference]:
    """How `after` differs from `before` (both `shape`s, or both `stream_shape`s). What
    lies below a path already named is not named again: a missing `usage` is one
    difference, not one per field of it."""
    if isinstance(before, StreamShape) and isinstance(after, StreamShape):
        return _stream_differences(before, after)
    if isinstance(before, StreamShape) or isinstance(after, StreamShape):
        said = {True: "an event stream", False: "one JSON object"}
        return [
            Difference(
                f"answers {said[isinstance(after, StreamShape)]}",
                "where",
                f"answers {said[not isinstance(after, StreamShape)]}",
            )
        ]
    return _field_differences(_by_path(before), _by_path(after), "")


def _by_path(fields: frozenset[str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for field in fields:
        path, _, kind = field.rpartition(": ")
        out.setdefault(path, set()).add(kind)
    return out


def _field_differences(before: dict[str, set[str]], after: dict[str, set[str]], where: str) -> list[Difference]:
    out: list[Difference] = []
    named: list[str] = []  # paths already named: what lies below them is not named again
    for path in sorted(before.keys() | after.keys()):  # a path sorts before the paths below it
        if any(path.startswith(p) and path[len(p)] in ".[" for p in named):
            continue
        had, has = before.get(path), after.get(path)
        if has is None:
            out.append(Difference(f"lacks {path}: {_types(had)}{where}", "that", "sends"))
        elif had is None:
            out.append(Difference(f"sends {path}: {_types(has)}{where}", "that", "does not"))
        elif had != has:
            out.append(Difference(f"sends {path}: {_types(has)}{where}", "where", f"sends {_types(had)}"))
        else:
            continue
        named.append(path)
    return out


def _types(kinds: set[str] | None) -> str:
    return "|".join(sorted(kinds or ()))


def _stream_differences(before: StreamShape, after: StreamShape) -> list[Difference]:
    out: list[Difference] = []
    common = set(before.events) & set(after.events)
    if _collapse(e for e in before.events if e in common) != _collapse(e for e in after.events if e in common):
        order = "sends events in the order "
        out.append(Difference(order + " > ".join(after.events), "where", "sends " + " > ".join(before.events)))
    # In the order they come in, each once.
    out += [Difference(f"lacks event {k}", "that", "sends") for k in dict.fromkeys(before.events) if k not in common]
    out += [Difference(f"sends event {k}", "that", "does not") for k in dict.fromkeys(after.events) if k not in common]
    fields_before, fields_after = _by_path(before.fields), _by_path(after.fields)
    for kind in sorted(common):
        prefix = kind + ": "
        out += _field_differences(_under(fields_before, prefix), _under(fields_after, prefix), f" in {kind}")
    return out


def _under(fields: dict[str, set[str]], prefix: str) -> dict[str, set[str]]:
    return {p[len(prefix) :]: t for p, t in fields.items() if p.startswith(prefix)}


def _collapse(kinds: Iterable[str]) -> list[str]:
    out: list[str] = []
    for kind in kinds:
        if not out or out[-1] != kind:
            out.append(kind)
    return out


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
