"""A real gatewayd deployment for tests: config files in a temp dir, `gatewayd serve` as a
subprocess (granian workers and all), and the CLI run as a subprocess too."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

from support.procs import free_port, start_process, stop_process

KEYS = {"acme": "key-acme", "free": "key-free"}
ADMIN_TOKENS = {"viewer": "tok-viewer", "operator": "tok-operator", "admin": "tok-admin"}  # role -> token


def keys_toml(keys: dict[str, str]) -> str:
    """`[[keys]]` tables for tenant -> key (stored as the key's SHA-256, as an operator would)."""
    return "\n".join(
        f'[[keys]]\ntenant = "{t}"\nsha256 = "{hashlib.sha256(k.encode()).hexdigest()}"' for t, k in keys.items()
    )


def admin_tokens_toml(tokens: dict[str, str]) -> str:
    """`[[admin_tokens]]` tables for role -> token, each named ci-<role>."""
    return "\n".join(
        f'[[admin_tokens]]\nname = "ci-{r}"\nrole = "{r}"\nsha256 = "{hashlib.sha256(t.encode()).hexdigest()}"'
        for r, t in tokens.items()
    )


def mock_providers_toml(mock: str, api_key: str) -> str:
    """The bundled mock as two providers: `mock` (OpenAI's API) and `mock-anthropic`."""
    return (
        f'[providers.mock]\nkind = "openai"\nbase_url = "{mock}/v1"\napi_key = "{api_key}"\n'
        f'[providers.mock-anthropic]\nkind = "anthropic"\nbase_url = "{mock}"\napi_key = "{api_key}"'
    )


PROVIDER_KEY = "provider-secret"  # the mock refuses any other key

POLICY = """\
default: allow
rules:
  - id: block-cards
    priority: 100
    when: {prompt: {regex: ['\\b(?:\\d[ -]?){13,16}\\b']}}
    action: deny
    message: "card numbers are not allowed"
  - id: block-secret-word
    when: {prompt: {keywords: [swordfish], case_insensitive: true}}
    action: deny
    status: 403
  - id: redact-emails
    when: {prompt: {regex: ['[\\w.+-]+@[\\w-]+\\.[\\w.-]+']}}
    action: redact
    replacement: "[EMAIL]"
  - id: free-tier-small-model
    when: {tenants: [free]}
    action: route
    upstream: small
"""

# A second policy version: it denies prompts naming `top-secret`.
POLICY_V2 = """\
default: allow
rules:
  - id: v2-blocks-secrets
    when: {prompt: {keywords: [top-secret]}}
    action: deny
"""

ROUTING = """\
routes:
  - {match: "mock-*", provider: mock}
  - {match: "mock-*", provider: mock-anthropic}
  - {match: "dead-*", provider: dead}
  - {match: "slow-*", provider: slow}
  - {match: "ratelimited-*", provider: ratelimited}
  - {match: "fragile-*", provider: fragile}
  - {match: "fragile-*", provider: fragile-anthropic}
  - {match: "unknown-upstream-*", provider: mock}
  - {match: "failover-*", provider: dead, fallbacks: [{provider: ratelimited}, {provider: mock, model: mock-gpt}]}
  - {match: "exhausted-*", provider: dead, fallbacks: [{provider: ratelimited}]}
  - {match: "hanging-*", provider: slow, fallbacks: [{provider: mock, model: mock-gpt}]}
  - {match: "only-claude-*", provider: mock-anthropic}
  - {match: "only-gpt-*", provider: mock}
  - {match: "pinned-claude-*", provider: mock-anthropic, translate: false}
  - {match: "unknown-claude-*", provider: mock-anthropic}
  - {match: "limited-gpt-*", provider: ratelimited}
  - {match: "fragileclaude-*", provider: fragile-anthropic}
  - {match: "fragilegpt-*", provider: fragile}
  - {match: "crossover-*", provider: dead, fallbacks: [{provider: mock-anthropic, model: only-claude-fallback}]}
targets:
  small: {provider: mock, model: mock-small}
models: [mock-gpt, mock-claude]
"""

RUNTIME = """\
upstream_timeout_s: 1.5
cache: {enabled: true, ttl_s: 300, mode: deterministic}
audit: {fsync: interval, fsync_interval_ms: 100}
"""


class Gateway:
    """One gateway with its own store, audit dir and config; `url` is its base URL."""

    def __init__(
        self,
        root: Path,
        mock_port: int,
        fragile_port: int,
        workers: int = 1,
        redis_url: str = "",
        prefix: str = "",
        extra_providers: str = "",
        admin: bool = False,
        interface: str = "asgi",
    ):
        """`redis_url` makes it share a control store with other gateways (one per "host");
        `prefix` names its replicas; `extra_providers` is TOML appended to the config;
        `admin` runs the admin API beside it, with one token per role named ci-<role>;
        `interface` is granian's: asgi or rsgi."""
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_port = free_port() if admin else 0
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        self.audit_dir = root / "audit"
        self.config = root / "gatewayd.toml"
        (root / "policy.yaml").write_text(POLICY)
        (root / "routing.yaml").write_text(ROUTING)
        (root / "runtime.yaml").write_text(RUNTIME)
        keys = keys_toml(KEYS)
        tokens = admin_tokens_toml(ADMIN_TOKENS if admin else {})
        mock = f"http://127.0.0.1:{mock_port}"
        providers = mock_providers_toml(mock, "provider-secret")
        fragile = f"http://127.0.0.1:{fragile_port}"
        self.config.write_text(
            textwrap.dedent(
                f"""\
                [server]
                port = {self.port}
                workers = {workers}
                max_body_bytes = 65536
                replica_prefix = "{prefix}"
                admin_port = {self.admin_port}
                interface = "{interface}"
                [control]
                dir = "control"
                redis_url = "{redis_url}"
                resync_interval_ms = 1000
                [audit]
                dir = "audit"
                {keys}
                {tokens}
                {providers}
                [providers.dead]
                kind = "openai"
                base_url = "http://127.0.0.1:{free_port()}/v1"
                [providers.slow]
                kind = "openai"
                base_url = "{mock}/v1"
                api_key = "provider-secret"
                headers = {{x-mock-latency-ms = "4000"}}
                [providers.ratelimited]
                kind = "openai"
                base_url = "{mock}/v1"
                api_key = "provider-secret"
                headers = {{x-mock-status = "429"}}
                [providers.fragile]
                kind = "openai"
                base_url = "{fragile}/v1"
                api_key = "provider-secret"
                headers = {{x-mock-chunk-delay-ms = "300", x-mock-chunks = "50"}}
                [providers.fragile-anthropic]
                kind = "anthropic"
                base_url = "{fragile}"
                api_key = "provider-secret"
                headers = {{x-mock-chunk-delay-ms = "300", x-mock-chunks = "50"}}
                [bootstrap]
                policy = "policy.yaml"
                routing = "routing.yaml"
                config = "runtime.yaml"
                """
            )
            + extra_providers
        )
        self.proc = None

    def start(self, wrapper: list[str] = ()) -> Gateway:
        """`wrapper` runs the server under another command (e.g. prlimit)."""
        self.proc = start_process([*wrapper, *self.cli_argv("serve")], self.url + "/healthz", timeout=60)
        wait_ready(self.url + "/readyz")
        if self.admin_port:
            wait_ready(self.admin_url + "/healthz")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def cli_argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "gatewayd.cli", "--config", str(self.config), *args]

    def cli(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        done = subprocess.run(self.cli_argv(*args), capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"gatewayd {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def audit_records(self) -> list[dict]:
        """Every record of every chain, via `gatewayd audit export` (the auditor's path)."""
        out = self.cli("audit", "export").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]


def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} never became ready")
        time.sleep(0.05)
