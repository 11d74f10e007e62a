"""`[tracing]` in the server TOML: what turns tracing on (the field or the standard OTLP
variables), the collector URL the exporter gets, and one-line errors naming the field."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gatewayd import config
from gatewayd.server import tracing

BASE = '[providers.a]\nkind = "openai"\nbase_url = "http://127.0.0.1:1/v1"\n'


def load(tmp_path, extra: str = "", environ: dict | None = None) -> config.Settings:
    path = tmp_path / "gatewayd.toml"
    path.write_text(BASE + extra)
    return config.load(path, environ or {})


def test_tracing_is_off_unless_an_endpoint_is_configured(tmp_path):
    settings = load(tmp_path)
    assert tracing.configured_by(settings, {}) is None
    assert tracing.start(settings, "r1") is None  # nothing imported, nothing started
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert tracing.configured_by(settings, env) == "OTEL_EXPORTER_OTLP_ENDPOINT"
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}
    assert tracing.configured_by(settings, env) == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    on = load(tmp_path, '[tracing]\nendpoint = "http://collector:4318"\nsample_ratio = 0.25\n')
    assert tracing.configured_by(on, {}) == "tracing.endpoint"
    assert on.tracing.sample_ratio == 0.25
    assert tracing.configured_by(on, {"OTEL_SDK_DISABLED": "true"}) is None  # the SDK's own off switch


OFF = """
import sys
from gatewayd import config
from gatewayd.server import app, tracing
assert tracing.start(config.load(sys.argv[1], {}), "r1") is None
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
assert not loaded, loaded
"""


def test_off_the_sdk_is_not_even_imported(tmp_path):
    """The app module and an untraced start leave OpenTelemetry out of the process."""
    path = tmp_path / "gatewayd.toml"
    path.write_text(BASE)
    done = subprocess.run([sys.executable, "-c", OFF, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_endpoint_can_come_from_gatewayd_variables(tmp_path):
    settings = load(
        tmp_path, environ={"GATEWAYD_TRACING_ENDPOINT": "http://c:4318", "GATEWAYD_TRACING_SAMPLE_RATIO": "0.5"}
    )
    assert settings.tracing.endpoint == "http://c:4318" and settings.tracing.sample_ratio == 0.5


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("http://collector:4318", "http://collector:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        ("https://otlp.example/api/v2/traces", "https://otlp.example/api/v2/traces"),
    ],
)
def test_a_bare_collector_url_gets_the_traces_path(endpoint, url):
    assert tracing.traces_url(endpoint) == url


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ('endpoint = "collector:4318"', "tracing.endpoint: must start with http:// or https:// (OTLP/HTTP)"),
        ("sample_ratio = 1.5", "tracing.sample_ratio: must be between 0 and 1"),
        ('service_name = ""', "tracing.service_name: must not be empty"),
        ('protocol = "grpc"', "Object contains unknown field `protocol` - at `$.tracing`"),
    ],
)
def test_bad_tracing_config_is_one_line_naming_the_field(tmp_path, bad, says):
    with pytest.raises(config.ConfigError) as info:
        load(tmp_path, f"[tracing]\n{bad}\n")
    assert says in str(info.value) and "\n" not in str(info.value), str(info.value)
