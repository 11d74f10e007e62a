"""Background traffic for rollback tests: client threads that keep calling gateways and
note, for every response, when the request started and which versions served it."""

from __future__ import annotations

import itertools
import threading
import time

import httpx
import msgspec


class Sample(msgspec.Struct, frozen=True):
    started: float
    ended: float
    url: str
    status: int
    policy_version: int | None
    routing_version: int | None
    request_id: str | None


class Traffic:
    def __init__(self, urls: list[str], key: str, threads: int = 4, body: dict | None = None):
        self.urls = urls
        self.key = key
        self.body = msgspec.json.encode(
            body or {"model": "mock-gpt", "messages": [{"role": "user", "content": "traffic"}]}
        )
        self.samples: list[Sample] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)

    def _run(self, index: int) -> None:
        headers = {"authorization": f"Bearer {self.key}", "content-type": "application/json"}
        urls = itertools.cycle(self.urls[index % len(self.urls) :] + self.urls[: index % len(self.urls)])
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                url = next(urls)
                started = time.time()
                try:
                    r = client.post(url + "/v1/chat/completions", content=self.body, headers=headers)
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.errors.append(f"{url}: {exc!r}")
                    time.sleep(0.05)
                    continue
                sample = Sample(
                    started,
                    time.time(),
                    url,
                    r.status_code,
                    _int(r.headers.get("x-gatewayd-policy-version")),
                    _int(r.headers.get("x-gatewayd-routing-version")),
                    r.headers.get("x-request-id"),
                )
                with self._lock:
                    self.samples.append(sample)

    def since(self, t: float) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if s.started >= t]

    def wait_for(self, count: int, after: float, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while len(self.since(after)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"traffic stalled: {len(self.since(after))} responses, errors: {self.errors[-3:]}")
            time.sleep(0.02)


def _int(value: str | None) -> int | None:
    return int(value) if value is not None else None
