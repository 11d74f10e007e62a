"""Shared fixtures: real processes only (mock provider, gateway, redis-server)."""

from __future__ import annotations

import pytest

from support.gateway import PROVIDER_KEY, Gateway
from support.mock import start_mock
from support.procs import free_port, stop_process


@pytest.fixture(scope="module")
def mock_url():
    """Base URL of a one-worker mock provider, shared by the tests of one module."""
    url, proc = start_mock()
    yield url
    stop_process(proc)


def start_provider_mock(port: int | None = None):
    """The mock demands the configured provider key, so every success through the gateway
    proves it swapped the caller's key for the provider's."""
    return start_mock("--require-key", PROVIDER_KEY, port=port)


@pytest.fixture(scope="module")
def mock_port():
    url, proc = start_provider_mock()
    yield int(url.rsplit(":", 1)[1])
    stop_process(proc)


@pytest.fixture(scope="module")
def fragile_port():
    """A port for a second mock that tests start and kill themselves."""
    return free_port()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, mock_port, fragile_port):
    gw = Gateway(tmp_path_factory.mktemp("gw"), mock_port, fragile_port).start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module", params=["asgi", "rsgi"])
def gateway_each_interface(request, tmp_path_factory, mock_port, fragile_port):
    """The gateway served through each of granian's interfaces in turn: the suites that
    take it (end to end, request framing) run against both."""
    gw = Gateway(tmp_path_factory.mktemp("gw"), mock_port, fragile_port, interface=request.param).start()
    yield gw
    gw.stop()
