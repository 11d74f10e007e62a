"""The container image (Containerfile), built and run with real podman: read-only and
non-root, the official OpenAI SDK through it, its health check, SIGTERM draining a stream in
flight, and the audit chain on its volume verifiable afterwards.

The first run on a machine builds the Debian base images and the release wheel (minutes);
later runs reuse them (tests/support/containers.py). `make test-containers` runs this module
and the cluster's (CI too); `make test` leaves them out (marker `containers`).
"""

from __future__ import annotations

import json
import os
import textwrap
import threading
import time
from pathlib import Path

import pytest
from openai import OpenAI

from support import containers
from support.containers import podman, record
from support.gateway import keys_toml, mock_providers_toml
from support.mock import start_mock
from support.procs import free_port, stop_process

pytestmark = [pytest.mark.containers, pytest.mark.timeout(1500)]

KEY = "key-container"
ROUTING = """\
routes:
  - {match: "mock-*", provider: mock}
  - {match: "mock-*", provider: mock-anthropic}
  - {match: "slow-*", provider: slow}
models: [mock-gpt]
"""


def config_dir(root: Path, port: int, mock: str) -> Path:
    """What an operator mounts at /etc/gatewayd: the TOML and its bootstrap documents."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # pytest's temp dirs are private; the container's user is not root
    (root / "policy.yaml").write_text("default: allow\nrules: []\n")
    (root / "routing.yaml").write_text(ROUTING)
    (root / "runtime.yaml").write_text("upstream_timeout_s: 10\n")
    slow = textwrap.dedent(
        f"""\
        [providers.slow]
        kind = "openai"
        base_url = "{mock}/v1"
        api_key = "mock-key"
        headers = {{x-mock-chunk-delay-ms = "250", x-mock-chunks = "16"}}
        [bootstrap]
        policy = "policy.yaml"
        routing = "routing.yaml"
        config = "runtime.yaml"
        """
    )
    server = f"[server]\nport = {port}\nworkers = 2"
    toml = "\n".join((server, keys_toml({"acme": KEY}), mock_providers_toml(mock, "mock-key"), slow))
    (root / "gatewayd.toml").write_text(toml)
    return root


@pytest.fixture(scope="module")
def image():
    started = time.monotonic()
    tag = containers.gateway_image()
    record(image_build_s=round(time.monotonic() - started, 1))
    return tag


@pytest.fixture(scope="module")
def deployment(image, tmp_path_factory):
    """One gateway container on host networking, as an operator would run it (plus the
    harness's podman flags): read-only root, /tmp a tmpfs, the config mounted read-only, the
    state in a named volume; the bundled mock provider runs on the host."""
    mock, mock_proc = start_mock()
    port = free_port()
    conf = config_dir(tmp_path_factory.mktemp("etc"), port, mock)
    name = f"gatewayd-test-{os.getpid()}"
    volume = f"{name}-data"
    run = ["run", "-d", "--name", name, "--network", "host", "--read-only", "--tmpfs", "/tmp"]
    run += ["--stop-timeout", "30", "-v", f"{conf}:/etc/gatewayd:ro", "-v", f"{volume}:/var/lib/gatewayd"]
    started = time.monotonic()
    try:
        podman(*run, image)
        containers.wait_ready(name, f"http://127.0.0.1:{port}/readyz")
        record(start_to_ready_s=round(time.monotonic() - started, 2))
        yield {"name": name, "volume": volume, "url": f"http://127.0.0.1:{port}", "conf": conf}
    finally:
        containers.remove_containers(name)
        containers.remove_volumes(volume)
        stop_process(mock_proc)


def test_image_is_slim_and_runs_as_a_non_root_user(image, deployment):
    inspect = json.loads(podman("image", "inspect", image))[0]
    record(image_size_mb=round(inspect["Size"] / 1e6, 1))
    assert inspect["Config"]["User"] == "10001:10001"
    assert inspect["Config"]["Entrypoint"] == ["gatewayd"]
    name = deployment["name"]
    assert podman("exec", name, "id", "-u").strip() == "10001"
    # Nothing of the build toolchain made it in: no compiler, no cargo, no maturin.
    assert podman("exec", name, "sh", "-c", "command -v cc gcc cargo rustc maturin || true").strip() == ""
    # The default extras: tracing can be turned on in the container's config.
    podman("exec", name, "python3", "-c", "import opentelemetry.exporter.otlp.proto.http.trace_exporter")


def test_root_filesystem_is_read_only_and_the_volume_is_written(deployment):
    name = deployment["name"]
    refused = podman("exec", name, "sh", "-c", "touch /opt/gatewayd/x 2>&1 || echo refused", check=False)
    assert "Read-only file system" in refused
    listed = podman("exec", name, "ls", "/var/lib/gatewayd/audit", "/var/lib/gatewayd/control")
    assert "last-known-good" in listed


def test_the_openai_sdk_gets_answers_through_the_container(deployment):
    client = OpenAI(base_url=deployment["url"] + "/v1", api_key=KEY)
    reply = client.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "in a box"}])
    assert reply.choices[0].message.content == "echo: in a box"
    pieces = client.chat.completions.create(
        model="mock-gpt", messages=[{"role": "user", "content": "streamed"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in pieces if c.choices).strip() != ""


def test_the_health_check_passes(image, deployment):
    inspect = json.loads(podman("image", "inspect", image))[0]
    assert inspect["Healthcheck"]["Test"] == ["CMD", "gatewayd", "healthcheck"]  # podman: top level
    assert podman("healthcheck", "run", deployment["name"]).strip() in ("", "healthy")
    # And it fails when the gateway does not answer: pointed at a port nobody serves.
    elsewhere = ["exec", "-e", f"GATEWAYD_SERVER_PORT={free_port()}", deployment["name"]]
    assert podman(*elsewhere, "sh", "-c", "gatewayd healthcheck 2>&1; echo exit $?").endswith("exit 1\n")


def test_sigterm_drains_a_stream_in_flight_then_exits_0(deployment):
    client = OpenAI(base_url=deployment["url"] + "/v1", api_key=KEY, max_retries=0)
    outcome: dict = {}

    def stream() -> None:
        try:
            raw = client.chat.completions.with_raw_response.create(
                model="slow-gpt", messages=[{"role": "user", "content": "drain me"}], stream=True
            )
            outcome["status"] = raw.status_code
            outcome["chunks"] = [c for c in raw.parse() if c.choices]
        except Exception as exc:  # the assertion below names it
            outcome["error"] = repr(exc)

    reader = threading.Thread(target=stream)
    reader.start()
    time.sleep(1.5)  # 16 chunks 250 ms apart: about 4 s of stream left
    started = time.monotonic()
    podman("stop", "-t", "30", deployment["name"], timeout=60)
    stopped_s = time.monotonic() - started
    reader.join(30)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["status"] == 200
    assert outcome["chunks"][-1].choices[0].finish_reason == "stop"
    assert 1.0 < stopped_s < 25, f"stop took {stopped_s:.1f}s: it did not wait for the stream, or waited it out"
    state = json.loads(podman("inspect", deployment["name"]))[0]["State"]
    assert state["ExitCode"] == 0
    record(sigterm_drain_s=round(stopped_s, 2))


def test_the_audit_chain_on_the_volume_verifies(image, deployment):
    """After the container is gone: the volume holds a chain `gatewayd audit verify` accepts,
    with the drained stream's record in it."""
    mounts = ["-v", f"{deployment['conf']}:/etc/gatewayd:ro", "-v", f"{deployment['volume']}:/var/lib/gatewayd"]
    run = ["run", "--rm", "--network", "host", "--read-only", *mounts, image]
    verified = podman(*run, "audit", "verify")
    assert "intact" in verified
    exported = [json.loads(line) for line in podman(*run, "audit", "export").splitlines() if line.strip()]
    assert any(r.get("model") == "slow-gpt" and r.get("status") == 200 for r in exported), exported[-3:]
