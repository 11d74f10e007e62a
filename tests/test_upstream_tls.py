"""Both upstream transports trust the same roots as Python's ssl: a provider behind a
private CA works for whole responses and streams alike once SSL_CERT_FILE names it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = Path(__file__).parent / "support" / "tls_probe.py"


@pytest.fixture(scope="module")
def private_ca(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: its own CA, trusted nowhere by default."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=provider.test",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def probe(cert: Path, key: Path, ssl_cert_file: Path | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "SSL_CERT_FILE"}
    if ssl_cert_file:
        env["SSL_CERT_FILE"] = str(ssl_cert_file)
    done = subprocess.run(
        [sys.executable, str(PROBE), str(cert), str(key)], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_an_untrusted_provider_certificate_is_refused_by_both_transports(private_ca):
    results = probe(*private_ca, ssl_cert_file=None)
    for name in ("whole", "stream"):
        assert results[name]["error"] == "unreachable", results
    assert "self signed certificate" in results["whole"]["message"]


def test_ssl_cert_file_makes_both_transports_trust_a_private_ca(private_ca):
    results = probe(*private_ca, ssl_cert_file=private_ca[0])
    assert results == {"whole": {"status": 200, "body": "{}"}, "stream": {"status": 200, "body": "{}"}}
