"""Response shapes (docs/ROLLBACK.md R11): what a client's parser depends on in an
answer, never a value, and how two shapes differ.

A shape is every key path with the type of its value (`choices[].message.content:
string`; arrays collapsed to `[]`, all numbers one type), and for a stream the kinds of its
events in order (consecutive repeats collapsed) with each kind's data shape. Pure
functions of the bytes: the contract check (gatewayd.control.contract) compares the
answers of two routing positions with them, the mirror (R13) a shadow's answer with the
one served.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

import msgspec


class ShapeError(ValueError):
    """An answer that has no shape to compare: not JSON, not an object, no events."""


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
