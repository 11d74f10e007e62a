"""A seeded fuzzer for a real gateway: mutated request bodies and raw HTTP framings.

Every case is the exact bytes a client writes on one TCP connection (so invalid UTF-8,
NUL bytes, duplicate headers and broken framing reach the server as written), built from
`random.Random(seed)` only: the same seed gives the same cases. `Fuzzer.run` sends a case,
reads what comes back until the server closes, and checks the invariants of issue 9:

- no 5xx for a client's mistake (every case here is one, or a valid request);
- every error the client gets has the API's error shape (OpenAI's, Anthropic's on
  `/v1/messages`), never an empty or foreign body;
- no worker restart: the gateway's worker processes stay the same pids;
- for every body the gateway accepted, what the provider received reads the same to a
  first-wins and a last-wins JSON parser, and no prompt text in it holds what the policy
  blocks (card numbers) or redacts (emails);
- the case's own rule where the RFC or the issue names one (`expect`: e.g. a 404 for an
  encoded slash, a 400 for `Transfer-Encoding: chunked, chunked`), at most the responses
  the client asked for (nothing smuggled answered), and an answer to every complete request.

Known server gap (issue 9, open): granian rejects some framings itself, before the ASGI app
sees them, with an empty or plain-text body (400, 414, 431, and `500 Internal server error`
for a malformed or cut-short chunked body). A response is such a server-level rejection
only when its body is not JSON and its status is one of `SERVER_REJECTIONS`; for those the
error-shape, no-5xx and `expect` rules are not enforced but counted (`Tally.gaps`), unless
`expect` allows no error at all (a valid request rejected stays a failure). Any
JSON body is our app's and is held to every invariant. A client that half-closes is gone
(commit 03f777d): no answer is owed, but no JSON 5xx and no worker restart.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
from dataclasses import dataclass, field

from support.views import Pairs, clear_journal, journal, prompt_texts, reading

CARD = "card 4111 1111 1111 1111"
EMAIL = "mail a.b@example.com now"
TEXTS = [CARD, EMAIL, "hi", "hello there", "what is 2+2", "Größe — ok ✓", "swordfish", "tab\tnew\nline", "😀"]
CARD_RE = re.compile(r"\b(?:\d[ -]?){13,16}\b")
EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")

PATHS = {"chat": "/v1/chat/completions", "messages": "/v1/messages", "embeddings": "/v1/embeddings"}
LLM_PATHS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/messages": "messages",
}


class Raw(bytes):
    """JSON text written out as is (a huge number, a broken string, deep nesting)."""


@dataclass
class Case:
    family: str
    label: str  # what was done, for the report
    data: bytes  # the bytes written on the connection
    requests: int = 1  # the requests the client means to make
    half_close: bool = False  # shut down our sending side after writing
    needs_answer: bool = True  # a complete request (or a mistake the server sees at once)
    expect: frozenset[int] | None = None  # the right statuses, when a rule names them
    must_close: bool = False  # RFC 9112: the server closes after answering (CL and TE both)
    targets: list[tuple[str, str]] | None = None  # (method, target) of each request; default: the first line's

    def requests_made(self) -> list[tuple[str, str]]:
        if self.targets is not None:
            return self.targets
        first = self.data.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        return [(first[0], first[1] if len(first) > 1 else "")]

    def describe(self, limit: int = 400) -> str:
        text = repr(self.data[:limit]) + (f"... ({len(self.data)} bytes)" if len(self.data) > limit else "")
        return f"[{self.family}] {self.label}: {text}"


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class Outcome:
    responses: list[Response]
    closed: bool  # the server closed the connection (as opposed to our read timing out)
    problems: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------
# JSON with duplicate keys and raw fragments


def dumps(value) -> bytes:
    """Compact JSON of a tree of `Pairs` (objects, duplicates kept), lists, scalars and
    `Raw` fragments."""
    if isinstance(value, Raw):
        return bytes(value)
    if isinstance(value, Pairs):
        return b"{" + b",".join(_key(k) + b":" + dumps(v) for k, v in value) + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(dumps(v) for v in value) + b"]"
    return json.dumps(value, ensure_ascii=False).encode()


def _key(key) -> bytes:
    return bytes(key) if isinstance(key, Raw) else json.dumps(key, ensure_ascii=False).encode()


def obj(**fields) -> Pairs:
    return Pairs(fields.items())


# ---------------------------------------------------------------------------------------
# Valid bodies


def _content(rng: random.Random):
    if rng.random() < 0.6:
        return rng.choice(TEXTS)
    return [obj(type="text", text=rng.choice(TEXTS)) for _ in range(rng.randint(1, 3))]


def valid_body(rng: random.Random, api: str) -> Pairs:
    if api == "embeddings":
        value = rng.choice(TEXTS) if rng.random() < 0.5 else [rng.choice(TEXTS) for _ in range(rng.randint(1, 3))]
        body = obj(model="mock-embed", input=value)
        if rng.random() < 0.3:
            body.append(("dimensions", rng.choice([8, 16, 64])))
        return body
    messages = [obj(role="user", content=_content(rng))]
    if rng.random() < 0.3:
        messages += [obj(role="assistant", content=rng.choice(TEXTS)), obj(role="user", content=_content(rng))]
    # A third go to a provider of the other protocol, translated (issue 14); they leave out
    # the fields that have no translation (those are 400s, tested in test_translation.py).
    translated = rng.random() < 0.33
    if api == "messages":
        body = obj(
            model="only-gpt-fuzz" if translated else "mock-claude",
            max_tokens=rng.choice([1, 16, 64]),
            messages=messages,
        )
        if rng.random() < 0.3:
            body.append(("system", _content(rng)))
        optional = [("temperature", 0.5), ("top_p", 0.9), ("stream", rng.random() < 0.3)]
        if not translated:
            optional.append(("top_k", 5))
    else:
        if rng.random() < 0.3:
            messages.insert(0, obj(role="system", content=rng.choice(TEXTS)))
        body = obj(model="only-claude-fuzz" if translated else "mock-gpt", messages=messages)
        optional = [
            ("temperature", 0.7),
            ("max_tokens", 32),
            ("n", 1),
            ("user", "u1"),
            ("stream", rng.random() < 0.3),
        ]
        if not translated:
            optional.append(("seed", 7))
    body += rng.sample(optional, rng.randint(0, 2))
    return body


# ---------------------------------------------------------------------------------------
# Mutations: each takes the tree (a Pairs) and returns the new tree, and a label


def _containers(tree, path=()):
    """Every (path, container) in the tree, objects and arrays."""
    if isinstance(tree, (Pairs, list)) and not isinstance(tree, Raw):
        yield path, tree
        items = enumerate(v for _, v in tree) if isinstance(tree, Pairs) else enumerate(tree)
        for i, value in items:
            yield from _containers(value, path + (i,))


def _pick_slot(rng: random.Random, tree):
    """A random (container, index, description) whose value can be replaced."""
    slots = []
    for path, container in _containers(tree):
        for i in range(len(container)):
            name = container[i][0] if isinstance(container, Pairs) else f"[{i}]"
            slots.append((container, i, "/".join(map(str, path)) + f"/{name}"))
    return rng.choice(slots) if slots else (None, None, "")


def _replace(container, i, value) -> None:
    if isinstance(container, Pairs):
        container[i] = (container[i][0], value)
    else:
        container[i] = value


WRONG_TYPES = [None, True, False, 0, -1, 1.5, "str", "", [], Pairs(), [None], obj(a=1), ["x", 1, None], "10"]
HUGE_NUMBERS = [
    "1e400",
    "-1e400",
    "1e-400",
    "18446744073709551616",
    "18446744073709551615",
    "-9223372036854775809",
    "9223372036854775808",
    "123456789012345678901234567890123456789012345678901234567890",
    "4294967296",
    "4294967295",
    "-0",
    "0.0",
    "1E+2",
    "-1",
    "0",
    "2.5",
    "1e30",
    "2",
    "128",
    "129",
    "-2.0000001",
]
NUMERIC_FIELDS = [
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "n",
    "seed",
    "dimensions",
    "presence_penalty",
    "frequency_penalty",
    "max_completion_tokens",
]
BAD_UTF8 = [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"ok\x80ok", b"\xf4\x90\x80\x80", b"\xfe\xff", b"a\xc3"]
SURROGATES = ["\\ud800", "\\udfff x", "\\ud83d", "\\ude00\\ud83d", "x\\udbff", "\\ud83d\\ude00"]
ODD_KEYS = [
    "foo",
    "__proto__",
    "",
    "model ",
    "MODEL",
    "constructor",
    "\u0000",
    "x" * 300,
    "messages\u200b",
    "tools",
    "response_format",
]


def m_wrong_type(rng, tree):
    container, i, where = _pick_slot(rng, tree)
    value = rng.choice(WRONG_TYPES)
    if container is not None:
        _replace(container, i, value)
    return tree, f"wrong type at {where}: {value!r}"


def m_huge_number(rng, tree):
    name, literal = rng.choice(NUMERIC_FIELDS), rng.choice(HUGE_NUMBERS)
    if rng.random() < 0.7 or not tree:
        tree.append((name, Raw(literal.encode())))
        return tree, f"{name}: {literal}"
    i = rng.randrange(len(tree))
    _replace(tree, i, Raw(literal.encode()))
    return tree, f"{tree[i][0]}: {literal}"


def m_deep_nesting(rng, tree):
    depth = rng.choice([10, 127, 128, 129, 500, 5000, 20000])
    shape = rng.choice(["array", "object"])
    raw = b"[" * depth + b"]" * depth if shape == "array" else b'{"a":' * depth + b"1" + b"}" * depth
    container, i, where = _pick_slot(rng, tree)
    if container is not None:
        _replace(container, i, Raw(raw))
    return tree, f"{shape} nested {depth} deep at {where}"


def m_duplicate_key(rng, tree):
    objects = [c for _, c in _containers(tree) if isinstance(c, Pairs) and len(c)]
    if not objects:
        return tree, "no key to duplicate"
    target = rng.choice(objects)
    key, _ = rng.choice(target)
    spelled = (
        Raw(b'"\\u00' + format(ord(key[0]), "02x").encode() + json.dumps(key[1:]).encode()[1:])
        if key and ord(key[0]) < 128 and rng.random() < 0.3
        else key
    )
    value = rng.choice([rng.choice(TEXTS), [obj(role="user", content=rng.choice(TEXTS))], "mock-gpt", 1, None])
    target.insert(rng.randint(0, len(target)), (spelled, value))
    return tree, f"duplicate key {key!r} ({bytes(spelled) if isinstance(spelled, Raw) else 'plain'})"


def m_invalid_utf8(rng, tree):
    bad = rng.choice(BAD_UTF8)
    container, i, where = _pick_slot(rng, tree)
    if container is not None:
        _replace(container, i, Raw(b'"' + bad + b'"'))
    return tree, f"invalid UTF-8 {bad!r} at {where}"


def m_surrogate(rng, tree):
    text = rng.choice(SURROGATES)
    container, i, where = _pick_slot(rng, tree)
    if container is not None:
        _replace(container, i, Raw(b'"' + text.encode() + b'"'))
    return tree, f"escaped surrogates {text} at {where}"


def m_nul(rng, tree):
    raw = rng.choice([b'"a\x00b"', b'"a\\u0000b"', b'"\\u0000"'])
    container, i, where = _pick_slot(rng, tree)
    if container is not None:
        _replace(container, i, Raw(raw))
    return tree, f"NUL {raw!r} at {where}"


def m_unexpected_field(rng, tree):
    objects = [c for _, c in _containers(tree) if isinstance(c, Pairs)]
    target = rng.choice(objects)
    key = rng.choice(ODD_KEYS)
    target.append((key, rng.choice(WRONG_TYPES + TEXTS)))
    return tree, f"unexpected field {key[:20]!r}"


def m_empty(rng, tree):
    choice = rng.randrange(5)
    if choice == 0:
        return Pairs(), "empty object"
    if choice == 1:
        return obj(model=dict(tree).get("model", "mock-gpt"), messages=[Pairs()]), "messages: [{}]"
    if choice == 2:
        return obj(model=dict(tree).get("model", "mock-gpt"), messages=[], input=[], max_tokens=16), "empty arrays"
    if choice == 3:
        return obj(
            model=dict(tree).get("model", "mock-gpt"),
            messages=[obj(role="user", content=Pairs())],
            input=Pairs(),
            max_tokens=16,
        ), "content {}"
    return Raw(rng.choice([b"[]", b'"x"', b"1", b"null", b"", b" ", b"{", b"}"])), "not an object"


MUTATIONS = [
    m_wrong_type,
    m_huge_number,
    m_deep_nesting,
    m_duplicate_key,
    m_invalid_utf8,
    m_surrogate,
    m_nul,
    m_unexpected_field,
    m_empty,
]


def body_case(rng: random.Random, api: str, max_body: int, headers: dict[str, str]) -> Case:
    """A valid body, maybe mutated (1 to 3 mutations), then maybe grown, truncated or wrapped."""
    tree = valid_body(rng, api)
    labels = []
    if rng.random() < 0.8:  # one mutation mostly, so that many bodies are still accepted
        for mutate in rng.sample(MUTATIONS, rng.choices([1, 2, 3], [7, 2, 1])[0]):
            if isinstance(tree, Raw):
                break
            tree, label = mutate(rng, tree)
            labels.append(label)
    data = dumps(tree)
    expect = None
    post = rng.random()
    if post < 0.08 and isinstance(tree, Pairs):  # an enormous string, under the limit
        room = max_body - len(data) - 64
        filler = rng.choice(["x", "é", "4", " ", "\\n", "ab@"])
        huge = Raw(b'"' + (filler * max(0, room // len(filler.encode()))).encode() + b'"')
        messages = dict(tree).get("messages")
        if rng.random() < 0.5 and isinstance(messages, list) and messages and isinstance(messages[0], Pairs):
            messages[0].append(("content", huge))  # maybe a duplicate: then refused, as it should be
        else:
            tree.append(("content_padding" if rng.random() < 0.5 else "user", huge))
        data = dumps(tree)
        labels.append(f"enormous string ({len(data)} bytes, limit {max_body})")
    elif post < 0.11:
        data = data + b" " * (max_body + 1 - len(data)) if len(data) <= max_body else data
        labels.append(f"over the body limit ({len(data)} bytes)")
        expect = frozenset({413})
    elif post < 0.2 and len(data) > 1:
        cut = rng.randrange(1, len(data))
        data = data[:cut]
        labels.append(f"truncated at {cut}")
    elif post < 0.25:
        junk = rng.choice([b"\xef\xbb\xbf", b"", b"\x00"])
        tail = rng.choice([b"}", b"\x00", b" garbage", b"\n", b"", b"{}"])
        data = junk + data + tail
        labels.append(f"wrapped in {junk!r} ... {tail!r}")
    return Case(f"body/{api}", "; ".join(labels) or "valid", request(PATHS[api], data, headers), expect=expect)


# ---------------------------------------------------------------------------------------
# Raw HTTP framings


def request(
    path: str,
    body: bytes,
    headers: dict[str, str],
    *,
    method: str = "POST",
    version: str = "HTTP/1.1",
    length: bool = True,
    close: bool = True,
    extra: list[str] = (),
) -> bytes:
    lines = [f"{method} {path} {version}", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    lines += list(extra)
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body


def chunked(body: bytes, sizes: list[int] | None = None) -> bytes:
    out, i = b"", 0
    for size in sizes or [len(body)]:
        part = body[i : i + size]
        i += size
        if part:
            out += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    if i < len(body):
        out += f"{len(body) - i:x}\r\n".encode() + body[i:] + b"\r\n"
    return out + b"0\r\n\r\n"


def _raw_head(lines: list[str]) -> bytes:
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n"


def framing_cases(rng: random.Random, family: str, headers: dict[str, str]) -> Case:
    """One case of a framing family, its parameters drawn from `rng`."""
    body = dumps(
        obj(model="mock-gpt", messages=[obj(role="user", content=rng.choice(["hi", "hello there", "what is 2+2"]))])
    )
    auth = [f"{k}: {v}" for k, v in headers.items()]
    chat = "/v1/chat/completions"
    ok = frozenset({200})
    bad = frozenset({400})
    if family == "control":
        return Case(family, "a valid request", request(chat, body, headers), expect=ok)
    if family == "http10":
        variant = rng.randrange(3)
        if variant == 0:
            return Case(
                family,
                "HTTP/1.0 with Content-Length",
                request(chat, body, headers, version="HTTP/1.0", close=False),
                expect=ok,
            )
        if variant == 1:
            data = _raw_head([f"POST {chat} HTTP/1.0", *auth, f"Content-Length: {len(body)}"]) + body
            return Case(family, "HTTP/1.0 without Host", data, expect=ok)
        data = _raw_head(["GET /healthz HTTP/1.0"])
        return Case(family, "HTTP/1.0 GET /healthz", data, expect=ok)
    if family == "pipelining":
        n = rng.randint(2, 4)
        parts, targets = [], []
        for i in range(n):
            last = i == n - 1
            kind = rng.choice(["chat", "healthz", "models"])
            if kind == "chat":
                parts.append(request(chat, body, headers, close=last))
                targets.append(("POST", chat))
            else:
                path = "/healthz" if kind == "healthz" else "/v1/models"
                parts.append(request(path, b"", headers, method="GET", length=False, close=last))
                targets.append(("GET", path))
        return Case(family, f"{n} requests in one write", b"".join(parts), requests=n, expect=ok, targets=targets)
    if family == "content-length":
        value = rng.choice(
            [
                "abc",
                "-1",
                "1.5",
                "0x10",
                "+{n}",
                "{n}, {n}",
                "{n},{m}",
                "99999999999999999999999",
                "{n} ",
                " {n}",
                "{m}",
                "0{n}",
                "",
                "{n}\x00",
                "{l}",
                "{s}",
            ]
        )
        n, m = len(body), len(body) + 1
        shown = value.format(n=n, m=m, l=len(body) + 10, s=len(body) - 3)
        head = [f"POST {chat} HTTP/1.1", "Host: 127.0.0.1", *auth, "Connection: close"]
        if value == "{n},{m}" and rng.random() < 0.5:  # two differing header lines instead of one list
            head += [f"Content-Length: {n}", f"Content-Length: {m}"]
            label = "two Content-Length lines that differ"
        else:
            head.append(f"Content-Length: {shown}")
            label = f"Content-Length: {shown!r}"
        if value in ("{l}", "{m}"):  # promises more than it sends, then half-closes: nothing to answer
            return Case(
                family,
                label + " (longer than the body, then half-close)",
                _raw_head(head) + body,
                half_close=True,
                needs_answer=False,
            )
        if value in ("{n} ", " {n}", "0{n}"):  # OWS is trimmed; leading zeros are digits
            return Case(family, label, _raw_head(head) + body, expect=ok)
        if value == "{n}, {n}":  # RFC 9110 8.6: a list of identical values may be taken as one
            return Case(family, label, _raw_head(head) + body, expect=frozenset({200, 400}))
        if value == "99999999999999999999999":
            return Case(
                family, label, _raw_head(head) + body, expect=frozenset({400, 413}), needs_answer=False, half_close=True
            )
        if value == "{s}":  # shorter than the body: the JSON read is cut, the rest is not a request
            return Case(family, label + " (shorter than the body)", _raw_head(head) + body, expect=bad)
        return Case(family, label, _raw_head(head) + body, expect=bad)
    if family == "cl-te":
        variant = rng.randrange(4)
        te = chunked(body)
        if variant == 0:
            head = [
                f"POST {chat} HTTP/1.1",
                "Host: 127.0.0.1",
                *auth,
                f"Content-Length: {len(te)}",
                "Transfer-Encoding: chunked",
            ]
            return Case(
                family, "CL and TE both, agreeing", _raw_head(head) + te, must_close=True, expect=frozenset({200, 400})
            )
        smuggled = b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        if variant == 1:  # CL.TE: a CL reader sees one request, a TE reader a second one
            payload = b"0\r\n\r\n" + smuggled
            head = [
                f"POST {chat} HTTP/1.1",
                "Host: 127.0.0.1",
                *auth,
                f"Content-Length: {len(payload)}",
                "Transfer-Encoding: chunked",
            ]
            return Case(family, "CL.TE smuggling GET /readyz", _raw_head(head) + payload, must_close=True)
        if variant == 2:  # TE.CL: a TE reader sees one request, a CL reader a second one
            inner = smuggled
            payload = f"{len(inner):x}\r\n".encode() + inner + b"\r\n0\r\n\r\n"
            head = [
                f"POST {chat} HTTP/1.1",
                "Host: 127.0.0.1",
                *auth,
                "Content-Length: 4",
                "Transfer-Encoding: chunked",
            ]
            return Case(family, "TE.CL smuggling GET /readyz", _raw_head(head) + payload, must_close=True)
        head = [
            f"POST {chat} HTTP/1.1",
            "Host: 127.0.0.1",
            *auth,
            "Transfer-Encoding: chunked",
            f"Content-Length: {len(body)}",
        ]
        return Case(
            family, "TE before CL, body chunked", _raw_head(head) + te, must_close=True, expect=frozenset({200, 400})
        )
    if family == "transfer-encoding":
        te = chunked(body, [rng.randint(1, max(1, len(body) - 1))])
        value, expect = rng.choice(
            [
                ("Transfer-Encoding: chunked, chunked", bad),
                ("Transfer-Encoding: chunked,chunked", bad),
                ("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", bad),
                ("Transfer-Encoding: gzip, chunked", frozenset({400, 501})),
                ("Transfer-Encoding: xchunked", frozenset({400, 501})),
                ("Transfer-Encoding: identity", frozenset({400, 501})),
                ("Transfer-Encoding : chunked", bad),
                ("Transfer-Encoding: chunked", ok),
                ("Transfer-Encoding:\tchunked", ok),
                ("Transfer-Encoding: Chunked", ok),
                ("Transfer-Encoding: chunked, identity", frozenset({400, 501})),
                ("Transfer-Encoding:\r\n chunked", bad),  # obs-fold
            ]
        )
        head = [f"POST {chat} HTTP/1.1", "Host: 127.0.0.1", *auth, "Connection: close", value]
        return Case(family, value.replace("\r\n", "\\r\\n"), _raw_head(head) + te, expect=expect)
    if family == "chunks":
        head = [f"POST {chat} HTTP/1.1", "Host: 127.0.0.1", *auth, "Connection: close", "Transfer-Encoding: chunked"]
        size = f"{len(body):x}"
        variant = rng.choice(
            ["zz", "-1", "overflow", "longer", "no-crlf", "ext", "0x", "space", "lf-only", "no-last", "upper"]
        )
        tail = b"0\r\n\r\n"
        # granian reports a malformed chunked body to the app as a disconnect, so the app
        # answers (in the API's shape) 499; a 400 would be truer: issue 9's server gap.
        bad = bad | {499}
        cases = {
            "zz": (b"zz\r\n" + body + b"\r\n" + tail, bad, True),
            "-1": (b"-1\r\n" + body + b"\r\n" + tail, bad, True),
            "overflow": (b"ffffffffffffffffffff\r\n" + body + b"\r\n" + tail, bad, True),
            "no-crlf": (size.encode() + b"\r\n" + body + b"XX" + tail, bad, True),
            "ext": (size.encode() + b";name=value\r\n" + body + b"\r\n" + tail, ok, True),
            "0x": (b"0x" + size.encode() + b"\r\n" + body + b"\r\n" + tail, bad, True),
            "space": (b" " + size.encode() + b"\r\n" + body + b"\r\n" + tail, bad, True),
            "lf-only": (size.encode() + b"\n" + body + b"\n0\n\n", frozenset({200, 400, 499}), True),
            "upper": (size.upper().encode() + b"\r\n" + body + b"\r\n" + tail, ok, True),
            # incomplete: the server waits for more; after our half-close nothing is owed
            "longer": (f"{len(body) + 50:x}".encode() + b"\r\n" + body + b"\r\n" + tail, frozenset({400, 499}), False),
            "no-last": (size.encode() + b"\r\n" + body + b"\r\n", frozenset({400, 499}), False),
        }
        payload, expect, complete = cases[variant]
        return Case(
            family,
            f"chunk {variant}",
            _raw_head(head) + payload,
            expect=expect,
            needs_answer=complete,
            half_close=not complete,
        )
    if family == "header-injection":
        name, line, expect = rng.choice(
            [
                ("bare CR in a value", "X-A: b\rc", bad),
                ("NUL in a value", "X-A: b\x00c", bad),
                ("space in a name", "X A: b", bad),
                ("no colon", "garbage-line", bad),
                ("obs-fold", "X-A: b\r\n folded", bad),
                ("empty name", ": b", bad),
                ("bare LF ends a line", "X-A: b\nX-Injected: 1", frozenset({200, 400})),
                ("non-ASCII value", "X-A: caf\xe9", ok),
                ("CRLF-looking x-request-id", "X-Request-Id: a%0d%0aSet-Cookie:x", ok),
                ("control char in x-request-id", "X-Request-Id: a\x01b", frozenset({200, 400})),
                ("duplicate Authorization", "Authorization: Bearer wrong", frozenset({200, 400, 401})),
                ("DEL in a name", "X-\x7fA: b", bad),
            ]
        )
        head = [
            f"POST {chat} HTTP/1.1",
            "Host: 127.0.0.1",
            *auth,
            f"Content-Length: {len(body)}",
            "Connection: close",
            line,
        ]
        return Case(family, name, _raw_head(head) + body, expect=expect)
    if family == "long":
        size = rng.choice([4_000, 9_000, 70_000, 300_000])
        variant = rng.choice(["header", "url", "many", "query"])
        if variant == "header":
            extra = [f"X-Long: {'a' * size}"]
            data = request(chat, body, headers, extra=extra)
        elif variant == "many":
            extra = [f"X-H{i}: v" for i in range(size // 100)]
            data = request(chat, body, headers, extra=extra)
        elif variant == "query":
            data = request(chat + "?q=" + "a" * size, body, headers)
        else:
            data = request("/v1/" + "a" * size, body, headers)
        return Case(
            family,
            f"{variant} of {size}",
            data,
            expect=None if size < 9_000 else frozenset({400, 404, 413, 414, 431, 200}),
        )
    if family == "encoded-paths":
        path, expect = rng.choice(
            [
                ("/v1/chat%2fcompletions", frozenset({404})),
                ("/v1/chat%2Fcompletions", frozenset({404})),
                ("/v1%2fchat%2fcompletions", frozenset({404})),
                ("/%761/chat/completions", frozenset({404})),
                ("/v1/chat/%63ompletions", frozenset({404})),
                ("/v1/%6dessages", frozenset({404})),
                ("/v1/embeddings%2f", frozenset({404})),
                ("/%6detrics", frozenset({404})),
                ("/%6Detrics", frozenset({404})),
                ("/metrics%00", frozenset({404})),
                ("/v1/chat/completions%00", frozenset({404})),
                ("/%72eadyz", frozenset({404})),
                ("/v1/chat/completions?x=%2f", ok),
                ("//v1/chat/completions", frozenset({404})),
                ("/v1/chat/completions/", frozenset({404})),
                ("/v1/./chat/completions", frozenset({404})),
                ("/v1/x/../chat/completions", frozenset({404})),
                ("/v1/chat/completions;x", frozenset({404})),
                ("/V1/CHAT/COMPLETIONS", frozenset({404})),
            ]
        )
        method = "GET" if "etrics" in path or "eadyz" in path and rng.random() < 0.5 else "POST"
        return Case(family, f"{method} {path}", request(path, body, headers, method=method), expect=expect)
    if family == "half-close":
        # the client is gone once it half-closes (commit 03f777d): no answer owed, so no
        # `expect`; `check` still refuses a JSON 5xx (our app's) and a worker restart
        return Case(
            family,
            "a valid request, then half-close",
            request(chat, body, headers, close=rng.random() < 0.5),
            half_close=True,
            needs_answer=False,
        )
    if family == "methods":
        method, expect = rng.choice(
            [
                ("GET", frozenset({405})),
                ("PUT", frozenset({405})),
                ("DELETE", frozenset({405})),
                ("OPTIONS", frozenset({405})),
                ("post", frozenset({400, 405})),
                ("FOO", frozenset({400, 405})),
                ("P\x00ST", bad),
                ("HEAD", frozenset({405})),
            ]
        )
        path = rng.choice(list(PATHS.values()))
        return Case(family, f"{method!r} {path}", request(path, body, headers, method=method), expect=expect)
    if family == "versions":
        line, expect = rng.choice(
            [
                ("POST {p} HTTP/2.0", frozenset({400, 505})),
                ("POST {p} HTTP/1.2", frozenset({200, 400, 505})),
                ("POST {p} HTTP/9.9", frozenset({400, 505})),
                ("POST {p} http/1.1", bad),
                ("POST {p}", bad),
                ("POST  {p}  HTTP/1.1", bad),
                ("POST {p} HTTP/1.1 extra", bad),
                ("POST http://127.0.0.1{p} HTTP/1.1", frozenset({200, 400})),
                ("POST {p}\x00 HTTP/1.1", bad),
                ("POST * HTTP/1.1", frozenset({400, 404})),
            ]
        )
        head = [line.format(p=chat), "Host: 127.0.0.1", *auth, f"Content-Length: {len(body)}", "Connection: close"]
        return Case(family, line.format(p="PATH"), _raw_head(head) + body, expect=expect)
    if family == "garbage":
        data = bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))
        if rng.random() < 0.5:
            data += b"\r\n\r\n"
        return Case(family, "random bytes", data, needs_answer=False, half_close=True)
    if family == "expect":
        head = [
            f"POST {chat} HTTP/1.1",
            "Host: 127.0.0.1",
            *auth,
            f"Content-Length: {len(body)}",
            "Connection: close",
            "Expect: 100-continue",
        ]
        return Case(family, "Expect: 100-continue, body sent at once", _raw_head(head) + body, expect=ok)
    raise ValueError(family)


FRAMING_FAMILIES = [
    "control",
    "http10",
    "pipelining",
    "content-length",
    "cl-te",
    "transfer-encoding",
    "chunks",
    "header-injection",
    "long",
    "encoded-paths",
    "half-close",
    "methods",
    "versions",
    "garbage",
    "expect",
]


# ---------------------------------------------------------------------------------------
# Sending a case and reading the answers


def exchange(port: int, case: Case, timeout: float) -> Outcome:
    """Writes the case, then reads until the server closes (or `timeout` of silence)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(case.data)
            if case.half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused early; read whatever it said
        received, closed = b"", False
        while True:  # to the close: a smuggled request's answer would come after ours
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            received += chunk
    responses, _ = parse_responses(received, [method for method, _ in case.requests_made()])
    outcome = Outcome(responses, closed)
    if received and not responses:
        outcome.problems.append(f"unparseable response bytes: {received[:200]!r}")
    return outcome


def parse_responses(data: bytes, methods: list[str] = ()) -> tuple[list[Response], bool]:
    """The complete final responses in `data` (1xx skipped) to requests made with `methods`
    (a response to HEAD has no body); True when nothing is left over."""
    responses, at = [], 0
    while at < len(data):
        end = data.find(b"\r\n\r\n", at)
        if end < 0:
            return responses, False
        head = data[at:end].decode("latin-1").split("\r\n")
        try:
            status = int(head[0].split(" ")[1])
        except (IndexError, ValueError):
            return responses, False
        headers = [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in head[1:])]
        at = end + 4
        if 100 <= status < 200:
            continue
        names = dict(headers)
        if len(responses) < len(methods) and methods[len(responses)] == "HEAD":
            body = b""
        elif "chunked" in names.get("transfer-encoding", "").lower():
            body = b""
            while True:
                line_end = data.find(b"\r\n", at)
                if line_end < 0:
                    return responses, False
                size = int(data[at:line_end].split(b";")[0] or b"0", 16)
                at = line_end + 2
                if size == 0:
                    trailer_end = data.find(b"\r\n", at)
                    if trailer_end < 0:
                        return responses, False
                    at = trailer_end + 2
                    break
                if len(data) < at + size + 2:
                    return responses, False
                body += data[at : at + size]
                at += size + 2
        elif "content-length" in names:
            size = int(names["content-length"])
            if len(data) < at + size:
                return responses, False
            body = data[at : at + size]
            at += size
        else:  # read to the close
            body = data[at:]
            at = len(data)
        responses.append(Response(status, headers, body))
    return responses, True


# ---------------------------------------------------------------------------------------
# The invariants

SERVER_REJECTIONS = frozenset({400, 414, 431, 500, 501, 505})


def is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


def server_rejection(r: Response) -> bool:
    """granian's own framing rejection (the known server gap): a non-JSON body (empty or
    plain text) with one of `SERVER_REJECTIONS`. Our app always answers JSON."""
    return r.status in SERVER_REJECTIONS and not is_json(r.body)


def error_shape_problem(body: bytes, anthropic: bool | None) -> str | None:
    """None if `body` is an error in the API's shape (either API's when `anthropic` is None)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return f"error body is not JSON: {body[:200]!r}"
    openai_ok = (
        isinstance(doc, dict)
        and isinstance(doc.get("error"), dict)
        and isinstance(doc["error"].get("message"), str)
        and isinstance(doc["error"].get("type"), str)
        and {"param", "code"} <= doc["error"].keys()
    )
    anthropic_ok = (
        isinstance(doc, dict)
        and doc.get("type") == "error"
        and isinstance(doc.get("error"), dict)
        and isinstance(doc["error"].get("type"), str)
        and isinstance(doc["error"].get("message"), str)
    )
    if anthropic is None and (openai_ok or anthropic_ok):
        return None
    if anthropic is True and anthropic_ok or anthropic is False and openai_ok:
        return None
    want = "either API's" if anthropic is None else "Anthropic's" if anthropic else "OpenAI's"
    return f"error body not in {want} error shape: {body[:200]!r}"


def worker_pids(pid: int) -> set[int]:
    """Every descendant process of `pid` (granian's workers), from /proc."""
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    children = [int(c) for c in f.read().split()]
            except FileNotFoundError:
                continue
            found.update(children)
            todo += children
    return found


@dataclass
class Tally:
    tried: int = 0
    handled: int = 0
    failed: int = 0
    gaps: dict[str, int] = field(default_factory=dict)  # family -> server-level rejections (known gap)
    failures: list[str] = field(default_factory=list)
    by_family: dict[str, list[int]] = field(default_factory=dict)  # family -> [tried, failed]
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)  # family -> status -> count

    def line(self) -> str:
        gaps = ", ".join(f"{f}: {n}" for f, n in sorted(self.gaps.items()))
        return (
            f"fuzz: tried {self.tried}, handled {self.handled}, failed {self.failed}; "
            f"known server gaps: {sum(self.gaps.values())} ({gaps or 'none'})"
        )

    def report(self, seed: int, limit: int = 40) -> str:
        families = ", ".join(f"{f} {t}/{x}" for f, (t, x) in sorted(self.by_family.items()))
        statuses = "; ".join(
            f"{f} " + " ".join(f"{s}x{n}" for s, n in sorted(counts.items()))
            for f, counts in sorted(self.statuses.items())
        )
        shown = "\n".join(self.failures[:limit])
        more = f"\n... and {len(self.failures) - limit} more" if len(self.failures) > limit else ""
        return (
            f"{self.line()} (seed {seed}; rerun with GATEWAYD_FUZZ_SEED={seed})\n"
            f"families (tried/failed): {families}\nstatuses: {statuses}\n{shown}{more}"
        )


class Fuzzer:
    """Sends cases to one gateway (whose provider is the mock on `mock_port`) and checks
    every invariant, counting into `tally`."""

    def __init__(self, gateway_port: int, gateway_pid: int, mock_port: int, timeout: float = 5.0):
        self.port = gateway_port
        self.pid = gateway_pid
        self.mock_port = mock_port
        self.timeout = timeout
        self.workers = worker_pids(gateway_pid)
        self.tally = Tally()

    def run(self, case: Case) -> list[str]:
        clear_journal(self.mock_port)
        outcome = exchange(self.port, case, self.timeout)
        problems = outcome.problems + self.check(case, outcome)
        if any(server_rejection(r) for r in outcome.responses):
            self.tally.gaps[case.family] = self.tally.gaps.get(case.family, 0) + 1
        workers = worker_pids(self.pid)
        if workers != self.workers:
            problems.append(f"workers changed: {sorted(self.workers)} -> {sorted(workers)} (a worker restarted)")
            self.workers = workers
        t = self.tally
        t.tried += 1
        counts = t.by_family.setdefault(case.family, [0, 0])
        counts[0] += 1
        statuses = t.statuses.setdefault(case.family, {})
        for r in outcome.responses or [Response(0, [], b"")]:  # 0: no answer
            statuses[r.status] = statuses.get(r.status, 0) + 1
        if problems:
            t.failed += 1
            counts[1] += 1
            got = ", ".join(f"{r.status} {r.body[:160]!r}" for r in outcome.responses) or "no response"
            t.failures.append(
                f"- {case.describe()}\n    got: {got} (closed: {outcome.closed})\n    " + "\n    ".join(problems)
            )
        else:
            t.handled += 1
        return problems

    def check(self, case: Case, outcome: Outcome) -> list[str]:
        problems = []
        responses = outcome.responses
        targets = case.requests_made()
        if case.needs_answer and len(responses) < case.requests:
            problems.append(f"{case.requests} request(s) made, {len(responses)} answered")
        if len(responses) > case.requests:
            problems.append(
                f"{len(responses)} responses to {case.requests} request(s): a smuggled request was answered"
            )
        if case.must_close and not outcome.closed:
            problems.append("the connection stayed open after a request with both Content-Length and Transfer-Encoding")
        accepted = False
        for i, r in enumerate(responses):
            method, target = targets[i] if i < len(targets) else ("", "")
            raw_path = target.split("?", 1)[0]
            if b'"replica"' in r.body and "readyz" not in raw_path:
                problems.append("a smuggled GET /readyz was answered")
            if server_rejection(r):  # the known server gap: counted by `run`, not a failure,
                if case.expect is not None and not any(s >= 400 for s in case.expect):  # unless the request was valid
                    problems.append(f"{r.status} from the server itself for a request the rule says succeeds")
                continue
            if r.status >= 500 and r.status not in (case.expect or ()):  # 501, 505: when the RFC names them
                problems.append(f"{r.status} for a client's mistake")
            if r.status >= 400 and method != "HEAD":
                anthropic = True if raw_path == "/v1/messages" else False if raw_path in LLM_PATHS else None
                shape = error_shape_problem(r.body, anthropic)
                if shape:
                    problems.append(f"{r.status}: {shape}")
            if case.expect is not None and r.status not in case.expect:
                problems.append(f"status {r.status}, expected one of {sorted(case.expect)}")
            if 200 <= r.status < 300 and raw_path in LLM_PATHS:
                accepted = True
        if accepted:
            problems += self.provider_view()
        return problems

    def provider_view(self) -> list[str]:
        """What the provider received for the accepted bodies reads the same to first- and
        last-wins parsers, and holds no blocked or unredacted text."""
        problems = []
        entries = journal(self.mock_port)
        if not entries:
            problems.append("accepted (2xx) but the provider received nothing (the cache is bypassed)")
        for entry in entries:
            entry = dict(entry)
            body = entry["body"]
            if isinstance(body, str):
                problems.append(f"the provider received a body that is not JSON: {body[:200]!r}")
                continue
            first, last = reading(body, "first"), reading(body, "last")
            if first != last:
                problems.append(f"the provider's first- and last-wins parsers disagree on {json.dumps(body)[:300]}")
            api = LLM_PATHS.get(entry["path"], "chat")
            for text in prompt_texts(first, api) + prompt_texts(last, api):
                if CARD_RE.search(text):
                    problems.append(f"a blocked card number reached the provider: {text[:200]!r}")
                if EMAIL_RE.search(text):
                    problems.append(f"an unredacted email reached the provider: {text[:200]!r}")
        return problems


BODY_FAMILIES = ["body/chat", "body/messages", "body/embeddings"]


def cases(seed: int, family: str, count: int, max_body: int, headers: dict[str, str]):
    """`count` cases of one family (`body/API` or a framing family); the same seed and
    family give the same cases, whatever other families run."""
    rng = random.Random(f"{seed}:{family}")
    for _ in range(count):
        if family.startswith("body/"):
            yield body_case(rng, family.removeprefix("body/"), max_body, headers)
        else:
            yield framing_cases(rng, family, headers)
