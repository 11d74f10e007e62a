"""Locust traffic for rollback drills: every response's policy/routing/config versions are
tallied per second, so a drill can show when traffic moved off a reverted version.

    locust -f loadtests/locustfile.py --host http://127.0.0.1:8080 --headless -u 50 -r 50 -t 60s

Environment: GATEWAYD_KEY (default gw-demo-key), GATEWAYD_MODEL (default mock-gpt),
GATEWAYD_VERSIONS_CSV (where the per-request versions go; default versions.csv).
"""

from __future__ import annotations

import csv
import os
import time

from locust import FastHttpUser, constant, events, task

KEY = os.environ.get("GATEWAYD_KEY", "gw-demo-key")
MODEL = os.environ.get("GATEWAYD_MODEL", "mock-gpt")
VERSIONS_CSV = os.environ.get("GATEWAYD_VERSIONS_CSV", "versions.csv")

_rows: list[tuple[float, int, str, str, str]] = []


class GatewayUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def chat(self) -> None:
        started = time.time()
        body = {"model": MODEL, "messages": [{"role": "user", "content": "drill traffic"}]}
        with self.client.post(
            "/v1/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {KEY}"},
            catch_response=True,
        ) as response:
            headers = response.headers or {}
            _rows.append(
                (
                    started,
                    response.status_code,
                    headers.get("x-gatewayd-policy-version", ""),
                    headers.get("x-gatewayd-routing-version", ""),
                    headers.get("x-gatewayd-config-version", ""),
                )
            )
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")


@events.quitting.add_listener
def _write_versions(environment, **_kwargs) -> None:
    with open(VERSIONS_CSV, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["started", "status", "policy_version", "routing_version", "config_version"])
        writer.writerows(_rows)
