"""deploy/k8s as a cluster would see it: `kubectl kustomize` renders an overlay, and a pod's
volumes are laid out in a temporary directory the way the kubelet lays them out, so the
project's own loaders can read the config through the pod's mounts.

Only what the checks need is emulated: ConfigMap and Secret volumes (files behind
`..data/` symlinks, with the volume's mode), emptyDir and persistent volumes (empty
directories), the init containers' file copies, and env values from literals, Secrets,
ConfigMaps and the pod's name.
"""

from __future__ import annotations

import base64
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
WORKLOADS = ("StatefulSet", "Deployment")
# Programs an init container may run for the emulation to repeat it here (with its paths
# moved into the pod's directory): copying a file is all the manifests' init containers do.
EMULATED_PROGRAMS = ("install", "cp")


def image_env(containerfile: Path) -> dict[str, str]:
    """The ENV of the image's last stage: a pod's processes inherit it, under the pod's own
    env (an image that set GATEWAYD_AUDIT_DIR would move the chains whatever the TOML says).
    Without a Containerfile, none."""
    if not containerfile.exists():
        return {}
    lines = containerfile.read_text().replace("\\\n", " ").splitlines()
    last = max(i for i, line in enumerate(lines) if line.lstrip().upper().startswith("FROM "))
    env: dict[str, str] = {}
    for line in lines[last:]:
        if line.lstrip().upper().startswith("ENV "):
            words = shlex.split(line.strip()[4:])
            if "=" in words[0]:
                env.update(word.split("=", 1) for word in words)
            else:  # the old `ENV KEY value` form
                env[words[0]] = " ".join(words[1:])
    return env


class RenderError(Exception):
    """`kubectl kustomize` refused the overlay; the message is its last line."""


def render(overlay: Path) -> list[dict]:
    """The overlay's objects, as `kubectl apply -k` would send them."""
    if not Path(KUBECTL).exists():
        raise RenderError("kubectl is missing: `make system-deps` installs Debian's kubernetes-client")
    done = subprocess.run([KUBECTL, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip() and "Warning:" not in line]
        raise RenderError(f"{overlay}: {lines[-1] if lines else f'kubectl exited {done.returncode}'}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


class Objects:
    """The rendered objects by kind and name."""

    def __init__(self, docs: list[dict]):
        self.docs = docs
        self._by = {(d["kind"], d["metadata"]["name"]): d for d in docs}

    def get(self, kind: str, name: str) -> dict | None:
        return self._by.get((kind, name))

    def of_kind(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d["kind"] == kind]

    def workloads(self) -> Iterator[dict]:
        return (d for d in self.docs if d["kind"] in WORKLOADS)

    def data(self, kind: str, name: str) -> dict[str, bytes] | None:
        """A ConfigMap's or Secret's keys and values (Secrets' base64 decoded)."""
        obj = self.get(kind, name)
        if obj is None:
            return None
        out = {k: v.encode() for k, v in (obj.get("stringData") or {}).items()}
        for key, value in (obj.get("data") or {}).items():
            out[key] = base64.b64decode(value) if kind == "Secret" else value.encode()
        for key, value in (obj.get("binaryData") or {}).items():
            out[key] = base64.b64decode(value)
        return out


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def pod_name(workload: dict) -> str:
    """The name the first pod gets (a StatefulSet's is stable: `<name>-0`)."""
    return f"{workload['metadata']['name']}-0"


def label(workload: dict) -> str:
    return f"{workload['kind']}/{workload['metadata']['name']}"


@dataclass
class Mount:
    path: str  # inside the container
    host: Path  # where it is laid out here
    volume: dict
    read_only: bool
    persistent: bool  # a volumeClaimTemplate's or a claim's: survives the pod


class PodFiles:
    """One pod's volumes, laid out under `root`; `mounts(container)` maps a container's paths,
    `env(container)` is its environment over the image's."""

    def __init__(self, objects: Objects, workload: dict, root: Path, image_env: dict[str, str]):
        self.objects, self.workload, self.root, self.image_env = objects, workload, root, image_env
        self.problems: list[str] = []
        self._env: dict[str, dict[str, str]] = {}
        self.volumes: dict[str, dict] = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
        for template in workload["spec"].get("volumeClaimTemplates", []):
            self.volumes[template["metadata"]["name"]] = {"name": template["metadata"]["name"], "claimTemplate": True}
        for name, volume in self.volumes.items():
            self._lay_out(name, volume, root / "volumes" / name)

    def _lay_out(self, name: str, volume: dict, where: Path) -> None:
        where.mkdir(parents=True)
        source = volume.get("configMap") or volume.get("secret")
        if source is None:
            return
        kind = "ConfigMap" if "configMap" in volume else "Secret"
        ref = source.get("name") or source.get("secretName")
        data = self.objects.data(kind, ref)
        if data is None:
            if not source.get("optional"):
                self.problems.append(f"{label(self.workload)}: volume {name}: {kind} {ref} is not in the render")
            return
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        mode = source.get("defaultMode", 0o644)
        stamp = where / "..2026_01_01_00_00_00.000000000"  # the kubelet's atomic-writer layout
        stamp.mkdir()
        for item in items:
            if item["key"] not in data:
                self.problems.append(f"{label(self.workload)}: volume {name}: {kind} {ref} has no key {item['key']}")
                continue
            target = stamp / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data[item["key"]])
            target.chmod(item.get("mode", mode))
        (where / "..data").symlink_to(stamp.name)
        for item in items:
            top = PurePosixPath(item["path"]).parts[0]
            if not (where / top).exists():
                (where / top).symlink_to(f"..data/{top}")

    def mounts(self, container: dict) -> list[Mount]:
        out = []
        for m in container.get("volumeMounts", []):
            volume = self.volumes.get(m["name"])
            if volume is None:
                self.problems.append(f"{label(self.workload)}: container {container['name']}: no volume {m['name']}")
                continue
            host = self.root / "volumes" / m["name"] / m.get("subPath", "")
            persistent = bool(volume.get("claimTemplate") or volume.get("persistentVolumeClaim"))
            out.append(Mount(m["mountPath"], host, volume, bool(m.get("readOnly")), persistent))
        return out

    def env(self, container: dict) -> dict[str, str]:
        """The container's environment, every reference resolved (an unresolvable one is a problem)."""
        if container["name"] not in self._env:
            self._env[container["name"]] = self._resolve_env(container)
        return self._env[container["name"]]

    def _resolve_env(self, container: dict) -> dict[str, str]:
        out = dict(self.image_env)
        where = f"{label(self.workload)}: container {container['name']}: env"
        for var in container.get("env", []):
            if "value" in var:
                out[var["name"]] = str(var["value"])
                continue
            source = var.get("valueFrom", {})
            if "fieldRef" in source:
                if source["fieldRef"]["fieldPath"] == "metadata.name":
                    out[var["name"]] = pod_name(self.workload)
                continue
            for kind, key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                if key not in source:
                    continue
                ref = source[key]
                data = self.objects.data(kind, ref["name"])
                if data is not None and ref["key"] in data:
                    out[var["name"]] = data[ref["key"]].decode()
                elif not ref.get("optional"):
                    self.problems.append(
                        f"{where} {var['name']}: {kind} {ref['name']} key {ref['key']} is not in the render"
                    )
        return out

    def run_init(self, container: dict) -> None:
        """Repeats an init container's copy here, its paths moved into the pod's volumes."""
        argv = [*container.get("command", []), *container.get("args", [])]
        where = f"{label(self.workload)}: init container {container['name']}"
        if not argv or argv[0] not in EMULATED_PROGRAMS:
            self.problems.append(f"{where}: cannot emulate {argv[:1]} (only {', '.join(EMULATED_PROGRAMS)})")
            return
        mounts = self.mounts(container)
        moved = [str(host_path(mounts, a) or a) if a.startswith("/") else a for a in argv]
        done = subprocess.run(moved, capture_output=True, text=True)
        if done.returncode != 0:
            self.problems.append(f"{where}: {' '.join(argv)} failed: {done.stderr.strip()}")


def mount_of(mounts: list[Mount], path: str) -> Mount | None:
    """The mount a container path is on (the deepest one), or None: the image's read-only root."""
    best = None
    for m in mounts:
        if path == m.path or path.startswith(m.path.rstrip("/") + "/"):
            if best is None or len(m.path) > len(best.path):
                best = m
    return best


def host_path(mounts: list[Mount], path: str) -> Path | None:
    m = mount_of(mounts, path)
    if m is None:
        return None
    rest = os.path.relpath(path, m.path)
    return m.host if rest == "." else m.host / rest
