"""What policy judged is what the provider reads (issue 9's critical item).

A seeded generator mutates chat and messages bodies with duplicate keys at every depth
(escaped spellings too) around texts the test policy blocks (card numbers) or redacts
(email addresses). Each body goes through a real gateway to the mock provider, a third of
them translated to the other protocol's provider (issue 14). Property:
for every body the gateway accepts, the body the provider received reads the same to a
parser keeping the first of duplicate keys and to one keeping the last, and no prompt text
in either reading holds what the policy blocks or redacts. A refused body is a 400 naming
the duplicate key.
"""

from __future__ import annotations

import json
import random
import re

import httpx

from support.gateway import KEYS
from support.views import clear_journal, journal, prompt_texts, reading

CARD = "card 4111 1111 1111 1111"
EMAIL = "mail a.b@example.com now"
BENIGN = ["hi", "hello there", "what is 2+2"]
CARD_RE = re.compile(r"\b(?:\d[ -]?){13,16}\b")
EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
SPELLINGS = {"content": ['"content"', '"\\u0063ontent"'], "text": ['"text"', '"t\\u0065xt"']}
CASES = 300


def _key(rng: random.Random, name: str) -> str:
    return rng.choice(SPELLINGS.get(name, [json.dumps(name)]))


def _content(rng: random.Random) -> str:
    """A message content: a string, or text blocks, maybe with a duplicated key inside."""
    text = lambda: json.dumps(rng.choice([CARD, EMAIL, *BENIGN]))  # noqa: E731
    if rng.random() < 0.5:
        return text()
    blocks = []
    for _ in range(rng.randint(1, 2)):
        pairs = ['"type":"text"', f"{_key(rng, 'text')}:{text()}"]
        if rng.random() < 0.15:
            pairs.append(f"{_key(rng, 'text')}:{text()}")
        rng.shuffle(pairs)
        blocks.append("{" + ",".join(pairs) + "}")
    return "[" + ",".join(blocks) + "]"


def _message(rng: random.Random) -> str:
    pairs = ['"role":"user"', f"{_key(rng, 'content')}:{_content(rng)}"]
    if rng.random() < 0.15:
        pairs.append(f"{_key(rng, 'content')}:{_content(rng)}")
    rng.shuffle(pairs)
    return "{" + ",".join(pairs) + "}"


def generate(rng: random.Random) -> tuple[str, str]:
    """A (path, body) with duplicate keys somewhere about half the time."""
    messages_api = rng.random() < 0.5
    # A third go to a provider of the other protocol: what it reads is the translation.
    translated = rng.random() < 0.33
    model = (
        ("only-gpt-fuzz" if translated else "mock-claude")
        if messages_api
        else ("only-claude-fuzz" if translated else "mock-gpt")
    )
    head = [f'"model":"{model}"', '"max_tokens":16'] if messages_api else [f'"model":"{model}"']
    fields = [*head]
    for _ in range(1 + (rng.random() < 0.1)):  # sometimes `messages` itself twice
        fields.append('"messages":[' + ",".join(_message(rng) for _ in range(rng.randint(1, 2))) + "]")
    if rng.random() < 0.2:
        fields.append(rng.choice(['"model":"mock-gpt"', '"stream":false', '"temperature":0']))
    rng.shuffle(fields)
    return ("/v1/messages" if messages_api else "/v1/chat/completions"), "{" + ",".join(fields) + "}"


def test_every_accepted_body_reads_to_the_provider_as_policy_judged_it(gateway, mock_port):
    rng = random.Random(9)
    outcomes = {"accepted": 0, "duplicate": 0, "denied": 0}
    # Every accepted body must reach the provider, not be answered from the cache.
    headers = {
        "authorization": f"Bearer {KEYS['acme']}",
        "content-type": "application/json",
        "x-gatewayd-cache": "bypass",
    }
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=10) as client:
        for _ in range(CASES):
            path, body = generate(rng)
            clear_journal(mock_port)
            r = client.post(path, content=body)
            assert r.status_code < 500, (body, r.text)
            if r.status_code == 400:
                assert "twice in" in r.text and "key `" in r.text, (body, r.text)
                assert journal(mock_port) == [], "a refused body reached the provider"
                outcomes["duplicate"] += 1
                continue
            if r.status_code == 403:
                outcomes["denied"] += 1
                continue
            assert r.status_code == 200, (body, r.text)
            [received] = [dict(e)["body"] for e in journal(mock_port)]
            first, last = reading(received, "first"), reading(received, "last")
            assert first == last, f"the provider's parsers disagree on {body}"
            for text in prompt_texts(first):
                assert not CARD_RE.search(text), f"a blocked card reached the provider from {body}"
                assert not EMAIL_RE.search(text), f"an unredacted email reached the provider from {body}"
            outcomes["accepted"] += 1
    # The generator exercised every branch: accepted, refused for duplicates, denied.
    assert min(outcomes.values()) >= 20, outcomes


def test_issue_examples_are_refused_naming_the_key(gateway):
    headers = {"authorization": f"Bearer {KEYS['acme']}", "content-type": "application/json"}
    top = (
        '{"model":"mock-gpt","messages":[{"role":"user","content":"card 4111 1111 1111 1111"}],'
        '"messages":[{"role":"user","content":"hi"}]}'
    )
    nested = '{"model":"mock-gpt","messages":[{"role":"user","content":"mail a.b@example.com now","content":"x"}]}'
    for body, where in [(top, "the top-level object"), (nested, "`messages[0]`")]:
        r = httpx.post(gateway.url + "/v1/chat/completions", content=body, headers=headers, timeout=10)
        assert r.status_code == 400
        error = r.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert f"twice in {where}" in error["message"], error
