"""What a rendered deploy/k8s overlay must get right, one line per problem found.

The gateway's and the admin API's config are read the way the pods read them: the TOML
through the ConfigMap's mount with `gatewayd.config.load` (env overrides from the pod's
env, Secrets resolved), the bootstrap documents through their mount with
`gatewayd.control.documents`, the signing key where the init container put it with the
audit writer's own `Signer.load`.
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from urllib.parse import urlsplit

from gatewayd import config
from gatewayd.audit.keys import Signer, load_keyring
from gatewayd.control import documents
from gatewayd.errors import GatewaydError
from support.k8s_render import Mount, Objects, PodFiles, host_path, label, mount_of, pod_spec

GATEWAY, ADMIN = ("StatefulSet", "gatewayd"), ("Deployment", "gatewayd-admin")
REQUIRED = [GATEWAY, ADMIN, ("Service", "gatewayd"), ("Service", "gatewayd-admin")]
REQUIRED += [("PodDisruptionBudget", "gatewayd"), ("HorizontalPodAutoscaler", "gatewayd")]
# granian's workers_kill_timeout in gatewayd.cli.serve: how long SIGTERM waits for requests in flight.
DRAIN_S = 10


def problems(docs: list[dict], scratch: Path, image_env: dict[str, str]) -> list[str]:
    """Every problem of the render; `scratch` is an empty directory for the pods' files,
    `image_env` the ENV of the image the pods run."""
    objects = Objects(docs)
    out = [f"{kind} {name}: missing" for kind, name in REQUIRED if objects.get(kind, name) is None]
    for workload in objects.workloads():
        out += _pod_problems(workload)
        out += _reference_problems(objects, workload)
    out += _service_problems(objects)
    gateway, admin = objects.get(*GATEWAY), objects.get(*ADMIN)
    if gateway is not None:
        out += _scaling_problems(objects, gateway)
        out += _gateway_problems(PodFiles(objects, gateway, scratch / "gateway", image_env))
    if admin is not None:
        out += _admin_problems(PodFiles(objects, admin, scratch / "admin", image_env))
    return out


def _containers(workload: dict) -> list[dict]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def _pod_problems(workload: dict) -> list[str]:
    """Non-root, read-only, no privilege, seccomp, requests and limits: for every container."""
    spec, where = pod_spec(workload), label(workload)
    pod_sc = spec.get("securityContext", {})
    out = []
    for c in _containers(workload):
        sc, at = c.get("securityContext", {}), f"{where}: container {c['name']}"
        if not (sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) and sc.get("runAsUser", pod_sc.get("runAsUser", 1))):
            out.append(f"{at}: runAsNonRoot is not set (or runAsUser is 0)")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
        if seccomp.get("type") != "RuntimeDefault":
            out.append(f"{at}: seccompProfile is not RuntimeDefault")
        if sc.get("readOnlyRootFilesystem") is not True:
            out.append(f"{at}: readOnlyRootFilesystem is not true")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{at}: allowPrivilegeEscalation is not false")
        if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
            out.append(f"{at}: capabilities do not drop ALL")
        resources = c.get("resources", {})
        for kind in ("requests", "limits"):
            missing = [r for r in ("cpu", "memory") if r not in resources.get(kind, {})]
            if missing:
                out.append(f"{at}: no {kind} for {', '.join(missing)}")
    return out


def _reference_problems(objects: Objects, workload: dict) -> list[str]:
    """Every claim the pod names is in the render (PodFiles checks ConfigMaps and Secrets)."""
    out = []
    for volume in pod_spec(workload).get("volumes", []):
        claim = volume.get("persistentVolumeClaim")
        if claim and objects.get("PersistentVolumeClaim", claim["claimName"]) is None:
            out.append(f"{label(workload)}: volume {volume['name']}: claim {claim['claimName']} is not in the render")
    return out


def _pods_selected(objects: Objects, selector: dict) -> list[dict]:
    return [
        w
        for w in objects.workloads()
        if selector and all(w["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in selector.items())
    ]


def _port(container: dict, port: int | str) -> int | None:
    """A probe's or Service's port, by name or number, as the container declares it."""
    for p in container.get("ports", []):
        if port in (p.get("name"), p["containerPort"]):
            return p["containerPort"]
    return None


def _service_problems(objects: Objects) -> list[str]:
    out = []
    for svc in objects.of_kind("Service"):
        at = f"Service/{svc['metadata']['name']}"
        pods = _pods_selected(objects, svc["spec"].get("selector", {}))
        if not pods:
            out.append(f"{at}: its selector matches no pod template of the render")
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for w in pods:
                if not any(_port(c, target) for c in pod_spec(w)["containers"]):
                    out.append(f"{at}: targetPort {target} is no container port of {label(w)}")
    return out


def _scaling_problems(objects: Objects, gateway: dict) -> list[str]:
    out = []
    sts = gateway["spec"]
    headless = objects.get("Service", sts.get("serviceName", ""))
    if headless is None or headless["spec"].get("clusterIP") != "None":
        out.append(f"{label(gateway)}: serviceName {sts.get('serviceName')!r} is no headless Service of the render")
    if "replicas" in sts:
        out.append(f"{label(gateway)}: sets replicas, which every apply would reset under the autoscaler")
    hpa = objects.get("HorizontalPodAutoscaler", "gatewayd")
    if hpa is not None:
        target = hpa["spec"]["scaleTargetRef"]
        if hpa["apiVersion"] != "autoscaling/v2" or (target["kind"], target["name"]) != GATEWAY:
            out.append(
                f"HorizontalPodAutoscaler/gatewayd: targets {target['kind']}/{target['name']}, not {label(gateway)}"
            )
        cpu = [m for m in hpa["spec"].get("metrics", []) if m.get("resource", {}).get("name") == "cpu"]
        if not cpu:
            out.append("HorizontalPodAutoscaler/gatewayd: does not scale on cpu")
    pdb = objects.get("PodDisruptionBudget", "gatewayd")
    if pdb is not None:
        if gateway not in _pods_selected(objects, pdb["spec"]["selector"].get("matchLabels", {})):
            out.append(f"PodDisruptionBudget/gatewayd: its selector does not match {label(gateway)}'s pods")
        least = hpa["spec"].get("minReplicas", 1) if hpa else 1
        if pdb["spec"].get("maxUnavailable", 0) in (0, "0%") and pdb["spec"].get("minAvailable", least) >= least:
            out.append(
                "PodDisruptionBudget/gatewayd: allows no eviction at the autoscaler's minimum: drains would hang"
            )
    return out


def _probe_problems(workload: dict, container: dict, server_port: int, paths: dict[str, str]) -> list[str]:
    out, at = [], f"{label(workload)}: container {container['name']}"
    for probe, path in paths.items():
        got = container.get(probe, {}).get("httpGet")
        if got is None:
            out.append(f"{at}: no {probe} (httpGet {path})")
            continue
        if got["path"] != path:
            out.append(f"{at}: {probe} asks {got['path']}, not {path}")
        if _port(container, got["port"]) != server_port:
            out.append(f"{at}: {probe} port {got['port']} is not the port the server listens on ({server_port})")
    return out


def _load_settings(files: PodFiles, container: dict, mounts: list[Mount]) -> config.Settings | None:
    """The TOML the container's process reads (GATEWAYD_CONFIG or --config), through its mount."""
    env = files.env(container)
    argv = [*container.get("command", []), *container.get("args", [])]
    path = argv[argv.index("--config") + 1] if "--config" in argv else env.get("GATEWAYD_CONFIG")
    at = f"{label(files.workload)}: container {container['name']}"
    if not path:
        files.problems.append(f"{at}: neither GATEWAYD_CONFIG nor --config names the config file")
        return None
    on_disk = host_path(mounts, path)
    if on_disk is None:
        files.problems.append(f"{at}: the config file {path} is on no volume mount")
        return None
    try:
        return config.load(on_disk, environ=env)
    except config.ConfigError as exc:
        files.problems.append(f"{at}: {path}: {str(exc).split(': ', 1)[1]}")
        return None


def _mounted_file(files: PodFiles, mounts: list[Mount], at: str, what: str, path: str) -> Path | None:
    if not path.startswith("/"):
        files.problems.append(f"{at}: {what} {path!r}: not an absolute path")
        return None
    on_disk = host_path(mounts, path)
    if on_disk is None or not on_disk.exists():
        files.problems.append(f"{at}: {what} {path}: no such file in the container's mounts")
        return None
    return on_disk


def _writable_problems(at: str, mounts: list[Mount], settings: config.Settings, persistent: bool) -> list[str]:
    out = []
    for what, path in (("audit.dir", settings.audit.dir), ("control.dir", settings.control.dir), ("tmp", "/tmp")):
        m = mount_of(mounts, path)
        if m is None or m.read_only:
            out.append(f"{at}: {what} {path} is not on a writable volume (the root filesystem is read-only)")
        elif persistent and what != "tmp" and not m.persistent:
            out.append(f"{at}: {what} {path} is not on the pod's persistent volume: it would not survive a restart")
    return out


def _audit_key_problems(files: PodFiles, mounts: list[Mount], at: str, s: config.Settings, signs: bool) -> list[str]:
    """The signing key loads as the writer loads it (the gateway), and the keyring holds its
    verifier key (the admin API reads only the keyring, to check checkpoints)."""
    if signs and not s.audit.signing_key:
        return [f"{at}: audit.signing_key is empty: the chains would have no signed checkpoints"]
    ring = _mounted_file(files, mounts, at, "audit.keyring", s.audit.keyring) if s.audit.keyring else None
    key = _mounted_file(files, mounts, at, "audit.signing_key", s.audit.signing_key) if signs else None
    try:
        verifiers = load_keyring(ring) if ring else []
        if key is not None and Signer.load(key).verifier not in verifiers:
            return [f"{at}: audit.keyring does not hold the signing key's verifier key"]
    except GatewaydError as exc:  # named by the container's path, not the emulation's
        said = str(exc).replace(str(key), s.audit.signing_key).replace(str(ring), s.audit.keyring)
        return [f"{at}: {said}"]
    return []


def _in_cluster_url_problems(objects: Objects, at: str, what: str, url: str) -> list[str]:
    """A URL naming a Service of the render must use one of its ports."""
    parts = urlsplit(url.replace("redis+sentinel://", "redis://", 1))
    svc = objects.get("Service", (parts.hostname or "").split(".")[0])
    if svc is None:
        return []
    port = parts.port or {"http": 80, "https": 443, "redis": 6379, "rediss": 6379}.get(parts.scheme)
    if port not in [p["port"] for p in svc["spec"]["ports"]]:
        return [f"{at}: {what} {url}: Service {svc['metadata']['name']} has no port {port}"]
    return []


def _common_problems(
    objects: Objects, files: PodFiles, container: dict, mounts: list[Mount], s: config.Settings, signs: bool
) -> list[str]:
    at = f"{label(files.workload)}: container {container['name']}"
    out = []
    if not s.control.redis_url:
        out.append(f"{at}: no control.redis_url: every pod would keep a store of its own")
    out += _in_cluster_url_problems(objects, at, "control.redis_url", s.control.redis_url)
    for name, provider in s.providers.items():
        out += _in_cluster_url_problems(objects, at, f"providers.{name}.base_url", provider.base_url)
    out += _audit_key_problems(files, mounts, at, s, signs)
    return out


def _gateway_problems(files: PodFiles) -> list[str]:
    objects, gateway = files.objects, files.workload
    for init in pod_spec(gateway).get("initContainers", []):
        files.run_init(init)
    container = next((c for c in pod_spec(gateway)["containers"] if c["name"] == "gatewayd"), None)
    if container is None:
        return [*files.problems, f"{label(gateway)}: no container named gatewayd"]
    mounts = files.mounts(container)
    settings = _load_settings(files, container, mounts)
    if settings is None:
        return files.problems
    at = f"{label(gateway)}: container gatewayd"
    argv = [*container.get("command", []), *container.get("args", [])]
    if argv[:1] != ["gatewayd"] or argv[-1:] != ["serve"]:
        files.problems.append(f"{at}: does not run `gatewayd serve`: {shlex.join(argv)}")
    s = settings.server
    out = _probe_problems(gateway, container, s.port, {"readinessProbe": "/readyz", "livenessProbe": "/healthz"})
    if "startupProbe" in container:
        out += _probe_problems(gateway, container, s.port, {"startupProbe": "/healthz"})
    if s.host not in ("0.0.0.0", "::"):
        out.append(f"{at}: server.host {s.host}: the kubelet's probes and the Services could not reach it")
    if s.admin_port:
        out.append(f"{at}: server.admin_port is set: the admin API is Deployment/gatewayd-admin, not a child of serve")
    if files.env(container).get("GATEWAYD_SERVER_REPLICA_PREFIX") != f"{gateway['metadata']['name']}-0":
        out.append(f"{at}: GATEWAYD_SERVER_REPLICA_PREFIX is not the pod's name: chains would not follow the pod")
    cpu = str(container.get("resources", {}).get("limits", {}).get("cpu", "1"))
    if s.workers > math.ceil(float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)):
        out.append(f"{at}: server.workers {s.workers} exceeds the cpu limit {cpu}")
    out += _drain_problems(gateway, container)
    out += _writable_problems(at, mounts, settings, persistent=True)
    out += _common_problems(objects, files, container, mounts, settings, signs=True)
    providers = [(n, p.kind) for n, p in settings.providers.items()]
    for domain in documents.DOMAINS:
        path = getattr(settings.bootstrap, domain)
        doc = _mounted_file(files, mounts, at, f"bootstrap.{domain}", path) if path else None
        if doc is not None:
            try:
                documents.compile_document(domain, documents.read_file(doc), Path(path).name, providers)
            except GatewaydError as exc:
                out.append(f"{at}: bootstrap.{domain}: {exc}")
    return files.problems + out


def _drain_problems(gateway: dict, container: dict) -> list[str]:
    at = f"{label(gateway)}: container {container['name']}"
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    if command[:1] != ["sleep"] or len(command) != 2:
        return [f"{at}: no preStop sleep: the pod could get SIGTERM while endpoints still send it requests"]
    grace = pod_spec(gateway).get("terminationGracePeriodSeconds", 30)
    if grace <= float(command[1]) + DRAIN_S:
        return [f"{at}: terminationGracePeriodSeconds {grace} leaves no time to drain after preStop {command[1]} s"]
    return []


def _admin_problems(files: PodFiles) -> list[str]:
    objects, admin = files.objects, files.workload
    container = pod_spec(admin)["containers"][0]
    mounts = files.mounts(container)
    settings = _load_settings(files, container, mounts)
    if settings is None:
        return files.problems
    at = f"{label(admin)}: container {container['name']}"
    argv = [*container.get("command", []), *container.get("args", [])]
    out = []
    if argv[:2] != ["gatewayd", "admin"] or "--port" not in argv:
        out.append(f"{at}: does not run `gatewayd admin --port N`: {shlex.join(argv)}")
        return files.problems + out
    port = int(argv[argv.index("--port") + 1])
    out += _probe_problems(admin, container, port, {"readinessProbe": "/healthz", "livenessProbe": "/healthz"})
    if not settings.admin_tokens:
        out.append(f"{at}: no admin_tokens: `gatewayd admin` refuses to start")
    out += _writable_problems(at, mounts, settings, persistent=False)
    out += _common_problems(objects, files, container, mounts, settings, signs=False)
    return files.problems + out
