"""deploy/compose.yaml brought up with podman-compose on this machine.

The compose file is used as shipped; an override file (written here) adds only what this
machine needs: host networking, hence a port of its own per service and 127.0.0.1 for the
addresses compose would resolve by service name. nginx gets deploy/nginx.conf with the same
substitution; the gateways get a config dir pointing at the bundled mock provider on the host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from support.containers import PODMAN, REPO, environment, podman
from support.gateway import ADMIN_TOKENS, KEYS, admin_tokens_toml, keys_toml, mock_providers_toml, wait_ready
from support.procs import free_port

REPLICAS = ("gateway-1", "gateway-2", "gateway-3")
ROUTING = """\
routes:
  - {match: "mock-*", provider: mock}
  - {match: "mock-*", provider: mock-anthropic}
models: [mock-gpt, mock-claude]
"""


class ComposeCluster:
    """Redis, three replicas, the admin API and nginx, as deploy/compose.yaml defines them."""

    def __init__(self, root: Path, gateway_image: str, services_image: str, mock_url: str):
        self.root = root
        self.project = f"gwcluster{os.getpid()}"
        self.redis_port, self.admin_port, self.lb_port = free_port(), free_port(), free_port()
        self.ports = {name: free_port() for name in REPLICAS}
        self.lb_url = f"http://127.0.0.1:{self.lb_port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        self.env = {
            **environment(),
            "GATEWAYD_IMAGE": gateway_image,
            "REDIS_IMAGE": services_image,
            "NGINX_IMAGE": services_image,
            "GATEWAYD_CONFIG_DIR": str(self._config(mock_url)),
            "GATEWAYD_NGINX_CONF": str(self._nginx()),
        }
        self.override = root / "compose.override.yaml"
        self.override.write_text(yaml.safe_dump(self._override()))

    def url(self, replica: str) -> str:
        return f"http://127.0.0.1:{self.ports[replica]}"

    def compose(self, *args: str, timeout: float = 300) -> str:
        argv = [str(Path(sys.executable).parent / "podman-compose"), "--podman-args", " ".join(PODMAN[1:])]
        argv += ["-p", self.project, "-f", str(REPO / "deploy" / "compose.yaml"), "-f", str(self.override), *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=self.env)
        if done.returncode != 0:
            raise RuntimeError(f"podman-compose {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
        return done.stdout

    def up(self) -> None:
        self.compose("up", "-d")
        for replica in REPLICAS:
            wait_ready(self.url(replica) + "/readyz", timeout=90)
        wait_ready(self.admin_url + "/healthz", timeout=60)
        wait_ready(self.lb_url + "/readyz", timeout=30)

    def down(self) -> None:
        """Everything of the project, whatever state the test left it in: its containers
        with their anonymous volumes (`rm -v`: the admin's, which compose's `down -v` leaves),
        then compose's own teardown, then any named volume left by the project's label."""
        label = f"label=io.podman.compose.project={self.project}"
        try:
            names = podman("ps", "-aq", "--filter", label, check=False).split()
            if names:
                podman("rm", "-f", "-v", "-t", "1", *names, check=False)
        finally:
            try:
                self.compose("down", "-v", "-t", "1")
            finally:
                vols = podman("volume", "ls", "-q", "--filter", label, check=False).split()
                if vols:
                    podman("volume", "rm", "-f", *vols, check=False)

    def verify_audit(self) -> subprocess.CompletedProcess:
        """What an auditor runs: every replica's chain, copied out of its container's volume
        into one directory, verified by `gatewayd audit verify` against the cluster's store
        (so a replica the store knows of without a chain is a failure too)."""
        trail = self.root / "trail"
        trail.mkdir(exist_ok=True)
        for replica in REPLICAS:
            podman("cp", f"{self.container(replica)}:/var/lib/gatewayd/audit/.", str(trail))
        env = {
            **os.environ,
            "GATEWAYD_CONTROL_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "GATEWAYD_CONTROL_DIR": str(self.root / "auditor"),
        }
        config = str(Path(self.env["GATEWAYD_CONFIG_DIR"]) / "gatewayd.toml")
        argv = [sys.executable, "-m", "gatewayd.cli", "--config", config, "audit", "verify", "--dir", str(trail)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)

    def container(self, service: str) -> str:
        """The container podman-compose made for `service`."""
        out = podman("ps", "-a", "--format", "json", "--filter", f"label=io.podman.compose.project={self.project}")
        for c in json.loads(out or "[]"):
            if c["Labels"].get("com.docker.compose.service") == service:
                return c["Names"][0]
        raise LookupError(f"no container for service {service}")

    def _config(self, mock: str) -> Path:
        conf = self.root / "etc"
        conf.mkdir()
        conf.chmod(0o755)  # pytest's temp dirs are private; the containers' user is not root
        (conf / "policy.yaml").write_text("default: allow\nrules: []\n")
        (conf / "routing.yaml").write_text(ROUTING)
        (conf / "runtime.yaml").write_text("upstream_timeout_s: 10\n")
        keys, tokens = keys_toml(KEYS), admin_tokens_toml(ADMIN_TOKENS)
        providers = mock_providers_toml(mock, "mock-key")
        rest = textwrap.dedent(
            """\
            [control]
            resync_interval_ms = 1000
            [bootstrap]
            policy = "policy.yaml"
            routing = "routing.yaml"
            config = "runtime.yaml"
            """
        )
        (conf / "gatewayd.toml").write_text(f"{keys}\n{tokens}\n{providers}\n{rest}")
        return conf

    def _nginx(self) -> Path:
        text = (REPO / "deploy" / "nginx.conf").read_text()
        for replica, port in self.ports.items():
            text = text.replace(f"server {replica}:8080", f"server 127.0.0.1:{port}")
        text = text.replace("listen 8080;", f"listen 127.0.0.1:{self.lb_port};")
        path = self.root / "nginx.conf"
        path.write_text(text)
        return path

    def _override(self) -> dict:
        redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        shipped = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())["services"]
        services: dict = {name: {"network_mode": "host"} for name in shipped}
        redis_command = shipped["redis"]["command"]
        services["redis"]["command"] = [*redis_command, "--bind", "127.0.0.1", "--port", str(self.redis_port)]
        for replica, port in self.ports.items():
            services[replica]["environment"] = {
                "GATEWAYD_SERVER_PORT": str(port),
                "GATEWAYD_SERVER_HOST": "127.0.0.1",
                "GATEWAYD_CONTROL_REDIS_URL": redis_url,
            }
        # The test, not podman's restart policy, brings a killed replica back: after a change
        # it missed and with the store down, so that it has to start from its own files.
        services["gateway-2"]["restart"] = "no"
        services["admin"]["environment"] = {
            "GATEWAYD_SERVER_ADMIN_PORT": str(self.admin_port),
            "GATEWAYD_SERVER_HOST": "127.0.0.1",
            "GATEWAYD_CONTROL_REDIS_URL": redis_url,
        }
        return {"services": services}
