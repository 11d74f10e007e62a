"""Whole responses and streams leave the host the same way: they trust the CA bundle
Python's ssl trusts (SSL_CERT_FILE honoured) and go through HTTP(S)_PROXY (HTTPS through a
CONNECT tunnel) except for NO_PROXY hosts. Each case runs tests/support/egress_probe.py in
a fresh process: the environment is read once per process."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = Path(__file__).parent / "support" / "egress_probe.py"
EGRESS_ENV = ("SSL_CERT_FILE", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
OK = {"status": 200, "body": "{}"}


def probe(*args: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in EGRESS_ENV}
    done = subprocess.run(
        [sys.executable, str(PROBE), *args], capture_output=True, text=True, timeout=60, env={**clean, **env}
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def private_ca(tmp_path_factory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1: its own CA, trusted nowhere by default."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=provider.test",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


def test_an_untrusted_provider_certificate_is_refused(private_ca):
    results = probe("tls", *private_ca)
    assert [r["error"] for r in results["whole"] + results["stream"]] == ["unreachable", "unreachable"]
    assert "self-signed certificate" in results["whole"][0]["message"]


def test_ssl_cert_file_makes_a_private_ca_trusted(private_ca):
    assert probe("tls", *private_ca, SSL_CERT_FILE=private_ca[0]) == {"whole": [OK], "stream": [OK]}


@pytest.mark.parametrize("spelling", ["url", "bare"])
def test_proxies_come_from_the_environment_and_no_proxy_is_honoured(spelling):
    """A proxy given as host:port (no scheme) is read as http://host:port, as curl reads it."""
    seen = probe("proxy", spelling)
    assert seen["results"] == {"whole": [OK, OK], "stream": [OK, OK]}
    assert seen["proxied"] == ["POST http://provider.invalid:9/v1/chat HTTP/1.1"] * 2
    assert seen["direct"] == ["POST /v1/chat HTTP/1.1"] * 2


def test_https_goes_through_a_connect_tunnel_with_the_proxys_credentials(private_ca):
    seen = probe("tunnel", *private_ca, SSL_CERT_FILE=private_ca[0])
    assert seen["results"] == {"whole": [OK], "stream": [OK]}
    authority = f"127.0.0.1:{seen['provider_port']}"
    basic = "Basic " + base64.b64encode(b"gw@corp:s3cret").decode()
    assert seen["connects"] == [{"request": f"CONNECT {authority} HTTP/1.1", "credentials": basic}] * 2
