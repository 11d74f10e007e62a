"""How a body reads to different JSON parsers, and what the mock provider received.

A parser keeping the first of duplicate keys and one keeping the last read a body the
same way exactly when no object in it names a key twice (after unescaping). The gateway's
policy judges one reading; a provider may act on either. Shared by the policy-view test
and the fuzz suite.
"""

from __future__ import annotations

import json
import urllib.request


class Pairs(list):
    """A JSON object as its (key, value) pairs in order, duplicates kept."""


def pairs(body: str | bytes):
    """The document with every object as `Pairs` (duplicate keys kept, in order)."""
    return json.loads(body, object_pairs_hook=Pairs)


def reading(value, keep: str):
    """The document a parser keeping the `first` or `last` of duplicate keys reads."""
    if isinstance(value, Pairs):
        out: dict = {}
        for key, item in value:
            if keep == "last" or key not in out:
                out[key] = reading(item, keep)
        return out
    if isinstance(value, list):
        return [reading(item, keep) for item in value]
    return value


def prompt_texts(doc: dict, api: str = "chat") -> list[str]:
    """The texts a provider takes as the prompt: the same fields the gateway's policy reads
    (message contents and text blocks, Anthropic `system`; `input` for embeddings)."""
    if not isinstance(doc, dict):
        return []
    if api in ("embeddings", "completions"):
        value = doc.get("input" if api == "embeddings" else "prompt")
        items = value if isinstance(value, list) else [value]
        return [item for item in items if isinstance(item, str)]
    texts = []
    system = doc.get("system")
    messages = doc.get("messages")
    contents = [m.get("content") for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
    for content in [system] + contents:
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [
                b["text"]
                for b in content
                if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
            ]
    return texts


def journal(port: int) -> list:
    """The mock provider's journal of received requests, objects as `Pairs`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_mock/requests", timeout=10) as r:
        return json.loads(r.read(), object_pairs_hook=Pairs)


def clear_journal(port: int) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/_mock/requests", method="DELETE")
    urllib.request.urlopen(request, timeout=10).close()
