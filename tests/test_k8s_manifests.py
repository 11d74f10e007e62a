"""deploy/k8s: each overlay rendered by `kubectl kustomize` (Debian's kubernetes-client) and
checked object by object (tests/support/k8s_checks.py): kinds, probes against the port the
TOML makes the server listen on, security context, volumes and mounts, the disruption
budget and autoscaler against the StatefulSet, every Secret and ConfigMap reference, and the
config as `gatewayd serve` reads it through the pod's mounts. The checker is also run on
deliberately broken copies, each of which it must name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from gatewayd.audit.keys import Signer, add_to_keyring
from support.k8s_checks import problems
from support.k8s_render import Objects, RenderError, image_env, render

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
# The pods run the image the Containerfile builds: its ENV is under theirs.
IMAGE_ENV = image_env(ROOT / "Containerfile")
PRODUCTION_FILES = ("secrets.env", "audit.key", "audit.keyring")  # the operator's own, git-ignored


@pytest.fixture
def k8s(tmp_path: Path) -> Path:
    """A copy of deploy/k8s whose production overlay has its secret files, as an operator
    makes them: secrets.env from the example, a key pair from the audit writer's own code."""
    root = tmp_path / "k8s"
    shutil.copytree(K8S, root, ignore=shutil.ignore_patterns(*PRODUCTION_FILES))
    production = root / "overlays" / "production"
    shutil.copy(production / "secrets.env.example", production / "secrets.env")
    signer = Signer.generate("audit.example.com/gateway")
    signer.save(production / "audit.key")
    add_to_keyring(production / "audit.keyring", signer.verifier)
    return root


def checked(overlay: Path, scratch: Path, env: dict[str, str] = IMAGE_ENV) -> tuple[Objects, list[str]]:
    docs = render(overlay)
    scratch.mkdir()
    return Objects(docs), problems(docs, scratch, env)


def test_the_trial_overlay_is_sound_with_its_own_redis_and_mock(k8s, tmp_path):
    objects, found = checked(k8s / "overlays" / "trial", tmp_path / "pods")
    assert found == []
    for kind, name in [
        ("Deployment", "gatewayd-redis"),
        ("Service", "gatewayd-redis"),
        ("Deployment", "gatewayd-mock"),
    ]:
        assert objects.get(kind, name) is not None, (kind, name)
    redis = objects.get("Deployment", "gatewayd-redis")["spec"]["template"]["spec"]["containers"][0]
    assert redis["args"][1:3] == ["--appendonly", "yes"]  # gatewayd warns about a Redis without AOF
    secret = next(o for o in objects.of_kind("Secret"))
    assert objects.data("Secret", secret["metadata"]["name"])["redis-url"] == b"redis://gatewayd-redis:6379/0"


def test_the_production_overlay_is_sound_with_an_external_redis(k8s, tmp_path):
    objects, found = checked(k8s / "overlays" / "production", tmp_path / "pods")
    assert found == []
    assert not [o for o in objects.docs if o["metadata"]["name"].startswith(("gatewayd-redis", "gatewayd-mock"))]
    secret = objects.of_kind("Secret")[0]["metadata"]["name"]
    assert objects.data("Secret", secret)["redis-url"].startswith(b"rediss://:REPLACE_WITH_PASSWORD@redis.example")


def test_production_without_its_secret_files_does_not_render(k8s):
    (k8s / "overlays" / "production" / "secrets.env").unlink()
    with pytest.raises(RenderError, match="secrets.env"):
        render(k8s / "overlays" / "production")


BASE, TRIAL = "base", "overlays/trial"
ENV_ANCHOR = "            - name: GATEWAYD_SERVER_REPLICA_PREFIX"
# (file, text, its replacement, what the checker must say): one mistake each.
BREAKAGES = [
    (
        f"{TRIAL}/gatewayd.toml",
        "port = 8080",
        "port = 9000",
        "readinessProbe port http is not the port the server listens on (9000)",
    ),
    (f"{BASE}/statefulset.yaml", "path: /readyz", "path: /healthz", "readinessProbe asks /healthz, not /readyz"),
    (
        f"{BASE}/statefulset.yaml",
        "{name: config, mountPath: /etc/gatewayd,",
        "{name: config, mountPath: /etc/gw,",
        "the config file /etc/gatewayd/gatewayd.toml is on no volume mount",
    ),
    (
        f"{TRIAL}/gatewayd.toml",
        'routing = "/etc/gatewayd/routing.yaml"',
        'routing = "/etc/gatewayd/routes.yaml"',
        "bootstrap.routing /etc/gatewayd/routes.yaml: no such file",
    ),
    (f"{TRIAL}/routing.yaml", "provider: mock-anthropic", "provider: anthropic", 'unknown provider "anthropic"'),
    (
        f"{TRIAL}/gatewayd.toml",
        'signing_key = "/run/gatewayd/keys/audit.key"',
        'signing_key = "/etc/gatewayd-secrets/audit.key"',
        "cannot open the signing key",
    ),
    (
        f"{BASE}/statefulset.yaml",
        '"-m", "0600"',
        '"-m", "0640"',
        "the signing key is open to group or others (mode 0640)",
    ),
    (  # the pod's env, which wins over the image's and the TOML's
        f"{BASE}/statefulset.yaml",
        ENV_ANCHOR,
        "            - {name: GATEWAYD_AUDIT_DIR, value: /tmp/audit}\n" + ENV_ANCHOR,
        "audit.dir /tmp/audit is not on the pod's persistent volume",
    ),
    (
        f"{BASE}/statefulset.yaml",
        ENV_ANCHOR,
        "            - {name: GATEWAYD_SERVER_HOST, value: 127.0.0.1}\n" + ENV_ANCHOR,
        "server.host 127.0.0.1: the kubelet's probes",
    ),
    (
        f"{TRIAL}/gatewayd.toml",
        '"http://gatewayd-mock:9100/v1"',
        '"http://gatewayd-mock:9200/v1"',
        "Service gatewayd-mock has no port 9200",
    ),
    (
        f"{TRIAL}/kustomization.yaml",
        "redis-url=redis://gatewayd-redis:6379/0",
        "redis_url=redis://gatewayd-redis:6379/0",
        "Secret gatewayd-secrets",
    ),
    (
        f"{BASE}/admin.yaml",
        "readOnlyRootFilesystem: true",
        "readOnlyRootFilesystem: false",
        "container admin: readOnlyRootFilesystem is not true",
    ),
    (
        f"{BASE}/statefulset.yaml",
        'command: ["sleep", "10"]',
        'command: ["sleep", "40"]',
        "terminationGracePeriodSeconds 45 leaves no time to drain",
    ),
    (
        f"{BASE}/disruption.yaml",
        "    name: gatewayd\n  minReplicas",
        "    name: gatewayd-admin\n  minReplicas",
        "targets StatefulSet/gatewayd-admin",
    ),
    (f"{BASE}/disruption.yaml", "maxUnavailable: 1", "maxUnavailable: 0", "allows no eviction"),
    (
        f"{BASE}/admin.yaml",
        '"--port", "8081"',
        '"--port", "8082"',
        "readinessProbe port admin is not the port the server listens on (8082)",
    ),
]


@pytest.mark.parametrize("path,text,replacement,expected", BREAKAGES, ids=[b[3][:48] for b in BREAKAGES])
def test_the_checker_names_each_mistake(k8s, tmp_path, path, text, replacement, expected):
    target = k8s / path
    assert target.read_text().count(text) == 1, f"{path} no longer holds {text!r} once: update the case"
    target.write_text(target.read_text().replace(text, replacement))
    _, found = checked(k8s / TRIAL, tmp_path / "pods")
    assert any(expected in line for line in found), found


def test_the_image_env_is_read_under_the_pods_env(k8s, tmp_path):
    """An image whose ENV moved a path would override the TOML: the check sees it (and a
    pod's own env wins over the image's: the replica prefix stays the pod's name)."""
    env = {**IMAGE_ENV, "GATEWAYD_AUDIT_DIR": "/tmp/audit", "GATEWAYD_SERVER_REPLICA_PREFIX": "image"}
    _, found = checked(k8s / TRIAL, tmp_path / "pods", env)
    assert [line for line in found if "gatewayd:" in line and "audit.dir" in line] == [
        "StatefulSet/gatewayd: container gatewayd: audit.dir /tmp/audit is not on the pod's persistent volume: "
        "it would not survive a restart"
    ]
    assert not [line for line in found if "REPLICA_PREFIX" in line]


# What kustomize 2.0 (in Debian's kubectl 1.20) does not know; newer kubectls know both spellings.
NEWER_FIELDS = {"patches", "envs", "labels", "components", "replacements", "openapi", "buildMetadata"}


def test_the_kustomizations_keep_to_what_debians_kubectl_knows():
    """CI renders with Debian's kubectl (kustomize 2.0), this machine may have a newer one:
    fields and forms 2.0 refuses would pass here and fail there."""
    for file in K8S.rglob("kustomization.yaml"):
        doc = yaml.safe_load(file.read_text())
        assert not NEWER_FIELDS & set(doc), f"{file}: {sorted(NEWER_FIELDS & set(doc))}"
        for generator in doc.get("configMapGenerator", []) + doc.get("secretGenerator", []):
            assert not NEWER_FIELDS & set(generator), (
                f"{file}: {generator['name']}: {sorted(NEWER_FIELDS & set(generator))}"
            )
        dirs = [r for r in doc.get("resources", []) if (file.parent / r).is_dir()]
        assert not dirs, f"{file}: directories under resources (kustomize 2.0 wants them under bases): {dirs}"
