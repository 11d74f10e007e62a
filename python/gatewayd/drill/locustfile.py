"""Locust traffic for rollback drills (`gatewayd drill`, or `locust -f` on its own).

Each user sends chat completions: half of them deterministic (temperature 0, one of a few
prompts, so the cache serves them), half for a random end user (so a canary splits them).
Every response's shape is checked: a 200 must be a chat completion (id, choices with a
message, usage), anything else an error in the OpenAI shape; anything else counts as
malformed and fails the request. Each request's versions, position, cache state and answer
id are appended to a CSV, flushed every second, for the drill to read.

    locust -f loadtests/locustfile.py --host http://127.0.0.1:8080 --headless -u 50 -r 50 -t 60s

Environment: GATEWAYD_KEY (default gw-demo-key), GATEWAYD_MODEL (default mock-gpt),
GATEWAYD_VERSIONS_CSV (default versions.csv).
"""

from __future__ import annotations

import csv
import json
import os
import random
import time

import gevent
from locust import FastHttpUser, constant, events, task

KEY = os.environ.get("GATEWAYD_KEY", "gw-demo-key")
MODEL = os.environ.get("GATEWAYD_MODEL", "mock-gpt")
VERSIONS_CSV = os.environ.get("GATEWAYD_VERSIONS_CSV", "versions.csv")
PROMPTS = [f"drill question {n}" for n in range(16)]
COLUMNS = [
    "started", "ended", "status", "policy_version", "routing_version", "config_version",
    "position", "cache", "answer_id", "malformed",
]  # fmt: skip

_out: dict = {}


class GatewayUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def chat(self) -> None:
        if random.random() < 0.5:
            body = {"model": MODEL, "temperature": 0, "messages": [{"role": "user", "content": random.choice(PROMPTS)}]}
        else:
            body = {
                "model": MODEL,
                "user": f"user-{random.randrange(1_000_000)}",
                "messages": [{"role": "user", "content": "drill traffic"}],
            }
        started = time.time()
        with self.client.post(
            "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"}, catch_response=True
        ) as response:
            ended = time.time()
            headers = response.headers or {}
            problem = malformed(response.status_code, response.content or b"")
            answer_id = ""
            if not problem and response.status_code == 200:
                answer_id = json.loads(response.content)["id"]
            _write(
                [
                    f"{started:.6f}", f"{ended:.6f}", response.status_code,
                    headers.get("x-gatewayd-policy-version", ""), headers.get("x-gatewayd-routing-version", ""),
                    headers.get("x-gatewayd-config-version", ""), headers.get("x-gatewayd-position", ""),
                    headers.get("x-gatewayd-cache", ""), answer_id, problem,
                ]
            )  # fmt: skip
            if problem:
                response.failure(problem)
            elif response.status_code != 200:
                response.failure(f"status {response.status_code}")


def malformed(status: int, body: bytes) -> str:
    """Why a response is not what the API promises, or "" when it is."""
    try:
        doc = json.loads(body)
    except ValueError:
        return f"status {status}: not JSON"
    if status == 200:
        try:
            ok = (
                isinstance(doc["id"], str)
                and isinstance(doc["choices"][0]["message"]["content"], str)
                and isinstance(doc["usage"]["total_tokens"], int)
            )
        except (KeyError, IndexError, TypeError):
            ok = False
        return "" if ok else "200 that is not a chat completion"
    error = doc.get("error") if isinstance(doc, dict) else None
    return (
        "" if isinstance(error, dict) and isinstance(error.get("message"), str) else f"status {status}: no error object"
    )


def _write(row: list) -> None:
    if "writer" not in _out:
        _out["file"] = open(VERSIONS_CSV, "w", newline="")  # noqa: SIM115 (closed when locust quits)
        _out["writer"] = csv.writer(_out["file"])
        _out["writer"].writerow(COLUMNS)
        gevent.spawn(_flush_every_second)
    _out["writer"].writerow(row)


def _flush_every_second() -> None:
    while "file" in _out:
        _out["file"].flush()
        gevent.sleep(1.0)


@events.quitting.add_listener
def _close(environment, **_kwargs) -> None:
    if "file" in _out:
        _out.pop("file").close()
