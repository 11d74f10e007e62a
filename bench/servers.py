"""The servers the end-to-end benches drive, each a real process on its own port: the
bundled mock, gatewayd (one interface, N workers) in front of it, the bare granian
pass-through and the do-nothing app (bench/passthrough.py), and LiteLLM's proxy.

`Servers` starts them on demand and stops every one it started, in reverse order.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHIPPED_RUNTIME = REPO / "examples" / "runtime.yaml"
sys.path.insert(0, str(REPO / "tests"))

from support.gateway import KEYS, Gateway, wait_ready  # noqa: E402
from support.procs import ServerProcess, free_port, start_process, stop_process  # noqa: E402

# LiteLLM's proxy lives in a virtualenv of its own, made only when asked (--litellm): it
# pulls in hundreds of packages that gatewayd must not depend on.
LITELLM_VENV = REPO / ".bench-venvs" / "litellm"
LITELLM_SPEC = "litellm[proxy]"


class Target:
    """One server under test: where to send a chat completion, with which key, and the
    process whose tree is pinned and measured."""

    def __init__(self, name: str, url: str, key: str, proc: subprocess.Popen, note: str = ""):
        self.name, self.url, self.key, self.proc, self.note = name, url, key, proc, note

    @property
    def pid(self) -> int:
        return self.proc.pid


class Servers:
    def __init__(self, root: Path | None = None):
        self.root = root or Path(tempfile.mkdtemp(prefix="gwbench-"))
        self._stops: list = []
        self.mock = self._mock()

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        while self._stops:
            self._stops.pop()()

    def _started(self, proc: ServerProcess) -> ServerProcess:
        self._stops.append(lambda: stop_process(proc))
        return proc

    def _mock(self) -> Target:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_process([sys.executable, "-m", "gatewayd.mock", "--port", str(port)], url + "/_mock/health")
        self.mock_port = port
        return Target("mock", url + "/v1/chat/completions", "provider-secret", self._started(proc))

    def gateway(self, policy: str, interface: str = "asgi", workers: int = 1, name: str = "") -> Target:
        """gatewayd in front of the mock under the shipped runtime config and `policy` (JSON
        or YAML text), served through granian's `interface` (`[server] interface`)."""
        name = name or f"gatewayd-{interface}" + (f"-{workers}w" if workers > 1 else "")
        gw = self._configured(name, policy, interface, workers)
        return self._serving(name, gw, gw.cli_argv("serve"))

    def essential(self, policy: str, interface: str = "asgi") -> Target:
        """bench/essential.py's measuring rod (one worker), configured as `gateway` is: only
        the work no forwarded request can skip."""
        gw = self._configured(f"essential-{interface}", policy, interface)
        return self._serving(f"rod-{interface}", gw, [sys.executable, str(HERE / "essential.py"), str(gw.config)])

    def _configured(self, directory: str, policy: str, interface: str, workers: int = 1) -> Gateway:
        """A gateway's config in a directory of its own: the shipped runtime and `policy`."""
        root = self.root / directory
        root.mkdir()
        gw = Gateway(root, self.mock_port, free_port(), workers=workers, interface=interface)
        (root / "policy.yaml").write_text(policy)
        (root / "runtime.yaml").write_text(SHIPPED_RUNTIME.read_text())
        return gw

    def _serving(self, name: str, gw: Gateway, argv: list[str]) -> Target:
        """`gw` started by `argv`, once it is ready; stopped with the rest."""
        gw.proc = start_process(argv, gw.url + "/healthz", timeout=60)
        self._stops.append(gw.stop)
        wait_ready(gw.url + "/readyz")
        return Target(name, gw.url + "/v1/chat/completions", KEYS["acme"], gw.proc)

    def passthrough(self, client: str = "gatewayd", name: str = "passthrough") -> Target:
        """bench/passthrough.py with `client` upstream (`canned`: the do-nothing app)."""
        port = free_port()
        env = {"BENCH_CLIENT": client, "BENCH_UPSTREAM": f"http://127.0.0.1:{self.mock_port}"}
        argv = [sys.executable, str(HERE / "passthrough.py"), str(port)]
        proc = self._started(start_process(argv, f"http://127.0.0.1:{port}/", env=env))
        return Target(name, f"http://127.0.0.1:{port}/v1/chat/completions", "provider-secret", proc)

    def litellm(self, model: str) -> Target:
        """LiteLLM's proxy, one worker, `model` routed to the mock as an OpenAI-compatible
        provider; a master key (it refuses to start without one, and gatewayd checks keys
        too), no database, no callbacks: its bare forwarding path."""
        python = ensure_litellm()
        port = free_port()
        key = "sk-" + secrets.token_hex(32)
        config = self.root / "litellm.yaml"
        config.write_text(
            json.dumps(
                {
                    "model_list": [
                        {
                            "model_name": model,
                            "litellm_params": {
                                "model": f"openai/{model}",
                                "api_base": f"http://127.0.0.1:{self.mock_port}/v1",
                                "api_key": "provider-secret",
                            },
                        }
                    ],
                    "litellm_settings": {"telemetry": False, "set_verbose": False},
                    "general_settings": {"master_key": key, "disable_spend_logs": True},
                }
            )
        )
        argv = [str(python), "-m", "litellm.proxy.proxy_cli", "--config", str(config)]
        argv += ["--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
        # No network at start-up (the model cost map comes from the package), no telemetry.
        env = {
            "LITELLM_LOG": "ERROR",
            "LITELLM_TELEMETRY": "False",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "PYTHONPATH": "",
        }
        proc = self._started(start_process(argv, f"http://127.0.0.1:{port}/health/liveliness", env=env, timeout=180))
        version = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        return Target("litellm", url, key, proc, note=f"litellm {version}")


def ensure_litellm() -> Path:
    """The LiteLLM venv's python, creating the venv and installing LiteLLM's proxy first
    when it is missing (a minute or two, once)."""
    python = LITELLM_VENV / "bin" / "python"
    if not (LITELLM_VENV / ".installed").exists():
        started = time.monotonic()
        print(f"creating {LITELLM_VENV} and installing {LITELLM_SPEC} (once)", flush=True)
        venv.create(LITELLM_VENV, with_pip=True, clear=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-U", "pip"], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", LITELLM_SPEC], check=True)
        (LITELLM_VENV / ".installed").write_text(f"{time.monotonic() - started:.0f}s\n")
    return python


def process_tree(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid, *(int(p) for p in out)]


def cpu_us(pids: list[int]) -> float:
    """User and system CPU of every thread of `pids`, in µs (10 ms ticks)."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total * 10_000.0
