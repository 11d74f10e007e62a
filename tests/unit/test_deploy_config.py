"""deploy/: the config the compose cluster mounts loads, and its bootstrap documents compile
against its providers; compose.yaml names what the image reads (the cluster test runs it)."""

from __future__ import annotations

from pathlib import Path

import yaml

from gatewayd import config
from gatewayd.control import documents

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_the_mounted_config_loads_and_its_documents_compile():
    settings = config.load(DEPLOY / "config" / "gatewayd.toml")
    assert settings.admin_tokens and settings.keys
    providers = [(name, p.kind) for name, p in settings.providers.items()]
    for domain in documents.DOMAINS:
        path = settings.path(getattr(settings.bootstrap, domain))
        documents.compile_document(domain, documents.read_file(path), path.name, providers)


def test_compose_mounts_the_config_where_the_image_reads_it():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    containerfile = (DEPLOY.parent / "Containerfile").read_text()
    assert "GATEWAYD_CONFIG=/etc/gatewayd/gatewayd.toml" in containerfile
    replicas = [s for name, s in compose["services"].items() if name.startswith("gateway-")]
    assert len(replicas) == 3
    prefixes = {s["environment"]["GATEWAYD_SERVER_REPLICA_PREFIX"] for s in replicas}
    assert len(prefixes) == 3  # each replica its own audit chain
    for service in replicas:
        assert service["read_only"] and service["command"] == ["serve"]
        assert any(v.endswith(":/etc/gatewayd:ro") for v in service["volumes"])
        assert any(v.endswith("-data:/var/lib/gatewayd") for v in service["volumes"])
    assert "--appendonly" in compose["services"]["redis"]["command"]
